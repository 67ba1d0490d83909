#include "devices/integrity_device.h"

#include <isa-l/crc.h>

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "block/bounce.h"

namespace stablecache {

namespace {
constexpr uint64_t kBlock = 4096;
}

Result<std::shared_ptr<IntegrityDevice>> IntegrityDevice::Create(std::shared_ptr<BlockDevice> lower,
                                                                 const IntegrityOptions& opts) {
  uint64_t blocks = lower->Info().size_bytes / kBlock;
  // data + ceil(data / 512) tag blocks must fit.
  uint64_t data = blocks * kTagsPerBlock / (kTagsPerBlock + 1);
  while (data > 0 && data + (data + kTagsPerBlock - 1) / kTagsPerBlock > blocks) data--;
  if (data == 0)
    return Err(Status::NoSpace(fmt::format("integrity: device '{}' ({} bytes) has no room for data and tags",
                                           lower->Info().name, lower->Info().size_bytes)));
  std::shared_ptr<IntegrityDevice> dev(new IntegrityDevice(std::move(lower), opts, data));
  if (Status st = dev->LoadTags(); !st.ok()) return Err(st);
  return dev;
}

IntegrityDevice::IntegrityDevice(std::shared_ptr<BlockDevice> lower, const IntegrityOptions& opts,
                                 uint64_t data_blocks)
    : StackedDevice(std::move(lower), opts.guard == GuardType::kCrc32c ? "integrity(crc32c)" : "integrity(crc16)",
                    opts.required),
      opts_(opts),
      data_blocks_(data_blocks),
      tag_offset_(data_blocks * kBlock),
      tags_(data_blocks, Tag{0, 0}) {
  info_.size_bytes = data_blocks * kBlock;
  info_.logical_block_size = kBlock;
}

uint32_t IntegrityDevice::Guard(const std::byte* block) const {
  auto* p = reinterpret_cast<const unsigned char*>(block);
  if (opts_.guard == GuardType::kCrc32c) return crc32_iscsi(const_cast<unsigned char*>(p), kBlock, 0xffffffff);
  return crc16_t10dif(0, p, kBlock);
}

Status IntegrityDevice::LoadTags() {
  uint64_t tag_blocks = (data_blocks_ + kTagsPerBlock - 1) / kTagsPerBlock;
  std::vector<Tag> buf(tag_blocks * kTagsPerBlock);
  SC_RETURN_IF_ERROR(ReadSync(*lower_, tag_offset_, buf.data(), static_cast<uint32_t>(tag_blocks * kBlock)));
  std::lock_guard lk(mu_);
  std::copy(buf.begin(), buf.begin() + data_blocks_, tags_.begin());
  return Status::Ok();
}

void IntegrityDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  StabilizeBio(*bio, opts_.required, counters_.bytes_bounced);
  switch (bio->op) {
    case BioOp::kWrite: return SubmitWrite(std::move(bio));
    case BioOp::kRead: return SubmitRead(std::move(bio));
    case BioOp::kFlush: return SubmitFlush(std::move(bio));
  }
}

