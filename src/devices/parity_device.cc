#include "devices/parity_device.h"

#include <isa-l/raid.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <future>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "block/aligned_buffer.h"
#include "block/bounce.h"
#include "block/leg_runs.h"

namespace stablecache {

namespace {
constexpr uint64_t kChunk = 4096;
constexpr uint64_t kScrubStripes = 64;
}  // namespace

// A write, from its stripe lock to its completion.
struct ParityDevice::WriteOp {
  BioPtr parent;
  std::vector<std::byte*> blocks;  // the payload, one pointer per data block
  uint64_t first_block = 0;
  uint64_t s0 = 0, s1 = 0;             // stripes [s0, s1)
  std::shared_ptr<std::byte> scratch;  // per stripe: k chunks read back + parity
  RangeLock::Ticket ticket = 0;
  // Degraded: chunks of the rest of a stripe that could not be read, by
  // scratch slot ((stripe - s0) * N + d), rebuilt and written back.
  std::mutex mu;
  std::set<uint64_t> unreadable;      // GUARDED_BY(mu)
  Status first_error;                 // GUARDED_BY(mu)
  std::shared_ptr<std::byte> old;     // per unreadable slot: the stripe's old covered chunks + old parity
  std::vector<uint64_t> rebuilt;      // slots, written back with the stripe
  uint64_t r0 = 0, r1 = 0;            // bitmap regions held
  std::vector<size_t> failed_legs;    // GUARDED_BY(mu) legs that failed the data/parity write
};

// A read; the rebuild state is used only when a leg failed.
struct ParityDevice::ReadOp {
  BioPtr parent;
  std::vector<std::byte*> blocks;
  uint64_t first_block = 0;
  std::mutex mu;
  std::set<uint64_t> failed;  // GUARDED_BY(mu) block indices into `blocks`
  Status first_error;         // GUARDED_BY(mu)
  std::vector<uint64_t> lost;           // the failed blocks, once rebuilding
  std::shared_ptr<std::byte> scratch;  // per lost block: the N-1 other chunks
  RangeLock::Ticket ticket = 0;
};

Result<std::shared_ptr<ParityDevice>> ParityDevice::Create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                           const ParityOptions& opts) {
  if (legs.size() < 3)
    return Err(Status::InvalidArgument(fmt::format("parity needs at least 3 legs (2 data + parity), got {}", legs.size())));
  for (size_t i = 0; i < legs.size(); i++)
    if (legs[i]->Info().logical_block_size > kChunk)
      return Err(Status::InvalidArgument(fmt::format("parity leg {} has {}-byte blocks; chunks are 4096 bytes", i,
                                                     legs[i]->Info().logical_block_size)));
  auto m = ReadMembers(std::move(legs), {.magic = "SCPARITY", .layer = "parity", .chunk_bytes = kChunk, .max_stale = 1, .format = opts.format, .inspect = opts.inspect});
  if (!m) return Err(m.error());
  auto dev = std::shared_ptr<ParityDevice>(new ParityDevice(std::move(*m), opts));
  if (dev->info_.size_bytes == 0) return Err(Status::NoSpace("parity: a leg has no room for one stripe"));
  if (Status st = dev->members_->Assemble(dev->Hooks(), opts.progress); !st.ok()) return Err(st);
  if (opts.inspect) {  // nothing resynced: no reconstruction may use a dirty region's parity
    const uint64_t per = dev->members_->layout().bitmap.region_bytes / kChunk;
    std::lock_guard lk(dev->stale_mu_);
    for (uint64_t r : dev->members_->dirty_at_open())
      for (uint64_t st = r * per; st < (r + 1) * per; st++) dev->stale_stripes_.insert(st);
  }
  // Dirty stripes whose data could not be read stay parity-may-be-stale,
  // held in the bitmap, so no reconstruction ever uses their parity.
  for (uint64_t st : dev->stale_at_assembly_) dev->MarkStale(st, st + 1);
  for (uint64_t st : dev->stale_at_assembly_) {  // wait until the pins are on the medium
    auto done = std::make_shared<std::promise<Status>>();
    auto [r0, r1] = dev->intent_->Regions(st * kChunk, kChunk);
    dev->intent_->BeginWrite(r0, r1, [done](Status s) { done->set_value(s); });
    Status s = done->get_future().get();
    dev->intent_->EndWrite(r0, r1);
    if (!s.ok()) return Err(s);
  }
  return dev;
}

ParityDevice::ParityDevice(SetMembers m, const ParityOptions& opts) : FanoutDevice(m.legs, "parity", opts.required) {
  info_.size_bytes = m.layout.data_size / kChunk * data_legs() * kChunk;
  info_.logical_block_size = kChunk;
  AttachSet(std::move(m));
}

