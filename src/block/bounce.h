// Bouncing a bio at most once in a whole stack.
//
// A layer calls StabilizeBio with the level it needs. If the bio already
// carries that much (a stable page-cache bio, or one an upper layer bounced),
// nothing happens. Otherwise the payload moves to a private aligned buffer
// that dies with the bio, the bio is marked kStable, and the bytes are added
// to the layer's counter. Writes copy at submission; reads land in the
// buffer and are copied out to the caller's memory at completion. Because the
// bio now says kStable, every layer below sees its need met: one copy, at
// most, for the whole stack.
#pragma once

#include <atomic>
#include <vector>

#include "stablecache/bio.h"

namespace stablecache {

void StabilizeBio(Bio& bio, Stability required, std::atomic<uint64_t>& bytes_bounced);

// Moves the payload into one 4 KiB-aligned private buffer whatever the bio's
// level (the copy StabilizeBio makes), for layers that need each block
// contiguous and aligned. Counts the bytes as bounced and marks it kStable.
void FlattenBio(Bio& bio, std::atomic<uint64_t>& bytes_bounced);

// One pointer per 4 KiB block of the payload, or an empty vector when some
// block straddles two segments or starts off a 32-byte boundary (SIMD
// kernels need both). Then FlattenBio first.
std::vector<std::byte*> BlockPointers(const Bio& bio);
// BlockPointers, after a FlattenBio when the payload does not allow them.
std::vector<std::byte*> ContiguousBlocks(Bio& bio, std::atomic<uint64_t>& bytes_bounced);

}  // namespace stablecache
