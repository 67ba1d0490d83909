#include "devices/integrity_device.h"

#include <isa-l/crc.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "block/aligned_buffer.h"
#include "block/bio_join.h"
#include "block/bounce.h"

namespace stablecache {

namespace {
constexpr uint64_t kBlock = 4096;
constexpr char kMagic[] = "SCINTEG1";
constexpr char kTagMagic[] = "SCTAGS01";
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kTagHeader = 32;
constexpr size_t kEntryBytes = 16;
constexpr uint64_t kIoChunk = 1 << 20;  // format and load in 1 MiB pieces
static_assert(kTagHeader + IntegrityDevice::kEntriesPerTagBlock * kEntryBytes == kBlock);
// Adjacent dirty tag blocks of a commit go down as one write of at most this.
constexpr uint64_t kMaxTagWriteBytes = 1 << 20;

// An entry's count: how many contents the medium may hold for the block.
constexpr uint8_t kNeverWritten = 0;  // must read as zeros
constexpr uint8_t kLost = 3;          // its tag block was corrupt: nothing is accepted
constexpr uint8_t kLostMedium = 4;    // in memory only: a failed write's block held neither content

// Record payload offsets (doc/integrity_format.md).
constexpr size_t kPGuard = 0, kPEntries = 4, kPDataBlocks = 8, kPTagStart = 16, kPTagBlocks = 24, kPDataStart = 32,
                 kPLowerBytes = 40;

const std::byte kZeroBlock[kBlock] = {};

bool IsZero(const std::byte* p) { return std::memcmp(p, kZeroBlock, kBlock) == 0; }

// Calls fn(block number, block bytes) for each 4 KiB block of the payload,
// numbering from `first`. Segments may split a block; those are gathered.
template <typename Fn>
void ForEachBlock(const Bio& bio, uint64_t first, Fn fn) {
  uint64_t block = first;
  std::byte tmp[kBlock];
  uint32_t fill = 0;
  for (const auto& s : bio.segments) {
    uint32_t o = 0;
    while (o < s.len) {
      if (fill == 0 && s.len - o >= kBlock) {
        fn(block++, s.data + o);
        o += kBlock;
        continue;
      }
      uint32_t n = std::min<uint32_t>(kBlock - fill, s.len - o);
      std::memcpy(tmp + fill, s.data + o, n);
      fill += n;
      o += n;
      if (fill == kBlock) {
        fn(block++, tmp);
        fill = 0;
      }
    }
  }
}
}  // namespace

namespace {
// Zeroes the payload's 4 KiB block `index` (segments may split it).
void ZeroBlock(Bio& bio, uint64_t index) {
  uint64_t skip = index * kBlock, left = kBlock;
  for (auto& s : bio.segments) {
    if (left == 0) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(s.len - skip, left);
    std::memset(s.data + skip, 0, n);
    left -= n;
    skip = 0;
  }
}
}  // namespace

const char* GuardName(GuardType g) { return g == GuardType::kCrc32c ? "crc32c" : "crc16"; }

// Per data block, in memory. guard/count mirror the on-disk entry: the
// contents the medium may hold for the block after a crash.
struct IntegrityDevice::BlockState {
  enum Phase : uint8_t {
    kIdle,       // the medium holds the entry's one content (or zeros, or it is lost)
    kTagging,    // its write waits for the commit that records its new tag
    kWriting,    // its data is on the way down
    kWritten,    // its data landed; durable once a flush submitted after done_at completes
    kFailed,     // its write failed: old or new may be on the medium
    kResolving,  // being read back to learn which
  };
  uint32_t guard[2] = {0, 0};
  uint8_t count = kNeverWritten;
  uint8_t phase = kIdle;
  uint64_t done_at = 0;  // flushes_submitted_ when the write completed
};

struct IntegrityDevice::PendingWrite {
  BioPtr bio;
  uint64_t first = 0, count = 0;   // data blocks
  std::vector<uint32_t> guards;    // new guard per block
  std::vector<BlockState> before;  // the blocks' states when admitted (to undo)
};

struct IntegrityDevice::Commit {
  std::vector<std::unique_ptr<PendingWrite>> writes;
  std::vector<BioPtr> flushes;    // first phase: this commit's flush covers their writes
  std::vector<BioPtr> finishing;  // second phase: this commit writes the collapses the last one settled
  std::vector<uint64_t> tag_blocks;
  uint64_t flush_seq = 0;
};

Result<std::shared_ptr<IntegrityDevice>> IntegrityDevice::Create(std::shared_ptr<BlockDevice> lower,
                                                                 const IntegrityOptions& opts) {
  if (kBlock % lower->Info().logical_block_size != 0)
    return Err(Status::InvalidArgument(fmt::format("integrity: device '{}' has {}-byte blocks; 4096 must be a multiple",
                                                   lower->Info().name, lower->Info().logical_block_size)));
  std::shared_ptr<IntegrityDevice> dev(new IntegrityDevice(std::move(lower), opts));
  if (Status st = dev->OpenOrFormat(opts); !st.ok()) return Err(st);
  return dev;
}

IntegrityDevice::IntegrityDevice(std::shared_ptr<BlockDevice> lower, const IntegrityOptions& opts)
    : StackedDevice(std::move(lower), "integrity", opts.required), opts_(opts) {}

IntegrityDevice::~IntegrityDevice() = default;

uint32_t IntegrityDevice::Guard(uint64_t block, const std::byte* data) const {
  auto* p = reinterpret_cast<unsigned char*>(const_cast<std::byte*>(data));
  if (guard_ == GuardType::kCrc32c) return crc32_iscsi(p, kBlock, ~static_cast<uint32_t>(block));
  return crc16_t10dif(static_cast<uint16_t>(block), p, kBlock);
}

// ---- the medium: record and tag table --------------------------------------

Status IntegrityDevice::OpenOrFormat(const IntegrityOptions& opts) {
  const std::string below = lower_->Info().name;
  const uint64_t lower_bytes = lower_->Info().size_bytes / kBlock * kBlock;
  if (lower_bytes < 3 * kBlock)
    return Status::NoSpace(fmt::format("integrity: device '{}' ({} bytes) has no room for a record, tags and data",
                                       below, lower_->Info().size_bytes));
  auto rec = ReadRecordSlots(*lower_, 0, kMagic);
  if (!rec) return rec.error().WithContext("integrity");
  switch (rec->state) {
    case RecordState::kBlank:
      if (!opts.format)
        return Status::InvalidArgument(fmt::format("integrity: '{}' is blank: no integrity volume to open", below));
      guard_ = opts.guard.value_or(GuardType::kCrc16T10Dif);
      SC_RETURN_IF_ERROR(Format());
      formatted_now_ = true;
      break;
    case RecordState::kForeign:
      return Status::InvalidArgument(fmt::format(
          "integrity: '{}' holds a {} superblock, not an integrity one: the spec disagrees with the medium", below,
          rec->found_layer));
    case RecordState::kCorrupt:
      return Status::InvalidArgument(
          fmt::format("integrity: '{}' is neither blank nor an integrity volume ({}); refusing to format over it",
                      below, rec->why));
    case RecordState::kValid: {
      const MetadataRecord& r = rec->record;
      if (r.version != kFormatVersion)
        return Status::NotSupported(fmt::format("integrity: '{}' has format version {}; this build reads version {}",
                                                below, r.version, kFormatVersion));
      uint32_t g = r.Get<uint32_t>(kPGuard);
      if (g != static_cast<uint32_t>(GuardType::kCrc16T10Dif) && g != static_cast<uint32_t>(GuardType::kCrc32c))
        return Status::InvalidArgument(fmt::format("integrity: '{}' records unknown guard type {}", below, g));
      guard_ = static_cast<GuardType>(g);
      if (opts.guard && *opts.guard != guard_)
        return Status::InvalidArgument(fmt::format(
            "integrity: the spec says guard={} but the volume on '{}' was formatted with guard={}", GuardName(*opts.guard),
            below, GuardName(guard_)));
      uuid_ = r.uuid;
      geo_.guard = guard_;
      geo_.data_blocks = r.Get<uint64_t>(kPDataBlocks);
      geo_.tag_start = r.Get<uint64_t>(kPTagStart);
      geo_.tag_blocks = r.Get<uint64_t>(kPTagBlocks);
      geo_.data_start = r.Get<uint64_t>(kPDataStart);
      geo_.lower_bytes = r.Get<uint64_t>(kPLowerBytes);
      if (r.Get<uint32_t>(kPEntries) != kEntriesPerTagBlock || geo_.tag_start != 2 || geo_.data_blocks == 0 ||
          geo_.tag_blocks != (geo_.data_blocks + kEntriesPerTagBlock - 1) / kEntriesPerTagBlock ||
          geo_.data_start != geo_.tag_start + geo_.tag_blocks ||
          (geo_.data_start + geo_.data_blocks) * kBlock > geo_.lower_bytes)
        return Status::InvalidArgument(fmt::format("integrity: the record on '{}' has an impossible geometry", below));
      if (lower_bytes < geo_.lower_bytes)
        return Status::InvalidArgument(fmt::format(
            "integrity: '{}' is {} bytes but the volume was formatted on {} bytes: the device below shrank", below,
            lower_bytes, geo_.lower_bytes));
      if (lower_bytes > geo_.lower_bytes)
        return Status::InvalidArgument(fmt::format(
            "integrity: '{}' is {} bytes but the volume was formatted on {} bytes; format v1 cannot grow (its tag "
            "table would have to move): open it at its formatted size",
            below, lower_bytes, geo_.lower_bytes));
      break;
    }
  }
  info_.name = fmt::format("integrity({})", GuardName(guard_));
  info_.size_bytes = geo_.data_blocks * kBlock;
  info_.logical_block_size = kBlock;
  blocks_.assign(geo_.data_blocks, BlockState{});
  if (formatted_now_) return Status::Ok();
  return LoadTags();
}

Status IntegrityDevice::Format() {
  const uint64_t lower_blocks = lower_->Info().size_bytes / kBlock;
  // 2 record blocks + T tag blocks + D data blocks, T = ceil(D / 254).
  uint64_t data = lower_blocks > 2 ? (lower_blocks - 2) * kEntriesPerTagBlock / (kEntriesPerTagBlock + 1) : 0;
  while (data > 0 && 2 + data + (data + kEntriesPerTagBlock - 1) / kEntriesPerTagBlock > lower_blocks) data--;
  if (data == 0)
    return Status::NoSpace(fmt::format("integrity: device '{}' ({} bytes) has no room for a record, tags and data",
                                       lower_->Info().name, lower_->Info().size_bytes));
  geo_.guard = guard_;
  geo_.data_blocks = data;
  geo_.tag_start = 2;
  geo_.tag_blocks = (data + kEntriesPerTagBlock - 1) / kEntriesPerTagBlock;
  geo_.data_start = geo_.tag_start + geo_.tag_blocks;
  geo_.lower_bytes = lower_blocks * kBlock;
  uuid_ = Uuid::Random();
  // Zero the tag table (a blank tag block means "never written"), make it
  // durable, then write the record: a crash before the record lands
  // leaves a blank device that the next open formats again.
  auto zeros = AllocAligned(kIoChunk);
  std::memset(zeros.get(), 0, kIoChunk);
  for (uint64_t b = geo_.tag_start; b < geo_.data_start; b += kIoChunk / kBlock) {
    uint64_t n = std::min<uint64_t>(kIoChunk / kBlock, geo_.data_start - b);
    SC_RETURN_IF_ERROR(WriteSync(*lower_, b * kBlock, zeros.get(), static_cast<uint32_t>(n * kBlock))
                           .WithContext("integrity: zeroing the tag table"));
  }
  SC_RETURN_IF_ERROR(FlushSync(*lower_).WithContext("integrity: format"));
  MetadataRecord r;
  r.magic = kMagic;
  r.version = kFormatVersion;
  r.generation = 1;
  r.uuid = uuid_;
  r.Put<uint32_t>(kPGuard, static_cast<uint32_t>(guard_));
  r.Put<uint32_t>(kPEntries, kEntriesPerTagBlock);
  r.Put<uint64_t>(kPDataBlocks, geo_.data_blocks);
  r.Put<uint64_t>(kPTagStart, geo_.tag_start);
  r.Put<uint64_t>(kPTagBlocks, geo_.tag_blocks);
  r.Put<uint64_t>(kPDataStart, geo_.data_start);
  r.Put<uint64_t>(kPLowerBytes, geo_.lower_bytes);
  return WriteRecordSlot(*lower_, 0, r).WithContext("integrity: format");
}

std::vector<std::byte> IntegrityDevice::EncodeTagBlock(uint64_t tb) const {
  std::vector<std::byte> out(kBlock);
  std::memcpy(out.data(), kTagMagic, 8);
  std::memcpy(out.data() + 8, &tb, 8);
  std::memcpy(out.data() + 16, uuid_.bytes.data(), 8);
  const uint64_t first = tb * kEntriesPerTagBlock;
  const uint64_t n = std::min<uint64_t>(kEntriesPerTagBlock, geo_.data_blocks - first);
  for (uint64_t i = 0; i < n; i++) {
    const BlockState& s = blocks_[first + i];
    uint32_t e[4] = {s.guard[0], s.guard[1], s.count, 0};
    std::memcpy(out.data() + kTagHeader + i * kEntryBytes, e, kEntryBytes);
  }
  uint32_t crc = crc32_iscsi(reinterpret_cast<unsigned char*>(out.data()), kBlock, 0xffffffff);
  std::memcpy(out.data() + 24, &crc, 4);
  return out;
}

Status IntegrityDevice::LoadTags() {
  auto buf = AllocAligned(kIoChunk);
  for (uint64_t tb0 = 0; tb0 < geo_.tag_blocks; tb0 += kIoChunk / kBlock) {
    const uint64_t n = std::min<uint64_t>(kIoChunk / kBlock, geo_.tag_blocks - tb0);
    SC_RETURN_IF_ERROR(ReadSync(*lower_, (geo_.tag_start + tb0) * kBlock, buf.get(), static_cast<uint32_t>(n * kBlock))
                           .WithContext("integrity: loading the tag table"));
    for (uint64_t i = 0; i < n; i++) {
      const uint64_t tb = tb0 + i;
      std::byte* p = buf.get() + i * kBlock;
      if (IsZero(p)) continue;  // never written: every entry kNeverWritten
      uint64_t index = 0;
      uint32_t crc = 0;
      std::memcpy(&index, p + 8, 8);
      std::memcpy(&crc, p + 24, 4);
      std::memset(p + 24, 0, 4);
      bool ok = std::memcmp(p, kTagMagic, 8) == 0 && index == tb && std::memcmp(p + 16, uuid_.bytes.data(), 8) == 0 &&
                crc == crc32_iscsi(reinterpret_cast<unsigned char*>(p), kBlock, 0xffffffff);
      const uint64_t first = tb * kEntriesPerTagBlock;
      const uint64_t entries = std::min<uint64_t>(kEntriesPerTagBlock, geo_.data_blocks - first);
      for (uint64_t e = 0; e < entries; e++) {
        BlockState& s = blocks_[first + e];
        if (!ok) {
          s.count = kLost;
          continue;
        }
        uint32_t v[4];
        std::memcpy(v, p + kTagHeader + e * kEntryBytes, kEntryBytes);
        s.guard[0] = v[0];
        s.guard[1] = v[1];
        s.count = v[2] <= 2 || v[2] == kLostMedium ? static_cast<uint8_t>(v[2]) : kLost;
        // Two contents on record: the write that put them there may or may
        // not have landed before the crash; learn which before the block is
        // written again (a read back, after a flush: the open's own flush).
        if (s.count == 2) {
          s.phase = BlockState::kFailed;
          s.done_at = 0;
          unsettled_.insert(first + e);
        }
      }
    }
  }
  // Everything below is durable from here on: the first flush settles the
  // blocks left with two contents.
  SC_RETURN_IF_ERROR(FlushSync(*lower_).WithContext("integrity: open"));
  flushes_submitted_ = flushed_upto_ = 1;
  return Status::Ok();
}

void IntegrityDevice::DescribeMedium(MediumReport& out) const {
  uint64_t never = 0, settled = 0, two = 0, lost = 0, damaged = 0;
  {
    std::lock_guard lk(mu_);
    for (const BlockState& s : blocks_) {
      if (s.count == kNeverWritten) never++;
      else if (s.count == 1) settled++;
      else if (s.count == 2) two++;
      else if (s.count == kLostMedium) damaged++;
      else lost++;
    }
  }
  out.push_back({info_.name,
                 {{"format", fmt::format("stablecache integrity v{}", kFormatVersion)},
                  {"uuid", uuid_.ToString()},
                  {"guard", GuardName(guard_)},
                  {"data blocks", fmt::format("{} ({} bytes)", geo_.data_blocks, geo_.data_blocks * kBlock)},
                  {"tag blocks", fmt::format("{} at block {}", geo_.tag_blocks, geo_.tag_start)},
                  {"data start", fmt::format("block {} below", geo_.data_start)},
                  {"formatted on", fmt::format("{} bytes", geo_.lower_bytes)},
                  {"blocks", fmt::format("{} never written, {} settled, {} with a write unsettled at the last crash "
                                         "or still under way, {} unreadable (corrupt tag block), {} unreadable "
                                         "(a failed write left neither content)",
                                         never, settled, two, lost, damaged)}}});
  lower_->DescribeMedium(out);
}

// ---- I/O --------------------------------------------------------------------

void IntegrityDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  StabilizeBio(*bio, opts_.required, counters_.bytes_bounced);
  switch (bio->op) {
    case BioOp::kWrite: return SubmitWrite(std::move(bio));
    case BioOp::kRead: return SubmitRead(std::move(bio));
    case BioOp::kFlush: return SubmitFlush(std::move(bio));
  }
}