ResyncHooks ParityDevice::Hooks() {
  ResyncHooks h;
  h.resync_dirty = [this](uint64_t off, uint64_t len) { return ResyncStripes(off / kChunk, (off + len) / kChunk); };
  h.rebuild = [this](size_t leg, uint64_t off, uint64_t len) {
    return RebuildLeg(leg, off / kChunk, (off + len) / kChunk);
  };
  h.stale_leg_needs_clean_regions = true;
  h.keep_regions = [this] {
    std::vector<uint64_t> regions;
    const uint64_t rb = members_->layout().bitmap.region_bytes;
    for (uint64_t st : stale_at_assembly_) regions.push_back(st * kChunk / rb);
    return regions;
  };
  return h;
}

// Assembly: recomputes the parity of stripes [s0, s1) from their data. A
// stripe with an unreadable data chunk keeps its parity and is marked
// stale (its lost chunk can never be rebuilt from it).
Status ParityDevice::ResyncStripes(uint64_t s0, uint64_t s1) {
  const size_t n = legs_.size();
  const uint64_t count = s1 - s0;
  std::vector<std::shared_ptr<std::byte>> bufs(n);
  std::vector<std::vector<bool>> bad(n, std::vector<bool>(count, false));
  for (size_t leg = 0; leg < n; leg++) {
    bufs[leg] = AllocAligned(count * kChunk);
    const uint64_t at = data_offset_ + s0 * kChunk;
    if (ReadSync(*legs_[leg], at, bufs[leg].get(), static_cast<uint32_t>(count * kChunk)).ok()) continue;
    for (uint64_t i = 0; i < count; i++)
      bad[leg][i] = !ReadSync(*legs_[leg], at + i * kChunk, bufs[leg].get() + i * kChunk, kChunk).ok();
  }
  auto parity = AllocAligned(kChunk);
  std::vector<void*> vec(n);
  for (uint64_t i = 0; i < count; i++) {
    const uint64_t s = s0 + i;
    const size_t pleg = ParityPlace(s).leg;
    bool lost = false;
    size_t j = 0;
    for (size_t leg = 0; leg < n; leg++) {
      if (leg == pleg) continue;
      lost |= bad[leg][i];
      vec[j++] = bufs[leg].get() + i * kChunk;
    }
    if (lost) {
      stale_at_assembly_.push_back(s);
      continue;
    }
    vec[n - 1] = parity.get();
    xor_gen(static_cast<int>(n), kChunk, vec.data());
    if (!bad[pleg][i] && std::memcmp(parity.get(), bufs[pleg].get() + i * kChunk, kChunk) == 0) continue;
    SC_RETURN_IF_ERROR(WriteSync(*legs_[pleg], data_offset_ + s * kChunk, parity.get(), kChunk));
  }
  return Status::Ok();
}

// Assembly: leg `leg`'s chunks of stripes [s0, s1) as the XOR of the others.
Status ParityDevice::RebuildLeg(size_t leg, uint64_t s0, uint64_t s1) {
  const size_t n = legs_.size();
  const uint32_t len = static_cast<uint32_t>((s1 - s0) * kChunk);
  std::vector<std::shared_ptr<std::byte>> bufs;
  std::vector<void*> vec;
  for (size_t l = 0; l < n; l++) {
    if (l == leg) continue;
    bufs.push_back(AllocAligned(len));
    SC_RETURN_IF_ERROR(ReadSync(*legs_[l], data_offset_ + s0 * kChunk, bufs.back().get(), len)
                           .WithContext(fmt::format("parity leg {} (needed to rebuild leg {})", l, leg)));
  }
  auto out = AllocAligned(len);
  for (uint64_t i = 0; i < s1 - s0; i++) {
    vec.clear();
    for (auto& b : bufs) vec.push_back(b.get() + i * kChunk);
    vec.push_back(out.get() + i * kChunk);
    xor_gen(static_cast<int>(n), kChunk, vec.data());
  }
  return WriteSync(*legs_[leg], data_offset_ + s0 * kChunk, out.get(), len);
}

bool ParityDevice::StripeStale(uint64_t stripe) const { return FirstStale(stripe, stripe + 1).has_value(); }

size_t ParityDevice::StaleStripes() const {
  std::lock_guard lk(stale_mu_);
  return stale_stripes_.size();
}

std::optional<uint64_t> ParityDevice::FirstStale(uint64_t s0, uint64_t s1) const {
  std::lock_guard lk(stale_mu_);
  auto it = stale_stripes_.lower_bound(s0);
  if (it != stale_stripes_.end() && *it < s1) return *it;
  return std::nullopt;
}

// Each stale stripe holds its bitmap region set until its parity is recomputed.
void ParityDevice::MarkStale(uint64_t s0, uint64_t s1) {
  std::lock_guard lk(stale_mu_);
  for (uint64_t s = s0; s < s1; s++) {
    if (!stale_stripes_.insert(s).second) continue;
    auto [r0, r1] = intent_->Regions(s * kChunk, kChunk);
    intent_->Pin(r0, r1, [](Status) {});
  }
}

