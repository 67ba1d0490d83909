#include "cache/size_record.h"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "block/aligned_buffer.h"

namespace stablecache {

namespace {

constexpr size_t kSizeAt = 0, kDeviceSizeAt = 8, kPageSizeAt = 16;
constexpr uint64_t kPage = 4096;

uint64_t RoundedDown(uint64_t bytes) { return bytes & ~(kPage - 1); }

}  // namespace

MetadataRecord MakeSizeRecord(const Uuid& uuid, uint64_t generation, uint64_t size, uint64_t device_size) {
  MetadataRecord r;
  r.magic = kFileSizeMagic;
  r.version = kFileSizeFormatVersion;
  r.generation = generation;
  r.uuid = uuid;
  r.Put<uint64_t>(kSizeAt, size);
  r.Put<uint64_t>(kDeviceSizeAt, device_size);
  r.Put<uint32_t>(kPageSizeAt, static_cast<uint32_t>(kPage));
  r.Put<uint32_t>(kPageSizeAt + 4, 0);
  return r;
}

namespace {

// What block 0 says, when it holds a stablecache record: a hint for an
// error about the end of the device ("" when it holds none).
std::string BlockZeroHint(BlockDevice& dev) {
  auto buf = AllocAligned(kRecordBytes);
  if (!ReadSync(dev, 0, buf.get(), kRecordBytes).ok()) return {};
  DecodedRecord d = DecodeRecord({buf.get(), kRecordBytes}, kFileSizeMagic);
  if (d.state == RecordState::kForeign) {
    const char* article = std::string_view("aeiou").find(d.found_layer[0]) != std::string_view::npos ? "an" : "a";
    return fmt::format("; block 0 holds {} {} superblock ({}): is the spec missing a layer?", article,
                       d.found_layer, DescribeRecord(d));
  }
  if (d.state == RecordState::kValid)
    return fmt::format("; block 0 holds a file size record ({}): is the spec missing a layer?", DescribeRecord(d));
  return {};
}

// A blank end may be the end of a device that grew: its record is then
// further down, below the zeros the growth added. Scans back from `end`
// over zero blocks (at most kGrowthScanBytes) to the first non-zero block;
// returns the file size record there (slot B, or slot A when B is blank
// or torn), if that is one.
constexpr uint64_t kGrowthScanBytes = 1ull << 30;
constexpr uint64_t kScanChunk = 1 << 20;

std::optional<DecodedRecord> RecordBelowBlankEnd(BlockDevice& dev, uint64_t end) {
  auto buf = AllocAligned(kScanChunk);
  const uint64_t floor = end > kGrowthScanBytes ? end - kGrowthScanBytes : 0;
  for (uint64_t hi = end; hi > floor;) {
    const uint64_t lo = std::max(floor, hi > kScanChunk ? hi - kScanChunk : 0);
    if (!ReadSync(dev, lo, buf.get(), static_cast<uint32_t>(hi - lo)).ok()) return std::nullopt;
    for (uint64_t b = (hi - lo) / kPage; b-- > 0;) {
      const std::byte* p = buf.get() + b * kPage;
      if (std::all_of(p, p + kPage, [](std::byte x) { return x == std::byte{0}; })) continue;
      const uint64_t at = lo + b * kPage;
      DecodedRecord d = DecodeRecord({p, kRecordBytes}, kFileSizeMagic);
      if (d.state == RecordState::kValid) return d;
      if (at < kPage) return std::nullopt;
      auto prev = AllocAligned(kRecordBytes);  // slot A below a torn slot B
      if (!ReadSync(dev, at - kPage, prev.get(), kRecordBytes).ok()) return std::nullopt;
      DecodedRecord a = DecodeRecord({prev.get(), kRecordBytes}, kFileSizeMagic);
      if (a.state == RecordState::kValid) return a;
      return std::nullopt;
    }
    hi = lo;
  }
  return std::nullopt;
}

}  // namespace

uint64_t SizeRecordOffset(uint64_t device_bytes) {
  const uint64_t r = RoundedDown(device_bytes);
  return r >= kSizeRecordBytes ? r - kSizeRecordBytes : 0;
}

Status SizeConflict(const BlockDevice& dev, uint64_t file_size, uint64_t initial_size) {
  return Status::InvalidArgument(fmt::format(
      "device '{}' holds a file of {} bytes; initial_size {} disagrees; pass 0 to open it as it is",
      dev.Info().name, file_size, initial_size));
}

Result<SizeRecordState> OpenSizeRecord(BlockDevice& dev, uint64_t initial_size) {
  const std::string& name = dev.Info().name;
  const uint64_t device_size = dev.Info().size_bytes;
  const uint64_t at = SizeRecordOffset(device_size);
  const uint64_t limit = FileLimit(device_size);
  auto read = ReadRecordSlots(dev, at, kFileSizeMagic);
  if (!read) return Err(read.error().WithContext(fmt::format("opening the file on device '{}'", name)));
  const DecodedRecord& d = *read;
  switch (d.state) {
    case RecordState::kBlank: {
      if (std::string hint = BlockZeroHint(dev); !hint.empty())
        return Err(Status::InvalidArgument(fmt::format(
            "device '{}' has no file size record at offset {} (both slots blank){}; refusing to format it",
            name, at, hint)));
      if (auto old = RecordBelowBlankEnd(dev, at))
        return Err(Status::InvalidArgument(fmt::format(
            "device '{}' is {} bytes, but its file size record ({}) lies below a blank end and was written on a "
            "device of {} bytes: the device grew, and a File cannot grow its device (its record would have to "
            "move); open it at its old size, {} bytes",
            name, device_size, DescribeRecord(*old), old->record.Get<uint64_t>(kDeviceSizeAt),
            old->record.Get<uint64_t>(kDeviceSizeAt))));
      if (initial_size > limit)
        return Err(Status::OutOfRange(fmt::format(
            "initial size {} exceeds the file limit of device '{}' ({} bytes: the last 8 KiB hold the file size "
            "record)",
            initial_size, name, limit)));
      SizeRecordState s{.size = initial_size, .device_size = device_size, .generation = 1, .uuid = Uuid::Random(),
                        .formatted_now = true};
      if (Status st = WriteRecordSlot(dev, at, MakeSizeRecord(s.uuid, 1, s.size, device_size)); !st.ok())
        return Err(st.WithContext(fmt::format("formatting the file on device '{}'", name)));
      return s;
    }
    case RecordState::kCorrupt:
      return Err(Status::InvalidArgument(fmt::format(
          "device '{}': the file size record at offset {} is corrupt ({}){}; refusing to format over it", name, at,
          d.why, BlockZeroHint(dev))));
    case RecordState::kForeign:
      return Err(Status::InvalidArgument(fmt::format(
          "device '{}': the last 8 KiB (offset {}) hold a {} record, not a file size record ({}){}", name, at,
          d.found_layer, DescribeRecord(d), BlockZeroHint(dev))));
    case RecordState::kValid: break;
  }
  const MetadataRecord& r = d.record;
  if (r.version != kFileSizeFormatVersion)
    return Err(Status::NotSupported(fmt::format(
        "device '{}': the file size record at offset {} has format version {}; this build reads version {}", name,
        at, r.version, kFileSizeFormatVersion)));
  SizeRecordState s{.size = r.Get<uint64_t>(kSizeAt), .device_size = r.Get<uint64_t>(kDeviceSizeAt),
                    .generation = r.generation, .uuid = r.uuid};
  if (RoundedDown(s.device_size) != RoundedDown(device_size))
    return Err(Status::InvalidArgument(fmt::format(
        "device '{}' is {} bytes but its file size record ({}) was written on a device of {} bytes", name,
        device_size, DescribeRecord(d), s.device_size)));
  if (s.size > limit)
    return Err(Status::InvalidArgument(fmt::format(
        "device '{}': the file size record ({}) holds a size of {} bytes, past the file limit of {} bytes", name,
        DescribeRecord(d), s.size, limit)));
  if (initial_size != 0 && initial_size != s.size) return Err(SizeConflict(dev, s.size, initial_size));
  return s;
}

Status RewriteSizeRecord(BlockDevice& dev, uint64_t size) {
  auto s = OpenSizeRecord(dev, 0);
  if (!s) return s.error();
  if (size > FileLimit(dev.Info().size_bytes))
    return Status::OutOfRange(fmt::format("size {} exceeds the file limit of device '{}' ({} bytes)", size,
                                          dev.Info().name, FileLimit(dev.Info().size_bytes)));
  return WriteRecordSlot(dev, SizeRecordOffset(dev.Info().size_bytes),
                         MakeSizeRecord(s->uuid, s->generation + 1, size, s->device_size));
}

SizeRecord::SizeRecord(const SizeRecordState& s)
    : uuid_(s.uuid), device_size_(s.device_size), generation_(s.generation), durable_size_(s.size) {}

uint64_t SizeRecord::durable_size() const { return durable_size_.load(std::memory_order_acquire); }

uint64_t SizeRecord::BeginSync(uint64_t size) {
  std::lock_guard lk(mu_);
  const uint64_t t = next_ticket_++;
  safe_size_.emplace(t, size);
  return t;
}

void SizeRecord::NoteTruncate(uint64_t new_size) {
  std::lock_guard lk(mu_);
  for (auto& [t, s] : safe_size_) s = std::min(s, new_size);
}

Status SizeRecord::FinishSync(BlockDevice& dev, uint64_t ticket, bool data_ok, bool* unrecorded) {
  if (unrecorded) *unrecorded = false;
  std::lock_guard lk(mu_);
  auto it = safe_size_.find(ticket);
  if (it == safe_size_.end()) return Status::Ok();
  const uint64_t size = it->second;
  safe_size_.erase(it);
  // A Sync that started later has written a record (or found the medium
  // holding its size): that covers this one, whose size may be older.
  if (ticket < written_ticket_) return Status::Ok();
  if (!data_ok) {
    if (unrecorded) *unrecorded = size != durable_size_.load();
    return Status::Ok();
  }
  if (size == durable_size_.load()) {
    written_ticket_ = ticket;
    return Status::Ok();
  }
  const uint64_t at = SizeRecordOffset(dev.Info().size_bytes);
  if (Status st = WriteRecordSlot(dev, at, MakeSizeRecord(uuid_, generation_ + 1, size, device_size_)); !st.ok()) {
    // The slot may hold the new record or not: the durable size is unknown
    // until a record write succeeds (the retry rewrites the same slot).
    durable_size_.store(kUnknownSize, std::memory_order_release);
    return st;
  }
  generation_++;
  durable_size_.store(size, std::memory_order_release);
  written_ticket_ = ticket;
  return Status::Ok();
}

}  // namespace stablecache