Status IntegrityDevice::CheckBlock(uint64_t block, uint32_t guard) const {
  const BlockState& s = blocks_[block];
  switch (s.count) {
    case kNeverWritten:
      return Status::Ok();  // read as zeros whatever the medium holds (SubmitRead)
    case kLostMedium:
      return Status::IntegrityError(fmt::format(
          "{}: block {} (offset {}) is unreadable: a write of it failed and, read back after a flush, it held "
          "neither its old nor its new content (or could not be read); rewrite the block",
          info_.name, block, block * kBlock));
    case kLost:
      return Status::IntegrityError(fmt::format(
          "{}: block {} (offset {}) has no protection information: its tag block {} was corrupt; rewrite the block",
          info_.name, block, block * kBlock, block / kEntriesPerTagBlock));
    default:
      for (uint8_t i = 0; i < s.count; i++)
        if (s.guard[i] == guard) return Status::Ok();
      return Status::IntegrityError(
          fmt::format("{}: block {} (offset {}) fails its protection information: guard {:#x} computed, {} on record",
                      info_.name, block, block * kBlock, guard,
                      s.count == 1 ? fmt::format("{:#x}", s.guard[0])
                                   : fmt::format("{:#x} or {:#x}", s.guard[0], s.guard[1])));
  }
}