void ParityDevice::ClearStale(uint64_t s0, uint64_t s1) {
  std::lock_guard lk(stale_mu_);
  for (auto it = stale_stripes_.lower_bound(s0); it != stale_stripes_.end() && *it < s1;) {
    auto [r0, r1] = intent_->Regions(*it * kChunk, kChunk);
    intent_->Unpin(r0, r1);
    it = stale_stripes_.erase(it);
  }
}

ParityDevice::Place ParityDevice::ParityPlace(uint64_t stripe) const {
  const size_t n = legs_.size();
  return Place{n - 1 - stripe % n, data_offset_ + stripe * kChunk};
}

ParityDevice::Place ParityDevice::DataPlace(uint64_t block) const {
  const uint64_t stripe = block / data_legs();
  const size_t d = block % data_legs();
  return Place{(ParityPlace(stripe).leg + 1 + d) % legs_.size(), data_offset_ + stripe * kChunk};
}

void ParityDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  switch (bio->op) {
    case BioOp::kFlush: return FlushAll(std::move(bio));
    case BioOp::kWrite: return SubmitWrite(std::move(bio));
    case BioOp::kRead: return SubmitRead(std::move(bio));
  }
}

// ---- writes ---------------------------------------------------------------

Status ParityDevice::TwoLegsMissing() const {
  if (members_->missing_count() < 2) return Status::Ok();
  std::vector<size_t> gone;
  for (size_t l = 0; l < legs_.size(); l++)
    if (Missing(l)) gone.push_back(l);
  return Status::IoError(fmt::format(
      "parity: legs {} are behind (they failed writes); every stripe has lost two chunks and RAID-5 survives the "
      "loss of one leg: writes are refused",
      fmt::join(gone, " and ")));
}

void ParityDevice::SubmitWrite(BioPtr bio) {
  if (Status lost = TwoLegsMissing(); !lost.ok()) {
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    return Bio::Complete(std::move(bio), lost);
  }
  if (members_->any_missing())
    if (Status st = members_->RecordError(); !st.ok()) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      return Bio::Complete(std::move(bio), st.WithContext("parity: a leg is behind, and recording it on the other legs "
                                                          "failed; writes are refused until the set is assembled again"));
    }
  StabilizeBio(*bio, info_.required_stability, counters_.bytes_bounced);
  auto op = std::make_shared<WriteOp>();
  op->blocks = ContiguousBlocks(*bio, counters_.bytes_bounced);
  op->first_block = bio->offset / kChunk;
  op->s0 = op->first_block / data_legs();
  op->s1 = (op->first_block + op->blocks.size() - 1) / data_legs() + 1;
  op->scratch = AllocAligned((op->s1 - op->s0) * legs_.size() * kChunk);
  op->parent = std::move(bio);
  std::tie(op->r0, op->r1) = intent_->Regions(op->s0 * kChunk, (op->s1 - op->s0) * kChunk);
  // 1. The stripes' bitmap bits are durable on every leg; 2. the stripes are ours.
  intent_->BeginWrite(op->r0, op->r1, [this, op](Status st) {
    if (!st.ok()) {
      intent_->EndWrite(op->r0, op->r1);
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      return Bio::Complete(std::move(op->parent), st.WithContext("parity"));
    }
    stripe_locks_.Acquire(op->s0, op->s1, [this, op](RangeLock::Ticket t) {
      op->ticket = t;
      if (Status lost = TwoLegsMissing(); !lost.ok()) return FailWrite(op, lost);  // one may fail meanwhile
      ReadRestOfStripes(op);
    });
  });
}

namespace {
// The chunk of stripe s for data index d (d == k: parity) in a write.
std::byte* WriteChunk(const std::vector<std::byte*>& blocks, uint64_t first_block, std::byte* scratch, uint64_t s0,
                      size_t n, uint64_t s, size_t d, bool* covered) {
  const size_t k = n - 1;
  const uint64_t b = s * k + d;
  *covered = d < k && b >= first_block && b < first_block + blocks.size();
  if (*covered) return blocks[b - first_block];
  return scratch + ((s - s0) * n + d) * kChunk;
}
}  // namespace