// Calls fn(block number, block bytes) for each 4 KiB block of the payload.
// Segments may split a block; those blocks are gathered into scratch.
template <typename Fn>
static void ForEachBlock(const Bio& bio, Fn fn) {
  std::vector<std::byte> scratch;
  uint64_t block = bio.offset / kBlock;
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

void IntegrityDevice::SubmitWrite(BioPtr bio) {
  std::vector<std::pair<uint64_t, uint32_t>> fresh;
  ForEachBlock(*bio, [&](uint64_t b, const std::byte* data) { fresh.emplace_back(b, Guard(data)); });
  {
    std::lock_guard lk(mu_);
    for (auto [b, g] : fresh) {
      tags_[b] = Tag{g, static_cast<uint32_t>(b + 1)};
      dirty_tag_blocks_.insert(b / kTagsPerBlock);
    }
  }
  lower_->Submit(std::move(bio));
}

void IntegrityDevice::SubmitRead(BioPtr bio) {
  Bio::Completion inner = std::move(bio->on_complete);
  bio->on_complete = [this, inner = std::move(inner)](BioPtr b, Status st) mutable {
    if (st.ok()) {
      std::lock_guard lk(mu_);
      ForEachBlock(*b, [&](uint64_t blk, const std::byte* data) {
        const Tag& t = tags_[blk];
        if (!st.ok() || t.ref == 0) return;  // never written: nothing to check
        uint32_t g = Guard(data);
        if (t.ref != blk + 1 || g != t.guard) {
          counters_.integrity_errors.fetch_add(1, std::memory_order_relaxed);
          st = Status::IntegrityError(fmt::format(
              "{}: block {} (offset {}) fails its protection information: guard {:#x} stored, {:#x} computed",
              info_.name, blk, blk * kBlock, t.guard, g));
        }
      });
    }
    if (inner) inner(std::move(b), std::move(st));
  };
  lower_->Submit(std::move(bio));
}

// Flushes run their tag phase one at a time. A flush may complete only
// once every tag block dirtied before it is on the medium, including tag
// writes an earlier flush started and has not finished: so a flush that
// arrives while another one's tag writes are in flight waits for them, and
// the flushes that queued meanwhile share one tag phase of their own.
void IntegrityDevice::SubmitFlush(BioPtr flush) {
  {
    std::lock_guard lk(mu_);
    queued_flushes_.push_back(std::move(flush));
    if (flush_running_) return;
    flush_running_ = true;
  }
  StartTagPhase();
}

void IntegrityDevice::StartTagPhase() {
  // 1. Take the waiting flushes and snapshot the dirty tag blocks.
  std::vector<BioPtr> flushes;
  std::vector<std::pair<uint64_t, std::shared_ptr<std::vector<Tag>>>> writes;
  {
    std::lock_guard lk(mu_);
    flushes.swap(queued_flushes_);
    for (uint64_t tb : dirty_tag_blocks_) {
      auto buf = std::make_shared<std::vector<Tag>>(kTagsPerBlock, Tag{0, 0});
      uint64_t first = tb * kTagsPerBlock;
      uint64_t n = std::min<uint64_t>(kTagsPerBlock, data_blocks_ - first);
      std::copy(tags_.begin() + first, tags_.begin() + first + n, buf->begin());
      writes.emplace_back(tb, std::move(buf));
    }
    dirty_tag_blocks_.clear();
  }
  // 2. Write them; 3. once all have landed, flush below for each waiting
  //    flush and start the next phase if more flushes queued.
  struct Phase {
    std::atomic<size_t> left;
    std::mutex mu;
    Status status;  // GUARDED_BY(mu)
    std::vector<BioPtr> flushes;
  };
  auto phase = std::make_shared<Phase>();
  phase->left = writes.size() + 1;
  phase->flushes = std::move(flushes);
  // The flushes it completes may hold the last references to this device,
  // and the loop below still needs it.
  auto finish_one = [this, phase, self = weak_from_this()](const Status& st) {
    if (!st.ok()) {
      std::lock_guard lk(phase->mu);
      phase->status.Update(st);
    }
    if (phase->left.fetch_sub(1) != 1) return;
    auto keep = self.lock();
    Status tag_status;
    {
      std::lock_guard lk(phase->mu);
      tag_status = phase->status;
    }
    bool again;
    {
      std::lock_guard lk(mu_);
      // The tags did not land: write them all again next time.
      if (!tag_status.ok())
        for (uint64_t tb = 0; tb * kTagsPerBlock < data_blocks_; tb++) dirty_tag_blocks_.insert(tb);
      again = !queued_flushes_.empty();
      flush_running_ = again;
    }
    for (BioPtr& f : phase->flushes) {
      if (tag_status.ok()) lower_->Submit(std::move(f));
      else Bio::Complete(std::move(f), tag_status);
    }
    if (again) StartTagPhase();
  };
  for (auto& [tb, buf] : writes) {
    auto w = Bio::Make(BioOp::kWrite, tag_offset_ + tb * kBlock, Stability::kStable);
    w->AddSegment(buf->data(), kBlock);
    w->keep_alive.push_back(buf);
    w->on_complete = [finish_one](BioPtr, Status st) { finish_one(st); };
    lower_->Submit(std::move(w));
  }
  finish_one(Status::Ok());
}

}  // namespace stablecache
