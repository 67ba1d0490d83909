#include "wac/block_format.h"

#include <isa-l/crc.h>

#include <algorithm>
#include <cstring>
#include <iterator>

namespace stablecache::wac {

namespace {
constexpr char kMagic[8] = {'S', 'C', 'W', 'A', 'C', '0', '1', '\0'};
constexpr size_t kCrcAt = 32, kPayloadAt = 36;

uint32_t BlockCrc(const std::byte* p) {
  auto* u = reinterpret_cast<unsigned char*>(const_cast<std::byte*>(p));
  uint32_t c = crc32_iscsi(u, kCrcAt, 0xffffffff);
  return crc32_iscsi(u + kPayloadAt, kBlockSize - kPayloadAt, c);
}
}  // namespace

void FillBlock(const BlockId& id, std::span<std::byte> out) {
  std::byte* p = out.data();
  std::memcpy(p, kMagic, 8);
  std::memcpy(p + 8, &id.block, 8);
  std::memcpy(p + 16, &id.writer, 4);
  std::memset(p + 20, 0, 4);
  std::memcpy(p + 24, &id.seq, 8);
  // Distinct for every (block, writer, seq), and cheap: one multiply-add
  // per word, which the compiler vectorizes. The CRC, not the payload,
  // detects tearing.
  const uint64_t seed = (id.block * 0x9e3779b97f4a7c15ull) ^ (uint64_t{id.writer} << 40) ^ (id.seq * 0xbf58476d1ce4e5b9ull);
  uint64_t words[(kBlockSize - kPayloadAt) / 8 + 1];
  for (size_t i = 0; i < std::size(words); i++) words[i] = seed + i * 0x2545f4914f6cdd1dull;
  std::memcpy(p + kPayloadAt, words, kBlockSize - kPayloadAt);
  uint32_t crc = BlockCrc(p);
  std::memcpy(p + kCrcAt, &crc, 4);
}

ParsedBlock ParseBlock(std::span<const std::byte> in) {
  const std::byte* p = in.data();
  ParsedBlock r;
  if (std::all_of(in.begin(), in.end(), [](std::byte b) { return b == std::byte{0}; })) {
    r.state = BlockState::kZero;
    return r;
  }
  uint32_t crc;
  std::memcpy(&crc, p + kCrcAt, 4);
  if (std::memcmp(p, kMagic, 8) != 0 || crc != BlockCrc(p)) return r;  // torn
  r.state = BlockState::kValid;
  std::memcpy(&r.id.block, p + 8, 8);
  std::memcpy(&r.id.writer, p + 16, 4);
  std::memcpy(&r.id.seq, p + 24, 8);
  return r;
}

bool IsByteMix(std::span<const std::byte> got, std::span<const std::byte> a, std::span<const std::byte> b) {
  if (got.size() != a.size() || got.size() != b.size()) return false;
  for (size_t i = 0; i < got.size(); i++)
    if (got[i] != a[i] && got[i] != b[i]) return false;
  return true;
}

bool IsScribbleMix(uint64_t block, std::span<const std::byte> got) {
  if (got.size() != kBlockSize) return false;
  const std::byte* p = got.data();
  BlockId id;
  std::memcpy(&id.block, p + 8, 8);
  std::memcpy(&id.writer, p + 16, 4);
  std::memcpy(&id.seq, p + 24, 8);
  if (id.block != block || id.seq == 0) return false;
  id.writer &= ~kScribbleBit;
  std::byte a[kBlockSize], a2[kBlockSize];
  FillBlock(id, a);
  FillBlock(ScribbleOf(id), a2);
  return IsByteMix(got, a, a2);
}

}  // namespace stablecache::wac