void IntegrityDevice::SubmitRead(BioPtr bio) {
  const uint64_t offset = bio->offset;
  Bio::Completion inner = std::move(bio->on_complete);
  bio->on_complete = [this, offset, inner = std::move(inner)](BioPtr b, Status st) mutable {
    b->offset = offset;
    if (st.ok()) {
      std::vector<uint32_t> seen;
      ForEachBlock(*b, offset / kBlock, [&](uint64_t blk, const std::byte* data) { seen.push_back(Guard(blk, data)); });
      std::vector<uint64_t> never;  // blocks to hand up as zeros
      {
        std::lock_guard lk(mu_);
        for (size_t i = 0; i < seen.size() && st.ok(); i++) {
          const uint64_t blk = offset / kBlock + i;
          if (blocks_[blk].count == kNeverWritten) never.push_back(i);
          st = CheckBlock(blk, seen[i]);
          if (!st.ok()) counters_.integrity_errors.fetch_add(1, std::memory_order_relaxed);
        }
      }
      // A block never written through this layer reads as zeros, like a
      // thinly provisioned device, whatever the device below held before.
      if (st.ok())
        for (uint64_t i : never) ZeroBlock(*b, i);
    }
    if (inner) inner(std::move(b), std::move(st));
  };
  bio->offset = geo_.data_start * kBlock + offset;
  lower_->Submit(std::move(bio));
}