void ParityDevice::ReadRestOfStripes(std::shared_ptr<WriteOp> op) {
  const size_t n = legs_.size(), k = data_legs();
  LegRuns runs(n);
  for (uint64_t s = op->s0; s < op->s1; s++)
    for (size_t d = 0; d < k; d++) {
      bool covered;
      std::byte* chunk = WriteChunk(op->blocks, op->first_block, op->scratch.get(), op->s0, n, s, d, &covered);
      if (covered) continue;
      Place p = DataPlace(s * k + d);
      if (Missing(p.leg)) {  // rebuilt from the rest of the stripe, like an unreadable one
        std::lock_guard lk(op->mu);
        op->unreadable.insert((s - op->s0) * n + d);
        op->first_error.Update(MissingLeg(p.leg));
        continue;
      }
      runs.Add(p.leg, p.offset, chunk, (s - op->s0) * n + d);
    }
  auto join = BioJoin::Start(nullptr, [this, op](BioPtr, Status) {
    bool degraded;
    {
      std::lock_guard lk(op->mu);
      degraded = !op->unreadable.empty();
    }
    if (!degraded) return WriteDataAndParity(op);
    RebuildForWrite(op);
  });
  SubmitRuns(join, BioOp::kRead, Stability::kStable, runs, [op](Bio& c, LegRuns::Run& r) {
    c.on_complete = [op, counted = std::move(c.on_complete), slots = r.tags, leg = r.leg](BioPtr b, Status st) {
      if (!st.ok()) {  // rebuilt from the rest of the stripe, not fatal yet
        std::lock_guard lk(op->mu);
        op->unreadable.insert(slots.begin(), slots.end());
        op->first_error.Update(st.WithContext(fmt::format("parity leg {}", leg)));
      }
      counted(std::move(b), Status::Ok());
    };
  });
  join->Arm();
}

// Fails a write before it wrote anything: the stripes are unchanged.
void ParityDevice::FailWrite(std::shared_ptr<WriteOp> op, const Status& st) {
  counters_.errors.fetch_add(1, std::memory_order_relaxed);
  stripe_locks_.Release(op->ticket);
  intent_->EndWrite(op->r0, op->r1);
  Bio::Complete(std::move(op->parent), st);
}

// The data and parity writes ended. The legs that failed are behind and
// missing from now on (marked before the stripe lock is released, so no
// read or write of these stripes uses them), recorded on the other legs
// before the write completes. If every leg not missing took the write,
// parity is the XOR of the intended data with the missing leg left out: the
// stripes are consistent. Otherwise (a second leg lost) their parity may be
// stale: marked, so no rebuild can use it.
void ParityDevice::EndWrite(std::shared_ptr<WriteOp> op, Status st, BioPtr parent) {
  std::vector<size_t> failed;
  {
    std::lock_guard lk(op->mu);
    failed = op->failed_legs;
  }
  std::sort(failed.begin(), failed.end());
  failed.erase(std::unique(failed.begin(), failed.end()), failed.end());
  for (size_t leg : failed) members_->LegFailedWrite(leg);
  if (failed.empty() || members_->missing_count() == 1) ClearStale(op->s0, op->s1);
  else MarkStale(op->s0, op->s1);
  stripe_locks_.Release(op->ticket);
  intent_->EndWrite(op->r0, op->r1);
  if (failed.empty()) counters_.repairs.fetch_add(op->rebuilt.size(), std::memory_order_relaxed);
  else counters_.errors.fetch_add(1, std::memory_order_relaxed);
  if (!members_->any_missing()) return Bio::Complete(std::move(parent), std::move(st));
  // A missing leg was skipped or has just failed: the write is acknowledged
  // only once the medium records that leg as behind.
  auto holder = std::make_shared<BioPtr>(std::move(parent));
  members_->AfterRecorded([holder, st = std::move(st)](Status bump) {
    Status result = bump.ok() ? st
                              : (st.ok() ? bump.WithContext("parity: a leg is behind, and recording it on the other legs failed; "
                                                           "writes are refused until the set is assembled again")
                                         : st.WithContext(fmt::format("(and recording the failed leg failed: {})",
                                                                      bump.message())));
    Bio::Complete(std::move(*holder), std::move(result));
  });
}

