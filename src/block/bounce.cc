#include "block/bounce.h"

#include "block/aligned_buffer.h"

#include <cstdlib>
#include <cstring>
#include <memory>

namespace stablecache {

void StabilizeBio(Bio& bio, Stability required, std::atomic<uint64_t>& bytes_bounced) {
  if (bio.op == BioOp::kFlush || bio.stability >= required) return;
  FlattenBio(bio, bytes_bounced);
}

std::vector<std::byte*> BlockPointers(const Bio& bio) {
  std::vector<std::byte*> out;
  for (const auto& s : bio.segments) {
    if (s.len % 4096 != 0 || reinterpret_cast<uintptr_t>(s.data) % 32 != 0) return {};
    for (uint32_t o = 0; o < s.len; o += 4096) out.push_back(s.data + o);
  }
  return out;
}

std::vector<std::byte*> ContiguousBlocks(Bio& bio, std::atomic<uint64_t>& bytes_bounced) {
  std::vector<std::byte*> blocks = BlockPointers(bio);
  if (!blocks.empty()) return blocks;
  FlattenBio(bio, bytes_bounced);
  return BlockPointers(bio);
}

void FlattenBio(Bio& bio, std::atomic<uint64_t>& bytes_bounced) {
  if (bio.op == BioOp::kFlush) return;
  const uint64_t len = bio.Length();
  std::shared_ptr<std::byte> buf = AllocAligned(len);
  std::byte* bytes = buf.get();
  if (bio.op == BioOp::kWrite) {
    bio.CopyTo(bytes);
  } else {
    // Reads: copy out to the caller's segments when the data has arrived.
    std::vector<BioSegment> original = std::move(bio.segments);
    Bio::Completion inner = std::move(bio.on_complete);
    bio.on_complete = [original = std::move(original), inner = std::move(inner), bytes](BioPtr b, Status st) mutable {
      if (st.ok()) {
        const std::byte* src = bytes;
        for (const auto& s : original) {
          std::memcpy(s.data, src, s.len);
          src += s.len;
        }
      }
      b->segments = std::move(original);
      if (inner) inner(std::move(b), std::move(st));
    };
  }
  bio.segments.clear();
  bio.AddSegment(bytes, static_cast<uint32_t>(len));
  bio.keep_alive.push_back(std::move(buf));
  bio.stability = Stability::kStable;
  bytes_bounced.fetch_add(len, std::memory_order_relaxed);
}

}  // namespace stablecache
