#include "block/metadata_record.h"

#include <isa-l/crc.h>
#include <sys/random.h>

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "block/aligned_buffer.h"

namespace stablecache {

static_assert(std::endian::native == std::endian::little, "on-disk records are little-endian");

namespace {
constexpr size_t kMagicAt = 0, kVersionAt = 8, kLenAt = 12, kGenAt = 16, kUuidAt = 24, kCrcAt = 40;

template <typename T>
T Load(std::span<const std::byte> b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}
template <typename T>
void Store(std::vector<std::byte>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

uint32_t BlockCrc(std::span<const std::byte> block) {
  std::array<std::byte, kRecordBytes> copy;
  std::memcpy(copy.data(), block.data(), kRecordBytes);
  std::memset(copy.data() + kCrcAt, 0, 4);
  return crc32_iscsi(reinterpret_cast<unsigned char*>(copy.data()), kRecordBytes, 0xffffffff);
}

std::string_view LayerOf(std::string_view magic) {
  for (const auto& m : kMagics)
    if (m.magic == magic) return m.layer;
  return {};
}
}  // namespace

Uuid Uuid::Random() {
  Uuid u;
  size_t got = 0;
  while (got < u.bytes.size()) {
    ssize_t n = getrandom(u.bytes.data() + got, u.bytes.size() - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  u.bytes[6] = (u.bytes[6] & 0x0f) | 0x40;
  u.bytes[8] = (u.bytes[8] & 0x3f) | 0x80;
  return u;
}

bool Uuid::nil() const {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::string Uuid::ToString() const {
  std::string s;
  for (size_t i = 0; i < bytes.size(); i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", bytes[i]);
  }
  return s;
}

std::vector<std::byte> EncodeRecord(const MetadataRecord& r) {
  std::vector<std::byte> b(kRecordBytes);
  std::memcpy(b.data() + kMagicAt, r.magic.data(), std::min<size_t>(8, r.magic.size()));
  Store<uint32_t>(b, kVersionAt, r.version);
  Store<uint32_t>(b, kLenAt, static_cast<uint32_t>(r.payload.size()));
  Store<uint64_t>(b, kGenAt, r.generation);
  std::memcpy(b.data() + kUuidAt, r.uuid.bytes.data(), 16);
  if (!r.payload.empty())
    std::memcpy(b.data() + kRecordHeaderBytes, r.payload.data(), std::min<size_t>(r.payload.size(), kRecordPayloadMax));
  Store<uint32_t>(b, kCrcAt, BlockCrc(b));
  return b;
}

DecodedRecord DecodeRecord(std::span<const std::byte> block, std::string_view magic) {
  DecodedRecord d;
  if (block.size() < kRecordBytes) {
    d.state = RecordState::kCorrupt;
    d.why = "short block";
    return d;
  }
  if (std::all_of(block.begin(), block.begin() + kRecordBytes, [](std::byte b) { return b == std::byte{0}; }))
    return d;  // blank
  std::string found(reinterpret_cast<const char*>(block.data()), 8);
  uint32_t len = Load<uint32_t>(block, kLenAt);
  if (LayerOf(found).empty()) {
    d.state = RecordState::kCorrupt;
    d.why = "no stablecache record magic";
    return d;
  }
  if (Load<uint32_t>(block, kCrcAt) != BlockCrc(block)) {
    d.state = RecordState::kCorrupt;
    d.why = fmt::format("{} record fails its checksum", LayerOf(found));
    return d;
  }
  if (len > kRecordPayloadMax) {
    d.state = RecordState::kCorrupt;
    d.why = fmt::format("{} record has payload length {}", LayerOf(found), len);
    return d;
  }
  MetadataRecord& r = d.record;
  r.magic = found;
  r.version = Load<uint32_t>(block, kVersionAt);
  r.generation = Load<uint64_t>(block, kGenAt);
  std::memcpy(r.uuid.bytes.data(), block.data() + kUuidAt, 16);
  r.payload.assign(block.begin() + kRecordHeaderBytes, block.begin() + kRecordHeaderBytes + len);
  if (found != magic) {
    d.state = RecordState::kForeign;
    d.found_layer = std::string(LayerOf(found));
    return d;
  }
  d.state = RecordState::kValid;
  return d;
}

Result<DecodedRecord> ReadRecordSlots(BlockDevice& dev, uint64_t offset, std::string_view magic) {
  auto buf = AllocAligned(2 * kRecordBytes);
  if (Status st = ReadSync(dev, offset, buf.get(), 2 * kRecordBytes); !st.ok())
    return Err(st.WithContext(fmt::format("reading the {} record at offset {}", LayerOf(magic), offset)));
  DecodedRecord a = DecodeRecord({buf.get(), kRecordBytes}, magic);
  DecodedRecord b = DecodeRecord({buf.get() + kRecordBytes, kRecordBytes}, magic);
  if (a.state == RecordState::kValid && b.state == RecordState::kValid)
    return a.record.generation >= b.record.generation ? a : b;
  for (auto* d : {&a, &b})
    if (d->state == RecordState::kValid) return *d;
  for (auto* d : {&a, &b})
    if (d->state == RecordState::kForeign) return *d;
  for (auto* d : {&a, &b})
    if (d->state == RecordState::kCorrupt) return *d;
  return a;
}

Status WriteRecordSlot(BlockDevice& dev, uint64_t offset, const MetadataRecord& r) {
  std::vector<std::byte> enc = EncodeRecord(r);
  auto buf = AllocAligned(kRecordBytes);
  std::memcpy(buf.get(), enc.data(), kRecordBytes);
  const uint64_t at = offset + (r.generation % 2) * kRecordBytes;
  auto bio = Bio::Make(BioOp::kWrite, at, Stability::kStable);
  bio->AddSegment(buf.get(), kRecordBytes);
  bio->fua = true;
  if (Status st = SubmitAndWait(dev, std::move(bio)); !st.ok())
    return st.WithContext(fmt::format("writing the {} record at offset {}", LayerOf(r.magic), at));
  return FlushSync(dev).WithContext(fmt::format("flushing the {} record", LayerOf(r.magic)));
}

std::string DescribeRecord(const DecodedRecord& d) {
  switch (d.state) {
    case RecordState::kBlank: return "blank (never formatted)";
    case RecordState::kCorrupt: return fmt::format("corrupt ({})", d.why);
    case RecordState::kForeign:
    case RecordState::kValid:
      return fmt::format("{} record v{} generation {} uuid {}", LayerOf(d.record.magic), d.record.version,
                         d.record.generation, d.record.uuid.ToString());
  }
  return "?";
}

}  // namespace stablecache