// A chunk the write needed could not be read: rebuild it from the stripe's
// old contents (the covered chunks before this write, and the old parity),
// then go on; the rebuilt chunk is written back with the stripe.
void ParityDevice::RebuildForWrite(std::shared_ptr<WriteOp> op) {
  const size_t n = legs_.size(), k = data_legs();
  std::vector<uint64_t> slots;
  {
    std::lock_guard lk(op->mu);
    slots.assign(op->unreadable.begin(), op->unreadable.end());
  }
  for (uint64_t slot : slots)
    if (auto stale = FirstStale(op->s0 + slot / n, op->s0 + slot / n + 1))
      return FailWrite(op, op->first_error.WithContext(fmt::format(
                               "parity: a chunk of stripe {} is unreadable and the stripe's parity may be stale (a "
                               "write to it failed); refusing to rebuild the chunk from it",
                               *stale)));
  for (size_t i = 1; i < slots.size(); i++)
    if (slots[i] / n == slots[i - 1] / n)
      return FailWrite(op, op->first_error.WithContext(fmt::format(
                               "parity: two chunks of stripe {} are unreadable; cannot update its parity",
                               op->s0 + slots[i] / n)));
  op->old = AllocAligned(slots.size() * n * kChunk);
  LegRuns runs(n);
  for (size_t i = 0; i < slots.size(); i++) {
    const uint64_t s = op->s0 + slots[i] / n;
    for (size_t d = 0; d <= k; d++) {
      bool covered = false;
      if (d < k) WriteChunk(op->blocks, op->first_block, op->scratch.get(), op->s0, n, s, d, &covered);
      if (d < k && !covered) continue;  // already read (or the lost one)
      Place p = d < k ? DataPlace(s * k + d) : ParityPlace(s);
      if (Missing(p.leg))
        return FailWrite(op, op->first_error.WithContext(fmt::format(
                                 "parity: two chunks of stripe {} are lost (one cannot be read, and leg {} is behind: "
                                 "it failed a write); cannot update the stripe",
                                 s, p.leg)));
      runs.Add(p.leg, p.offset, op->old.get() + (i * n + d) * kChunk, i);
    }
  }
  auto join = BioJoin::Start(nullptr, [this, op, slots, n, k](BioPtr, Status st) {
    if (!st.ok())
      return FailWrite(op, st.WithContext(fmt::format("parity: stripe {} has an unreadable chunk and cannot be rebuilt",
                                                      op->s0 + slots.front() / n)));
    std::vector<void*> vec(n);
    for (size_t i = 0; i < slots.size(); i++) {
      const uint64_t s = op->s0 + slots[i] / n;
      const size_t lost = slots[i] % n;
      size_t j = 0;
      for (size_t d = 0; d <= k; d++) {
        if (d == lost) continue;
        bool covered = false;
        std::byte* cur = d < k ? WriteChunk(op->blocks, op->first_block, op->scratch.get(), op->s0, n, s, d, &covered)
                               : nullptr;
        vec[j++] = (d == k || covered) ? op->old.get() + (i * n + d) * kChunk : cur;
      }
      vec[n - 1] = op->scratch.get() + slots[i] * kChunk;  // the lost chunk, rebuilt
      xor_gen(static_cast<int>(n), kChunk, vec.data());
      op->rebuilt.push_back(slots[i]);
    }
    counters_.degraded_reads.fetch_add(1, std::memory_order_relaxed);
    WriteDataAndParity(op);
  });
  SubmitRuns(join, BioOp::kRead, Stability::kStable, runs);
  join->Arm();
}

void ParityDevice::WriteDataAndParity(std::shared_ptr<WriteOp> op) {
  const size_t n = legs_.size(), k = data_legs();
  LegRuns runs(n);
  std::vector<void*> vec(n);
  for (uint64_t s = op->s0; s < op->s1; s++) {
    bool covered;
    for (size_t d = 0; d <= k; d++) {
      vec[d] = WriteChunk(op->blocks, op->first_block, op->scratch.get(), op->s0, n, s, d, &covered);
      if (covered) {
        Place p = DataPlace(s * k + d);
        if (!Missing(p.leg)) runs.Add(p.leg, p.offset, static_cast<std::byte*>(vec[d]), s);
      }
    }
    // vec[k] = XOR of the intended data, so a missing leg's chunk is
    // rebuilt from the others as what this write meant it to hold.
    xor_gen(static_cast<int>(n), kChunk, vec.data());
    Place p = ParityPlace(s);
    if (!Missing(p.leg)) runs.Add(p.leg, p.offset, static_cast<std::byte*>(vec[k]), s);
  }
  for (uint64_t slot : op->rebuilt) {  // repairs of chunks that could not be read
    const uint64_t s = op->s0 + slot / n;
    Place p = DataPlace(s * k + slot % n);
    if (!Missing(p.leg)) runs.Add(p.leg, p.offset, op->scratch.get() + slot * kChunk, s);
  }
  const Stability level = op->parent->stability;  // parity scratch is stable; the payload says its own
  auto join = BioJoin::Start(std::move(op->parent),
                             [this, op](BioPtr parent, Status st) { EndWrite(op, std::move(st), std::move(parent)); });
  SubmitRuns(join, BioOp::kWrite, level, runs, [op](Bio& c, LegRuns::Run& r) {
    c.on_complete = [op, counted = std::move(c.on_complete), leg = r.leg](BioPtr b, Status st) {
      if (!st.ok()) {
        std::lock_guard lk(op->mu);
        op->failed_legs.push_back(leg);
      }
      counted(std::move(b), st.WithContext(fmt::format("parity leg {}", leg)));
    };
  });
  join->Arm();
}

// ---- reads ----------------------------------------------------------------