void IntegrityDevice::SubmitWrite(BioPtr bio) {
  auto w = std::make_unique<PendingWrite>();
  w->first = bio->offset / kBlock;
  w->count = bio->Length() / kBlock;
  w->guards.reserve(w->count);
  ForEachBlock(*bio, w->first, [&](uint64_t b, const std::byte* data) { w->guards.push_back(Guard(b, data)); });
  w->bio = std::move(bio);
  std::unique_lock lk(mu_);
  waiting_writes_.push_back(std::move(w));
  Kick(lk);
}

void IntegrityDevice::SubmitFlush(BioPtr bio) {
  std::unique_lock lk(mu_);
  waiting_flushes_.push_back(std::move(bio));
  Kick(lk);
}

// ---- the group commit ---------------------------------------------------------

// Blocks whose write a completed flush has covered hold their new content
// for good: collapse their entries (written with the next commit).
bool IntegrityDevice::SettleCovered(std::vector<uint64_t>* read_backs) {
  if (swept_at_ == flushed_upto_) return false;  // nothing new is covered
  swept_at_ = flushed_upto_;
  bool collapsed = false;
  for (auto it = unsettled_.begin(); it != unsettled_.end();) {
    BlockState& s = blocks_[*it];
    if (flushed_upto_ <= s.done_at) {
      ++it;
      continue;
    }
    if (s.phase == BlockState::kWritten) {
      s.guard[0] = s.guard[1];
      s.guard[1] = 0;
      s.count = 1;
      s.phase = BlockState::kIdle;
      dirty_tag_blocks_.insert(*it / kEntriesPerTagBlock);
      collapsed = true;
    } else if (s.phase == BlockState::kFailed) {
      s.phase = BlockState::kResolving;
      read_backs->push_back(*it);
    }
    it = unsettled_.erase(it);
  }
  return collapsed;
}

