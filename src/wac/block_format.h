// The self-describing 4 KiB block wac writes, so the tool can judge what it
// reads back without trusting any layer it tests.
//
//   [0, 8)    magic "SCWAC01\0"
//   [8, 16)   block number the writer meant it for
//   [16, 20)  writer id
//   [20, 24)  reserved, zero
//   [24, 32)  sequence number of this block's content (1, 2, ...)
//   [32, 36)  CRC32C of bytes [0, 32) and [36, 4096)
//   [36, 4096) pseudo-random payload derived from (block, writer, seq)
//
// A block of all zeros is one never written. Anything else that fails the
// CRC is torn: bytes of two contents, or garbage.
//
// Scribbled direct writes (profiles D, E, F): a direct writer keeps
// overwriting its buffer while the write is in flight, alternately with the
// block's content A and a scribble content A' = FillBlock(ScribbleOf(A's
// id)): the same block and sequence, the writer id with kScribbleBit set.
// What such a write may leave is any byte-wise mix of A and A'.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace stablecache::wac {

inline constexpr size_t kBlockSize = 4096;

struct BlockId {
  uint64_t block = 0;
  uint32_t writer = 0;
  uint64_t seq = 0;
  bool operator==(const BlockId&) const = default;
};

// Fills `out` (kBlockSize bytes) with the content for `id`.
void FillBlock(const BlockId& id, std::span<std::byte> out);

enum class BlockState { kZero, kValid, kTorn };
struct ParsedBlock {
  BlockState state = BlockState::kTorn;
  BlockId id;  // meaningful when kValid
};
ParsedBlock ParseBlock(std::span<const std::byte> in);

inline constexpr uint32_t kScribbleBit = 0x80000000u;  // writer ids stay below it
inline BlockId ScribbleOf(const BlockId& id) { return BlockId{id.block, id.writer | kScribbleBit, id.seq}; }

// True when every byte of `got` equals the byte of `a` or of `b` at the
// same offset (so either whole content is a mix too).
bool IsByteMix(std::span<const std::byte> got, std::span<const std::byte> a, std::span<const std::byte> b);

// True when `got` (torn or whole) is a byte-wise mix of some content of
// `block` and its scribble: what a scribbled direct write may leave. The
// candidate is read from the header bytes, which A and A' share except for
// the scribble bit of the writer id.
bool IsScribbleMix(uint64_t block, std::span<const std::byte> got);

}  // namespace stablecache::wac