void ParityDevice::SubmitRead(BioPtr bio) {
  auto op = std::make_shared<ReadOp>();
  op->blocks = ContiguousBlocks(*bio, counters_.bytes_bounced);
  op->first_block = bio->offset / kChunk;
  op->parent = std::move(bio);
  LegRuns runs(legs_.size());
  const bool any_missing = members_->any_missing();
  for (uint64_t i = 0; i < op->blocks.size(); i++) {
    Place p = DataPlace(op->first_block + i);
    if (any_missing && Missing(p.leg)) {  // never read: rebuilt from the rest of its stripe
      std::lock_guard lk(op->mu);
      op->failed.insert(i);
      op->first_error.Update(MissingLeg(p.leg));
      continue;
    }
    runs.Add(p.leg, p.offset, op->blocks[i], i);
  }
  auto join = BioJoin::Start(nullptr, [this, op](BioPtr, Status) {
    bool any_failed;
    {
      std::lock_guard lk(op->mu);
      any_failed = !op->failed.empty();
    }
    if (!any_failed) return Bio::Complete(std::move(op->parent), Status::Ok());
    FindFailedBlocks(op);
  });
  SubmitRuns(join, BioOp::kRead, Stability::kStable, runs, [op](Bio& c, LegRuns::Run& r) {
    c.on_complete = [op, counted = std::move(c.on_complete), tags = std::move(r.tags), leg = r.leg](BioPtr b,
                                                                                                    Status st) {
      if (!st.ok()) {
        std::lock_guard lk(op->mu);
        op->failed.insert(tags.begin(), tags.end());
        op->first_error.Update(st.WithContext(fmt::format("parity leg {}", leg)));
      }
      counted(std::move(b), Status::Ok());  // a failed leg is rebuilt, not passed up
    };
  });
  join->Arm();
}

// A leg failed a run of several blocks: re-read each block alone, so only
// the blocks that really fail are rebuilt and repaired.
void ParityDevice::FindFailedBlocks(std::shared_ptr<ReadOp> op) {
  std::vector<uint64_t> failed;
  {
    std::lock_guard lk(op->mu);
    failed.assign(op->failed.begin(), op->failed.end());
  }
  if (failed.size() == 1) return Rebuild(op);
  auto join = BioJoin::Start(nullptr, [this, op](BioPtr, Status) {
    bool any;
    {
      std::lock_guard lk(op->mu);
      any = !op->failed.empty();
    }
    if (!any) return Bio::Complete(std::move(op->parent), Status::Ok());
    Rebuild(op);
  });
  for (uint64_t i : failed) {
    Place p = DataPlace(op->first_block + i);
    if (Missing(p.leg)) continue;  // stays failed
    auto c = join->Child(BioOp::kRead, p.offset, Stability::kStable);
    c->AddSegment(op->blocks[i], kChunk);
    auto counted = std::move(c->on_complete);
    c->on_complete = [op, i, counted = std::move(counted)](BioPtr b, Status st) {
      if (st.ok()) {
        std::lock_guard lk(op->mu);
        op->failed.erase(i);
      }
      counted(std::move(b), Status::Ok());
    };
    legs_[p.leg]->Submit(std::move(c));
  }
  join->Arm();
}

void ParityDevice::Rebuild(std::shared_ptr<ReadOp> op) {
  counters_.degraded_reads.fetch_add(1, std::memory_order_relaxed);
  op->lost.assign(op->failed.begin(), op->failed.end());
  const uint64_t k = data_legs();
  const uint64_t s0 = (op->first_block + op->lost.front()) / k;
  const uint64_t s1 = (op->first_block + op->lost.back()) / k + 1;
  stripe_locks_.Acquire(s0, s1, [this, op](RangeLock::Ticket t) {
    op->ticket = t;
    RebuildRead(op);
  });
}

