#include "block/write_intent.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "block/aligned_buffer.h"
#include "block/bio_join.h"

namespace stablecache {

namespace {
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBitsPerBlock = kBlock * 8;

void Pack(const std::vector<uint8_t>& bits, uint64_t block, std::byte* out) {
  std::memset(out, 0, kBlock);
  const uint64_t first = block * kBitsPerBlock;
  const uint64_t end = std::min<uint64_t>(bits.size(), first + kBitsPerBlock);
  for (uint64_t r = first; r < end; r++)
    if (bits[r]) out[(r - first) / 8] |= std::byte(1u << ((r - first) % 8));
}
}  // namespace

WriteIntent::WriteIntent(const BlockDevice* owner, std::vector<std::shared_ptr<BlockDevice>> legs, BitmapGeometry g,
                         LegHealth health)
    : owner_(owner),
      legs_(std::move(legs)),
      g_(g),
      health_(std::move(health)),
      active_(g.regions, 0),
      last_end_(g.regions, 0),
      want_(g.regions, 0),
      disk_(g.regions, 0),
      inflight_(g.regions, 0) {}

std::pair<uint64_t, uint64_t> WriteIntent::Regions(uint64_t offset, uint64_t len) const {
  const uint64_t first = offset / g_.region_bytes;
  const uint64_t end = (offset + std::max<uint64_t>(len, 1) + g_.region_bytes - 1) / g_.region_bytes;
  return {std::min(first, g_.regions), std::min(end, g_.regions)};
}

bool WriteIntent::ReadyLocked(uint64_t r0, uint64_t r1) const {
  for (uint64_t r = r0; r < r1; r++)
    if (!disk_[r] || (committing_ && !inflight_[r])) return false;
  return true;
}

void WriteIntent::BeginWrite(uint64_t r0, uint64_t r1, Go go) {
  std::unique_lock lk(mu_);
  for (uint64_t r = r0; r < r1; r++) {
    active_[r]++;
    want_[r] = 1;
    set_regions_.insert(r);
  }
  if (ReadyLocked(r0, r1)) {
    lk.unlock();
    return go(Status::Ok());
  }
  waiters_.push_back({r0, r1, std::move(go)});
  if (!committing_) StartCommitLocked(lk);
}

void WriteIntent::EndWrite(uint64_t r0, uint64_t r1) {
  std::lock_guard lk(mu_);
  for (uint64_t r = r0; r < r1; r++) {
    active_[r]--;
    last_end_[r] = flush_epoch_;
  }
}

uint64_t WriteIntent::FlushStarted() {
  std::lock_guard lk(mu_);
  return ++flush_epoch_;
}

void WriteIntent::FlushDone(uint64_t epoch, Go done) {
  std::unique_lock lk(mu_);
  bool cleared = false;
  for (auto it = set_regions_.begin(); it != set_regions_.end();) {
    const uint64_t r = *it;
    if (active_[r] == 0 && last_end_[r] < epoch) {
      want_[r] = 0;
      it = set_regions_.erase(it);
      cleared = true;
    } else {
      ++it;
    }
  }
  if (!cleared) {
    lk.unlock();
    return done(Status::Ok());
  }
  // The commit that writes these clears: the next one to start.
  flush_waiters_.emplace_back(commits_ + 1, std::move(done));
  if (!committing_) StartCommitLocked(lk);
}

size_t WriteIntent::DirtyRegions() const {
  std::lock_guard lk(mu_);
  return static_cast<size_t>(std::count(disk_.begin(), disk_.end(), uint8_t{1}));
}

uint64_t WriteIntent::commits() const {
  std::lock_guard lk(mu_);
  return commits_;
}

// Writes `want_` (as `inflight_`) to every leg: the bitmap blocks that
// differ from the medium, then a flush if any bit goes from clear to set
// (a write waits for it); clears need no flush (late is safe).
void WriteIntent::StartCommitLocked(std::unique_lock<std::mutex>& lk) {
  committing_ = true;
  commits_++;
  inflight_ = want_;
  bool need_flush = false;
  std::vector<uint64_t> blocks;
  for (uint64_t b = 0; b < g_.bitmap_blocks; b++) {
    bool changed = false;
    const uint64_t end = std::min<uint64_t>(g_.regions, (b + 1) * kBitsPerBlock);
    for (uint64_t r = b * kBitsPerBlock; r < end; r++) {
      if (inflight_[r] != disk_[r]) changed = true;
      if (inflight_[r] && !disk_[r]) need_flush = true;
    }
    if (changed) blocks.push_back(b);
  }
  auto buf = AllocAligned(std::max<size_t>(1, blocks.size()) * kBlock);
  for (size_t i = 0; i < blocks.size(); i++) Pack(inflight_, blocks[i], buf.get() + i * kBlock);
  lk.unlock();
  if (blocks.empty()) return CommitDone(Status::Ok());
  std::shared_ptr<const BlockDevice> keep = owner_->weak_from_this().lock();  // null for a stack object
  OnEveryLeg(BioOp::kWrite, buf, blocks, [this, need_flush, keep](Status st) {
    if (!st.ok() || !need_flush) return CommitDone(std::move(st));
    OnEveryLeg(BioOp::kFlush, nullptr, {}, [this, keep](Status fst) { CommitDone(std::move(fst)); });
  });
}

void WriteIntent::OnEveryLeg(BioOp op, const std::shared_ptr<std::byte>& buf, const std::vector<uint64_t>& blocks,
                             std::function<void(Status)> then) {
  struct Failed {
    std::mutex mu;
    std::vector<size_t> legs;
    size_t asked = 0;  // legs the operation went to
  };
  auto failed = std::make_shared<Failed>();
  auto join = BioJoin::Start(nullptr, [this, failed, then = std::move(then)](BioPtr, Status st) {
    // The error fails this commit (its writers see it, so no failure goes
    // unreported); the legs that failed are dropped, so a retry goes on
    // with the others. Every leg failing at once drops none.
    if (failed->legs.size() < failed->asked)
      for (size_t leg : failed->legs) health_.failed(leg);
    then(std::move(st));
  });
  auto submit = [&](size_t leg, BioPtr c) {
    auto counted = std::move(c->on_complete);
    c->on_complete = [this, counted = std::move(counted), leg, failed, op](BioPtr b, Status st) {
      if (!st.ok() && health_.failed) {  // the leg is dropped; the error still fails this commit
        std::lock_guard lk(failed->mu);
        failed->legs.push_back(leg);
      }
      counted(std::move(b), st.WithContext(fmt::format("{} the write-intent bitmap of leg {}",
                                                       op == BioOp::kFlush ? "flushing" : "writing", leg)));
    };
    legs_[leg]->Submit(std::move(c));
  };
  for (size_t leg = 0; leg < legs_.size(); leg++) {
    if (Skip(leg)) continue;
    failed->asked++;
    if (op == BioOp::kFlush) {
      submit(leg, join->Child(BioOp::kFlush, 0, Stability::kStable));
      continue;
    }
    for (size_t i = 0; i < blocks.size(); i++) {
      auto c = join->Child(BioOp::kWrite, g_.bitmap_offset + blocks[i] * kBlock, Stability::kStable);
      c->AddSegment(buf.get() + i * kBlock, kBlock);
      c->keep_alive.push_back(buf);
      submit(leg, std::move(c));
    }
  }
  join->Arm();
}

void WriteIntent::CommitDone(Status st) {
  std::vector<std::pair<Go, Status>> calls;
  std::unique_lock lk(mu_);
  if (st.ok()) {
    disk_ = inflight_;
  } else {
    // Unknown which legs got it: a bit counts as set only if it was set
    // before and stays set (safe both ways).
    for (size_t r = 0; r < disk_.size(); r++) disk_[r] = disk_[r] && inflight_[r];
  }
  committing_ = false;
  for (auto it = flush_waiters_.begin(); it != flush_waiters_.end();) {
    if (it->first > commits_) {
      ++it;
      continue;
    }
    calls.emplace_back(std::move(it->second), st);
    it = flush_waiters_.erase(it);
  }
  std::vector<Waiter> still;
  for (auto& w : waiters_) {
    if (ReadyLocked(w.r0, w.r1)) calls.emplace_back(std::move(w.go), Status::Ok());
    else if (!st.ok()) calls.emplace_back(std::move(w.go), st);
    else still.push_back(std::move(w));
  }
  waiters_ = std::move(still);
  if (!waiters_.empty() || !flush_waiters_.empty() || (st.ok() && want_ != disk_)) StartCommitLocked(lk);
  else lk.unlock();
  for (auto& [go, s] : calls) go(std::move(s));
}

Result<std::vector<bool>> WriteIntent::ReadDirty(const std::vector<BlockDevice*>& legs, const BitmapGeometry& g) {
  std::vector<bool> dirty(g.regions, false);
  auto buf = AllocAligned(kBlock);
  for (BlockDevice* leg : legs)
    for (uint64_t b = 0; b < g.bitmap_blocks; b++) {
      if (Status st = ReadSync(*leg, g.bitmap_offset + b * kBlock, buf.get(), kBlock); !st.ok())
        return Err(st.WithContext("reading the write-intent bitmap"));
      const uint64_t end = std::min<uint64_t>(g.regions, (b + 1) * kBitsPerBlock);
      for (uint64_t r = b * kBitsPerBlock; r < end; r++) {
        const uint64_t bit = r - b * kBitsPerBlock;
        if ((buf.get()[bit / 8] & std::byte(1u << (bit % 8))) != std::byte{0}) dirty[r] = true;
      }
    }
  return dirty;
}

Status WriteIntent::WriteClean(const std::vector<BlockDevice*>& legs, const BitmapGeometry& g,
                               const std::vector<uint64_t>& keep) {
  std::vector<uint8_t> bits(g.regions, 0);
  for (uint64_t r : keep)
    if (r < bits.size()) bits[r] = 1;
  auto buf = AllocAligned(kBlock);
  for (BlockDevice* leg : legs) {
    for (uint64_t b = 0; b < g.bitmap_blocks; b++) {
      Pack(bits, b, buf.get());
      SC_RETURN_IF_ERROR(WriteSync(*leg, g.bitmap_offset + b * kBlock, buf.get(), kBlock)
                             .WithContext("clearing the write-intent bitmap"));
    }
    SC_RETURN_IF_ERROR(FlushSync(*leg));
  }
  return Status::Ok();
}

}  // namespace stablecache