bool IntegrityDevice::Admissible(uint64_t first, uint64_t count, bool* need_flush) {
  for (uint64_t b = first; b < first + count; b++) {
    const BlockState& s = blocks_[b];
    if (s.phase == BlockState::kIdle) continue;
    // Covered writes were settled by SettleCovered; these need a flush.
    if (s.phase == BlockState::kWritten || s.phase == BlockState::kFailed) *need_flush = true;
    return false;
  }
  return true;
}

// Completions below may run inline, inside a Kick (tag writes -> flush ->
// CommitFlushed -> Kick): a nested Kick only asks the one running to go
// round again, so the stack never grows with the number of commits.
void IntegrityDevice::Kick(std::unique_lock<std::mutex>& lk) {
  if (kicking_) {
    rekick_ = true;
    return;
  }
  kicking_ = true;
  do {
    rekick_ = false;
    KickOnce(lk);
  } while (rekick_);
  kicking_ = false;
}

void IntegrityDevice::KickOnce(std::unique_lock<std::mutex>& lk) {
  // One commit at a time; and while the last commit's data is still going
  // down, the next one waits for it, so the writes queued meanwhile share
  // one tag write and one flush instead of each burst paying its own.
  if (committing_ || data_in_flight_ > 0) return;
  std::vector<uint64_t> read_backs;
  SettleCovered(&read_backs);
  auto c = std::make_shared<Commit>();
  bool need_flush = false;
  // Admit waiting writes in order; a write overlapping an earlier blocked
  // one stays behind it, so overlapping writes keep their order.
  std::vector<std::pair<uint64_t, uint64_t>> blocked;
  for (auto it = waiting_writes_.begin(); it != waiting_writes_.end();) {
    PendingWrite& w = **it;
    bool behind = std::any_of(blocked.begin(), blocked.end(), [&](auto r) {
      return w.first < r.first + r.second && r.first < w.first + w.count;
    });
    if (behind || !Admissible(w.first, w.count, &need_flush)) {
      blocked.emplace_back(w.first, w.count);
      ++it;
      continue;
    }
    w.before.assign(blocks_.begin() + w.first, blocks_.begin() + w.first + w.count);
    for (uint64_t i = 0; i < w.count; i++) {
      BlockState& s = blocks_[w.first + i];
      // The entry accepts what the medium holds now and the new content
      // (only the new one when the old was lost: nothing else is good).
      uint32_t old = s.count == kNeverWritten ? Guard(w.first + i, kZeroBlock) : s.guard[0];
      s.guard[0] = s.count == kLost || s.count == kLostMedium ? w.guards[i] : old;
      s.guard[1] = w.guards[i];
      s.count = 2;
      s.phase = BlockState::kTagging;
      dirty_tag_blocks_.insert((w.first + i) / kEntriesPerTagBlock);
    }
    c->writes.push_back(std::move(*it));
    it = waiting_writes_.erase(it);
  }
  const bool work = !c->writes.empty() || !waiting_flushes_.empty() || !finishing_flushes_.empty() || need_flush;
  if (work) {
    committing_ = true;
    c->flushes.swap(waiting_flushes_);
    c->finishing.swap(finishing_flushes_);
    c->tag_blocks.assign(dirty_tag_blocks_.begin(), dirty_tag_blocks_.end());
    dirty_tag_blocks_.clear();
  }
  // c->tag_blocks is sorted (from a std::set): encode them into one
  // buffer, so each run of adjacent tag blocks goes down as one write.
  std::shared_ptr<std::byte> encoded = AllocAligned(std::max<size_t>(1, c->tag_blocks.size()) * kBlock);
  for (size_t i = 0; i < c->tag_blocks.size(); i++) {
    std::vector<std::byte> e = EncodeTagBlock(c->tag_blocks[i]);
    std::memcpy(encoded.get() + i * kBlock, e.data(), kBlock);
  }
  lk.unlock();
  for (uint64_t b : read_backs) ReadBack(b);
  if (!work) {
    lk.lock();
    return;
  }
  auto self = std::static_pointer_cast<IntegrityDevice>(shared_from_this());
  auto join = BioJoin::Start(nullptr, [self, c](BioPtr, Status st) { self->TagsWritten(c, std::move(st)); });
  counters_.metadata_writes.fetch_add(c->tag_blocks.size(), std::memory_order_relaxed);
  for (size_t i = 0; i < c->tag_blocks.size();) {
    size_t n = 1;
    while (i + n < c->tag_blocks.size() && c->tag_blocks[i + n] == c->tag_blocks[i] + n &&
           (n + 1) * kBlock <= kMaxTagWriteBytes)
      n++;
    auto w = join->Child(BioOp::kWrite, (geo_.tag_start + c->tag_blocks[i]) * kBlock, Stability::kStable);
    w->AddSegment(encoded.get() + i * kBlock, static_cast<uint32_t>(n * kBlock));
    w->keep_alive.push_back(encoded);
    lower_->Submit(std::move(w));
    i += n;
  }
  join->Arm();
  lk.lock();
}