// Under the stripe lock: reads the other N-1 chunks of each lost block's stripe.
void ParityDevice::RebuildRead(std::shared_ptr<ReadOp> op) {
  const size_t n = legs_.size(), k = data_legs();
  for (uint64_t lost : op->lost) {
    const uint64_t block = op->first_block + lost;
    auto stale = FirstStale(block / k, block / k + 1);
    if (!stale) continue;
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    stripe_locks_.Release(op->ticket);
    Status first;
    {
      std::lock_guard lk(op->mu);
      first = op->first_error;
    }
    return Bio::Complete(std::move(op->parent),
                         first.WithContext(fmt::format(
                             "parity: block {} cannot be read and stripe {}'s parity may be stale (a write to the "
                             "stripe failed); refusing to rebuild the block from it",
                             block, *stale)));
  }
  op->scratch = AllocAligned(op->lost.size() * (n - 1) * kChunk);
  LegRuns runs(n);
  for (size_t i = 0; i < op->lost.size(); i++) {
    const uint64_t block = op->first_block + op->lost[i];
    const uint64_t s = block / k;
    const size_t lost_leg = DataPlace(block).leg;
    std::byte* dst = op->scratch.get() + i * (n - 1) * kChunk;
    for (size_t leg = 0; leg < n; leg++) {
      if (leg == lost_leg) continue;
      if (Missing(leg)) {
        counters_.errors.fetch_add(1, std::memory_order_relaxed);
        stripe_locks_.Release(op->ticket);
        Status first;
        {
          std::lock_guard lk(op->mu);
          first = op->first_error;
        }
        return Bio::Complete(std::move(op->parent),
                             first.WithContext(fmt::format(
                                 "parity: block {} cannot be read and stripe {} cannot rebuild it: its chunk on leg {} "
                                 "is lost too (that leg is behind: it failed a write)",
                                 block, s, leg)));
      }
      runs.Add(leg, data_offset_ + s * kChunk, dst, i);
      dst += kChunk;
    }
  }
  auto join = BioJoin::Start(nullptr, [this, op](BioPtr, Status st) {
    if (st.ok()) return FinishRebuild(op);
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    stripe_locks_.Release(op->ticket);
    Status first;
    {
      std::lock_guard lk(op->mu);
      first = op->first_error;
    }
    Bio::Complete(std::move(op->parent),
                  first.WithContext(fmt::format("parity: block {} is unreadable and its stripe cannot be rebuilt ({})",
                                                op->first_block + op->lost.front(), st.message())));
  });
  SubmitRuns(join, BioOp::kRead, Stability::kStable, runs);
  join->Arm();
}

// XORs the rebuilt chunks into the caller's memory, completes the read, and
// writes them back to the leg that failed.
void ParityDevice::FinishRebuild(std::shared_ptr<ReadOp> op) {
  const size_t n = legs_.size();
  auto repair = AllocAligned(op->lost.size() * kChunk);
  std::vector<void*> vec(n);
  for (size_t i = 0; i < op->lost.size(); i++) {
    for (size_t j = 0; j < n - 1; j++) vec[j] = op->scratch.get() + (i * (n - 1) + j) * kChunk;
    vec[n - 1] = repair.get() + i * kChunk;
    xor_gen(static_cast<int>(n), kChunk, vec.data());
    std::memcpy(op->blocks[op->lost[i]], vec[n - 1], kChunk);
  }
  LegRuns runs(n);
  for (size_t i = 0; i < op->lost.size(); i++) {
    Place p = DataPlace(op->first_block + op->lost[i]);
    if (!Missing(p.leg)) runs.Add(p.leg, p.offset, repair.get() + i * kChunk, i);
  }
  // The read completes after its repair: nothing of this device may run
  // after the caller's completion (it may drop the stack right then).
  auto join = BioJoin::Start(nullptr, [this, op](BioPtr, Status st) {
    if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);  // the next read retries
    stripe_locks_.Release(op->ticket);
    Bio::Complete(std::move(op->parent), Status::Ok());
  });
  SubmitRuns(join, BioOp::kWrite, Stability::kStable, runs, [this, repair](Bio& c, LegRuns::Run& r) {
    c.keep_alive.push_back(repair);
    c.on_complete = [this, counted = std::move(c.on_complete), blocks = r.tags.size()](BioPtr b, Status st) {
      if (st.ok()) counters_.repairs.fetch_add(blocks, std::memory_order_relaxed);
      counted(std::move(b), std::move(st));
    };
  });
  join->Arm();
}

void ParityDevice::SubmitRuns(const std::shared_ptr<BioJoin>& join, BioOp op, Stability level, LegRuns& runs,
                              const std::function<void(Bio&, LegRuns::Run&)>& decorate) {
  for (auto& r : runs.runs()) {
    auto c = join->Child(op, r.offset, level);
    c->segments = std::move(r.segments);
    if (decorate) decorate(*c, r);
    legs_[r.leg]->Submit(std::move(c));
  }
}

// ---- scrub ----------------------------------------------------------------

std::pair<uint64_t, uint64_t> ParityDevice::StripeRange(uint64_t offset, uint64_t len) const {
  const uint64_t k = data_legs();
  return {offset / kChunk / k, ((offset + len + kChunk - 1) / kChunk + k - 1) / k};
}

std::pair<uint64_t, uint64_t> ParityDevice::LegRange(uint64_t offset, uint64_t len) const {
  auto [first, end] = StripeRange(offset, len);
  return {first * kChunk, (end - first) * kChunk};
}

Status ParityDevice::ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) {
  const size_t n = legs_.size();
  auto [first, end] = StripeRange(offset, len);
  std::vector<std::shared_ptr<std::byte>> bufs(n);
  // A one-page scrub (the live checker's) needs one stripe, not a batch.
  for (auto& b : bufs) b = AllocAligned(std::min(kScrubStripes, end - first) * kChunk);
  std::vector<void*> vec(n);
  for (uint64_t s0 = first; s0 < end; s0 += kScrubStripes) {
    const uint64_t count = std::min(kScrubStripes, end - s0);
    // No write may update these stripes while we compare them.
    struct Unlock {
      RangeLock& l;
      RangeLock::Ticket t;
      ~Unlock() { l.Release(t); }
    } unlock{stripe_locks_, stripe_locks_.AcquireSync(s0, s0 + count)};
    // Per stripe: the legs whose chunk could not be read, and why.
    std::vector<std::string> why(count);
    std::vector<size_t> failed(count, 0), failed_leg(count, 0);
    for (size_t leg = 0; leg < n; leg++) {
      const uint64_t at = data_offset_ + s0 * kChunk;
      if (Missing(leg)) {  // never read: each stripe is degraded
        for (uint64_t i = 0; i < count; i++) {
          failed[i]++;
          failed_leg[i] = leg;
          why[i] += fmt::format("{}{}", why[i].empty() ? "" : "; ", MissingLeg(leg).message());
        }
        continue;
      }
      if (ReadSync(*legs_[leg], at, bufs[leg].get(), static_cast<uint32_t>(count * kChunk)).ok()) continue;
      for (uint64_t i = 0; i < count; i++) {
        Status st = ReadSync(*legs_[leg], at + i * kChunk, bufs[leg].get() + i * kChunk, kChunk);
        if (st.ok()) continue;
        failed[i]++;
        failed_leg[i] = leg;
        why[i] += fmt::format("{}leg {}: {}", why[i].empty() ? "" : "; ", leg, st.message());
      }
    }
    bool wrote = false;
    // Repair writes go straight to the legs, under the stripe lock.
    auto rewrite = [&](uint64_t i, size_t leg) -> Status {
      const uint64_t s = s0 + i;
      SC_RETURN_IF_ERROR(WriteSync(*legs_[leg], data_offset_ + s * kChunk, bufs[leg].get() + i * kChunk, kChunk)
                             .WithContext(fmt::format("parity: repairing stripe {} on leg {}", s, leg)));
      report.repaired++;
      counters_.repairs.fetch_add(1, std::memory_order_relaxed);
      wrote = true;
      return Status::Ok();
    };
    for (uint64_t i = 0; i < count; i++) {
      const uint64_t s = s0 + i;
      const bool stale = StripeStale(s);
      for (size_t leg = 0; leg < n; leg++) vec[leg] = bufs[leg].get() + i * kChunk;
      // One lost chunk is rebuilt from the rest of its stripe (degraded),
      // unless its parity may be stale; two lose data (unreadable).
      if (failed[i] != 0) {
        const bool rebuildable = failed[i] == 1 && !stale;
        report.Add({rebuildable ? ScrubFinding::Kind::kDegraded : ScrubFinding::Kind::kUnreadable, info_.name, s,
                    stale && failed[i] == 1
                        ? fmt::format("{}; the stripe's parity may be stale, so the chunk cannot be rebuilt", why[i])
                        : why[i]});
        if (!report.repair || !rebuildable || Missing(failed_leg[i])) continue;
        std::swap(vec[failed_leg[i]], vec[n - 1]);  // the lost chunk is the XOR of the others
        xor_gen(static_cast<int>(n), kChunk, vec.data());
        SC_RETURN_IF_ERROR(rewrite(i, failed_leg[i]));
        continue;
      }
      if (xor_check(static_cast<int>(n), kChunk, vec.data()) != 0) {
        counters_.parity_mismatch.fetch_add(1, std::memory_order_relaxed);
        report.Add({ScrubFinding::Kind::kParityMismatch, info_.name, s,
                    fmt::format("stripe {} (data blocks {}..{}): parity is not the XOR of the data{}", s,
                                s * data_legs(), (s + 1) * data_legs() - 1,
                                report.repair ? "; parity recomputed from the data" : "")});
        if (!report.repair) continue;
        const size_t pleg = ParityPlace(s).leg;
        std::swap(vec[pleg], vec[n - 1]);
        xor_gen(static_cast<int>(n), kChunk, vec.data());  // the data chunks read fine: they are the truth
        SC_RETURN_IF_ERROR(rewrite(i, pleg));
      }
      // Every chunk read, and parity now matches: the stripe is no longer stale.
      if (report.repair && stale) ClearStale(s, s + 1);
    }
    if (wrote)
      for (size_t leg = 0; leg < n; leg++)
        SC_RETURN_IF_ERROR(FlushSync(*legs_[leg]).WithContext(fmt::format("parity: flushing repairs on leg {}", leg)));
    report.blocks_checked += count * data_legs();
  }
  return Status::Ok();
}

}  // namespace stablecache