void IntegrityDevice::TagsWritten(std::shared_ptr<Commit> c, Status st) {
  if (!st.ok()) return AbortCommit(std::move(c), st.WithContext(fmt::format("{}: writing tags", info_.name)));
  {
    std::lock_guard lk(mu_);
    c->flush_seq = ++flushes_submitted_;
  }
  counters_.metadata_flushes.fetch_add(1, std::memory_order_relaxed);
  auto f = Bio::Make(BioOp::kFlush, 0, Stability::kStable);
  f->on_complete = [self = std::static_pointer_cast<IntegrityDevice>(shared_from_this()), c](BioPtr, Status fst) {
    self->CommitFlushed(c, std::move(fst));
  };
  lower_->Submit(std::move(f));
}

void IntegrityDevice::CommitFlushed(std::shared_ptr<Commit> c, Status st) {
  if (!st.ok()) return AbortCommit(std::move(c), st.WithContext(fmt::format("{}: flushing tags", info_.name)));
  auto keep = shared_from_this();  // the bios completed below may hold the last references
  std::vector<BioPtr> done = std::move(c->finishing);
  std::vector<uint64_t> read_backs;
  {
    std::lock_guard lk(mu_);
    flushed_upto_ = std::max(flushed_upto_, c->flush_seq);
    for (auto& w : c->writes)
      for (uint64_t b = w->first; b < w->first + w->count; b++) blocks_[b].phase = BlockState::kWriting;
    // A flush from above is durable now, but the writes it just settled
    // still have two contents on record: a lost write of one would read as
    // its old content. The next commit writes their collapsed entries and
    // flushes; the flush completes with it (only if there is anything to
    // collapse), so after a Sync a lost or stale block is caught.
    if (SettleCovered(&read_backs)) {
      for (auto& f : c->flushes) finishing_flushes_.push_back(std::move(f));
    } else {
      for (auto& f : c->flushes) done.push_back(std::move(f));
    }
  }
  for (uint64_t b : read_backs) ReadBack(b);
  {
    std::lock_guard lk(mu_);
    data_in_flight_ += c->writes.size();
  }
  for (auto& w : c->writes) SubmitData(std::move(w));
  for (auto& f : done) Bio::Complete(std::move(f), Status::Ok());
  std::unique_lock lk(mu_);
  committing_ = false;
  Kick(lk);
}

// The tags (or their flush) did not land: nothing of the commit's writes
// went down, so the medium still holds the old contents; the entries on
// disk are old or new, both of which accept them. Undo the entries, write
// the tag blocks again next time, fail the writes and flushes.
void IntegrityDevice::AbortCommit(std::shared_ptr<Commit> c, const Status& st) {
  auto keep = shared_from_this();
  counters_.errors.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(mu_);
    for (auto& w : c->writes)
      for (uint64_t i = 0; i < w->count; i++) blocks_[w->first + i] = w->before[i];
    dirty_tag_blocks_.insert(c->tag_blocks.begin(), c->tag_blocks.end());
    for (auto& w : c->writes)
      for (uint64_t b = w->first; b < w->first + w->count; b++) dirty_tag_blocks_.insert(b / kEntriesPerTagBlock);
    // Writes waiting for a flush to settle an earlier write of their
    // blocks waited for this commit: they fail with it (the caller retries)
    // rather than make the next commit try the failing device again, and
    // again, for as long as it fails.
    for (auto it = waiting_writes_.begin(); it != waiting_writes_.end();) {
      bool on_flush = false;
      for (uint64_t b = (*it)->first; b < (*it)->first + (*it)->count && !on_flush; b++)
        on_flush = blocks_[b].phase == BlockState::kWritten || blocks_[b].phase == BlockState::kFailed;
      if (!on_flush) {
        ++it;
        continue;
      }
      c->writes.push_back(std::move(*it));  // completed below, with no state to undo
      c->writes.back()->before.clear();
      it = waiting_writes_.erase(it);
    }
  }
  for (auto& w : c->writes) {
    w->bio->offset = w->first * kBlock;
    Bio::Complete(std::move(w->bio), st);
  }
  for (auto& f : c->flushes) Bio::Complete(std::move(f), st);
  for (auto& f : c->finishing) Bio::Complete(std::move(f), st);
  std::unique_lock lk(mu_);
  committing_ = false;
  Kick(lk);
}

void IntegrityDevice::SubmitData(std::unique_ptr<PendingWrite> w) {
  BioPtr bio = std::move(w->bio);
  const uint64_t first = w->first, count = w->count;
  Bio::Completion inner = std::move(bio->on_complete);
  bio->on_complete = [self = std::static_pointer_cast<IntegrityDevice>(shared_from_this()), first, count,
                      inner = std::move(inner)](BioPtr b, Status st) mutable {
    b->offset = first * kBlock;
    self->DataWritten(first, count, st.ok());
    if (inner) inner(std::move(b), std::move(st));
  };
  bio->offset = (geo_.data_start + first) * kBlock;
  lower_->Submit(std::move(bio));
}

void IntegrityDevice::DataWritten(uint64_t first, uint64_t count, bool ok) {
  if (!ok) counters_.errors.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lk(mu_);
  for (uint64_t b = first; b < first + count; b++) {
    BlockState& s = blocks_[b];
    s.phase = ok ? BlockState::kWritten : BlockState::kFailed;
    s.done_at = flushes_submitted_;
    unsettled_.insert(b);
  }
  data_in_flight_--;
  if (!waiting_writes_.empty() || !waiting_flushes_.empty() || !finishing_flushes_.empty()) Kick(lk);
}

// A failed write's block, after a flush: read what the medium holds to
// learn which of its two contents it is.
void IntegrityDevice::ReadBack(uint64_t block) {
  auto buf = AllocAligned(kBlock);
  auto r = Bio::Make(BioOp::kRead, (geo_.data_start + block) * kBlock, Stability::kStable);
  r->AddSegment(buf.get(), kBlock);
  r->on_complete = [self = std::static_pointer_cast<IntegrityDevice>(shared_from_this()), block, buf](BioPtr,
                                                                                                      Status st) {
    self->ResolveReadBack(block, buf.get(), st.ok());
  };
  lower_->Submit(std::move(r));
}

void IntegrityDevice::ResolveReadBack(uint64_t block, const std::byte* data, bool ok) {
  const uint32_t g = ok ? Guard(block, data) : 0;
  std::unique_lock lk(mu_);
  BlockState& s = blocks_[block];
  if (ok && s.count == 2 && (g == s.guard[1] || g == s.guard[0])) {
    s.guard[0] = g;
    s.count = 1;
  } else {
    // Neither content, or unreadable: the medium is damaged here. Accept
    // nothing until the block is rewritten.
    s.count = kLostMedium;
  }
  s.guard[1] = 0;
  s.phase = BlockState::kIdle;
  dirty_tag_blocks_.insert(block / kEntriesPerTagBlock);
  Kick(lk);
}

}  // namespace stablecache
