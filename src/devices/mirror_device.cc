#include "devices/mirror_device.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "block/aligned_buffer.h"
#include "block/bounce.h"

namespace stablecache {

namespace {
constexpr uint64_t kBlock = 4096;
constexpr uint32_t kScrubChunk = 256 << 10;
}  // namespace

// One read's progress. Steps run one after another (each leg read is
// submitted from the previous one's completion), so no lock.
struct MirrorDevice::Read {
  BioPtr parent;
  std::vector<BioSegment> segs;  // the caller's memory
  uint64_t offset = 0, len = 0;
  size_t first_leg = 0;
  Status first_error;
  RangeLock::Ticket ticket = 0;
  // Recovery, block by block, under the range lock.
  std::shared_ptr<std::byte> flat;  // the range, gathered block by block
  uint64_t block = 0;               // the block being recovered
  size_t tries = 0;                 // legs tried for it so far
  std::vector<std::pair<size_t, Status>> block_errors;  // its failed legs
  std::vector<std::pair<uint64_t, size_t>> repairs;     // (block, leg) to rewrite
};

Result<std::shared_ptr<MirrorDevice>> MirrorDevice::Create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                           const MirrorOptions& opts) {
  if (legs.size() < 2) return Err(Status::InvalidArgument(fmt::format("mirror needs at least 2 legs, got {}", legs.size())));
  const size_t n = legs.size();
  auto m = ReadMembers(std::move(legs), {.magic = "SCMIRROR", .layer = "mirror", .chunk_bytes = 4096, .max_stale = n - 1, .format = opts.format, .inspect = opts.inspect});
  if (!m) return Err(m.error());
  size_t source = 0;
  while (m->stale[source]) source++;
  const std::vector<bool> stale = m->stale;
  auto dev = std::shared_ptr<MirrorDevice>(new MirrorDevice(std::move(*m), opts));
  if (Status st = dev->members_->Assemble(dev->Hooks(source, stale), opts.progress); !st.ok()) return Err(st);
  return dev;
}

MirrorDevice::MirrorDevice(SetMembers m, const MirrorOptions& opts)
    : FanoutDevice(m.legs, "mirror", opts.required) {
  info_.size_bytes = m.layout.data_size / info_.logical_block_size * info_.logical_block_size;
  AttachSet(std::move(m));
}

// Copies [off, off + len) of leg data from `source` to the legs `to`; a
// block the source cannot read comes from the first other current leg
// that can (never from a stale one: it holds old data).
Status MirrorDevice::CopyRange(size_t source, const std::vector<size_t>& to, const std::vector<bool>& stale,
                               uint64_t off, uint64_t len) {
  auto buf = AllocAligned(len);
  const uint32_t n32 = static_cast<uint32_t>(len);
  if (!ReadSync(*legs_[source], data_offset_ + off, buf.get(), n32).ok()) {
    for (uint64_t b = 0; b < len; b += kBlock) {
      Status st = ReadSync(*legs_[source], data_offset_ + off + b, buf.get() + b, kBlock);
      for (size_t l = 0; !st.ok() && l < legs_.size(); l++) {
        if (l == source || stale[l]) continue;
        st = ReadSync(*legs_[l], data_offset_ + off + b, buf.get() + b, kBlock);
      }
      if (!st.ok()) return st.WithContext(fmt::format("mirror: no current leg can read leg offset {}", off + b));
    }
  }
  for (size_t l : to) SC_RETURN_IF_ERROR(WriteSync(*legs_[l], data_offset_ + off, buf.get(), n32));
  return Status::Ok();
}

ResyncHooks MirrorDevice::Hooks(size_t source, std::vector<bool> stale) {
  ResyncHooks h;
  h.resync_dirty = [this, source, stale](uint64_t off, uint64_t len) {
    std::vector<size_t> others;
    for (size_t l = 0; l < legs_.size(); l++)
      if (l != source) others.push_back(l);
    return CopyRange(source, others, stale, off, len);
  };
  h.rebuild = [this, source, stale](size_t leg, uint64_t off, uint64_t len) {
    return CopyRange(source, {leg}, stale, off, len);
  };
  return h;
}

void MirrorDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  switch (bio->op) {
    case BioOp::kFlush: return FlushAll(std::move(bio));
    case BioOp::kWrite: return SubmitWrite(std::move(bio));
    case BioOp::kRead: break;
  }
  auto r = std::make_shared<Read>();
  r->segs = bio->segments;
  r->offset = bio->offset;
  r->len = bio->Length();
  r->first_leg = next_leg_.fetch_add(1, std::memory_order_relaxed) % legs_.size();
  r->parent = std::move(bio);
  if (members_->any_missing() && Missing(r->first_leg)) {  // a missing leg is never read
    size_t tries = 1;
    while (tries < legs_.size() && Missing((r->first_leg + tries) % legs_.size())) tries++;
    if (tries == legs_.size()) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      return Bio::Complete(std::move(r->parent),
                           Status::IoError("mirror: every leg is behind (each failed a write); nothing can be read "
                                           "until the set is assembled again"));
    }
    r->first_leg = (r->first_leg + tries) % legs_.size();
  }
  auto c = Bio::Make(BioOp::kRead, data_offset_ + r->offset, Stability::kStable);
  c->segments = r->segs;
  c->on_complete = [this, r](BioPtr, Status st) {
    if (st.ok()) return Bio::Complete(std::move(r->parent), Status::Ok());
    r->first_error = st.WithContext(fmt::format("mirror leg {}", r->first_leg));
    StartRecovery(r);
  };
  legs_[r->first_leg]->Submit(std::move(c));
}

// Recover with writes to the range held off, so a good copy we read is
// still the newest when we write it over a bad one.
void MirrorDevice::StartRecovery(std::shared_ptr<Read> r) {
  locks_.Acquire(r->offset, r->offset + r->len, [this, r](RangeLock::Ticket t) {
    r->ticket = t;
    r->flat = AllocAligned(r->len);
    RecoverBlock(r);
  });
}

void MirrorDevice::SubmitWrite(BioPtr bio) {
  if (members_->any_missing())
    if (Status st = members_->RecordError(); !st.ok()) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      return Bio::Complete(std::move(bio), st.WithContext("mirror: a leg is behind, and recording it on the other legs "
                                                          "failed; writes are refused until the set is assembled again"));
    }
  StabilizeBio(*bio, info_.required_stability, counters_.bytes_bounced);
  const uint64_t off = bio->offset, len = bio->Length();
  const auto regions = intent_->Regions(off, len);
  const uint64_t r0 = regions.first, r1 = regions.second;
  auto holder = std::make_shared<BioPtr>(std::move(bio));
  // 1. The regions' bits are durable on every leg; 2. the range is ours.
  intent_->BeginWrite(r0, r1, [this, holder, off, len, r0, r1](Status st) {
    if (!st.ok()) {
      intent_->EndWrite(r0, r1);
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      return Bio::Complete(std::move(*holder), st.WithContext("mirror"));
    }
    locks_.Acquire(off, off + len, [this, holder, r0, r1](RangeLock::Ticket t) {
      WriteLegs(std::move(*holder), t, r0, r1);
    });
  });
}

void MirrorDevice::WriteLegs(BioPtr parent, RangeLock::Ticket t, uint64_t r0, uint64_t r1) {
  const uint64_t off = parent->offset;
  const std::vector<BioSegment> segs = parent->segments;
  const Stability level = parent->stability;
  struct Failed {
    std::mutex mu;
    std::vector<size_t> legs;
  };
  auto failed = std::make_shared<Failed>();
  if (members_->missing_count() == legs_.size()) {
    locks_.Release(t);
    intent_->EndWrite(r0, r1);
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    return Bio::Complete(std::move(parent),
                         Status::IoError(fmt::format("mirror: every leg is behind (each failed a write); offset {} "
                                                     "cannot be written until the set is assembled again",
                                                     off)));
  }
  auto join = BioJoin::Start(std::move(parent), [this, t, failed, r0, r1](BioPtr p, Status st) {
    std::vector<size_t> f;
    {
      std::lock_guard lk(failed->mu);
      f = failed->legs;
    }
    FinishWrite(std::move(p), std::move(st), std::move(f), t, r0, r1);
  });
  for (size_t i = 0; i < legs_.size(); i++) {
    if (Missing(i)) continue;  // never written: rebuilt whole at the next assembly
    auto c = join->Child(BioOp::kWrite, data_offset_ + off, level);
    c->segments = segs;
    auto counted = std::move(c->on_complete);
    c->on_complete = [counted = std::move(counted), i, failed](BioPtr b, Status st) {
      if (!st.ok()) {
        std::lock_guard lk(failed->mu);
        failed->legs.push_back(i);
      }
      counted(std::move(b), st.WithContext(fmt::format("mirror leg {}", i)));
    };
    legs_[i]->Submit(std::move(c));
  }
  join->Arm();
}

// Legs that failed the write are behind, missing from now on (marked
// before the range lock is released, so no later read uses their old
// copies), and recorded on the other legs before the write completes: even
// a crash right after leaves them stale for the next assembly. A write
// that skipped a missing leg waits for that record too.
void MirrorDevice::FinishWrite(BioPtr parent, Status st, std::vector<size_t> failed, RangeLock::Ticket t, uint64_t r0,
                               uint64_t r1) {
  for (size_t leg : failed) members_->LegFailedWrite(leg);
  locks_.Release(t);
  intent_->EndWrite(r0, r1);
  if (!failed.empty()) counters_.errors.fetch_add(1, std::memory_order_relaxed);
  if (!members_->any_missing()) return Bio::Complete(std::move(parent), std::move(st));
  auto holder = std::make_shared<BioPtr>(std::move(parent));
  members_->AfterRecorded([holder, st = std::move(st)](Status bump) {
    Status result = bump.ok() ? st
                              : (st.ok() ? bump.WithContext("mirror: a leg is behind, and recording it on the other legs failed; "
                                                           "writes are refused until the set is assembled again")
                                         : st.WithContext(fmt::format("(and the events bump failed: {})", bump.message())));
    Bio::Complete(std::move(*holder), std::move(result));
  });
}

// Reads block r->block from the next leg to try; every block is read from
// the first leg that can, so one bad block on each leg still reads.
void MirrorDevice::RecoverBlock(std::shared_ptr<Read> r) {
  const size_t leg = (r->first_leg + r->tries) % legs_.size();
  if (Missing(leg)) return BlockRead(std::move(r), leg, MissingLeg(leg));  // never read
  auto c = Bio::Make(BioOp::kRead, data_offset_ + r->offset + r->block * kBlock, Stability::kStable);
  c->AddSegment(r->flat.get() + r->block * kBlock, kBlock);
  c->on_complete = [this, r, leg](BioPtr, Status st) { BlockRead(r, leg, std::move(st)); };
  legs_[leg]->Submit(std::move(c));
}

void MirrorDevice::BlockRead(std::shared_ptr<Read> r, size_t leg, Status st) {
  if (!st.ok()) {
    r->block_errors.emplace_back(leg, std::move(st));
    if (++r->tries < legs_.size()) return RecoverBlock(std::move(r));
    // No leg holds this block: the read fails, naming every leg's error.
    std::string why;
    for (auto& [l, e] : r->block_errors) why += fmt::format("; leg {}: {}", l, e.message());
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    // The code is the first leg's (an integrity error stays one). Blocks
    // recovered before this one are still repaired.
    Status first = r->block_errors.front().second;
    return Repair(std::move(r), first.WithContext(fmt::format("mirror: no leg could read block {} (offset {}){}; first",
                                                              (r->offset >> 12) + r->block,
                                                              r->offset + r->block * kBlock, why)));
  }
  for (auto& [bad, e] : r->block_errors)
    if (!Missing(bad)) r->repairs.emplace_back(r->block, bad);
  r->block_errors.clear();
  r->tries = 0;
  if (++r->block < r->len / kBlock) return RecoverBlock(std::move(r));
  r->parent->CopyFrom(r->flat.get());
  Repair(std::move(r), Status::Ok());
}

// Writes each recovered block over the copies that failed it, then
// completes the read with `result`: the caller sees the read end only once the legs hold
// good copies again, and nothing of this device runs after its completion
// (the caller may drop the stack the moment its read is done).
void MirrorDevice::Repair(std::shared_ptr<Read> r, Status result) {
  if (!r->repairs.empty() && result.ok()) counters_.degraded_reads.fetch_add(1, std::memory_order_relaxed);
  auto join = BioJoin::Start(nullptr, [this, r, result = std::move(result)](BioPtr, Status st) mutable {
    if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);  // the next read retries
    locks_.Release(r->ticket);
    Bio::Complete(std::move(r->parent), std::move(result));
  });
  for (const auto& repair : r->repairs) {
    const uint64_t block = repair.first;
    const size_t leg = repair.second;
    auto c = join->Child(BioOp::kWrite, data_offset_ + r->offset + block * kBlock, Stability::kStable);
    c->AddSegment(r->flat.get() + block * kBlock, kBlock);
    auto counted = std::move(c->on_complete);
    c->on_complete = [this, counted = std::move(counted)](BioPtr b, Status st) {
      if (st.ok()) counters_.repairs.fetch_add(1, std::memory_order_relaxed);
      counted(std::move(b), std::move(st));
    };
    legs_[leg]->Submit(std::move(c));
  }
  join->Arm();
}

Status MirrorDevice::ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) {
  const uint64_t end = (offset + len + kBlock - 1) / kBlock * kBlock;
  for (uint64_t off = offset / kBlock * kBlock; off < end; off += kScrubChunk) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kScrubChunk, end - off));
    RangeLock::Ticket t = locks_.AcquireSync(off, off + n);  // no write or repair of it meanwhile
    Status st = ScrubChunk(off, n, report);
    locks_.Release(t);
    SC_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Status MirrorDevice::ScrubChunk(uint64_t offset, uint32_t len, ScrubReport& report) {
  const size_t n = legs_.size();
  const uint64_t blocks = len / kBlock;
  std::vector<std::shared_ptr<std::byte>> bufs(n);
  // errors[i][b]: why leg i could not read block b (empty: it could).
  std::vector<std::vector<std::string>> errors(n, std::vector<std::string>(blocks));
  for (size_t i = 0; i < n; i++) {
    bufs[i] = AllocAligned(len);
    if (Missing(i)) {  // never read, never repaired here: rebuilt whole at the next assembly
      for (uint64_t b = 0; b < blocks; b++) errors[i][b] = MissingLeg(i).message();
      continue;
    }
    if (ReadSync(*legs_[i], data_offset_ + offset, bufs[i].get(), len).ok()) continue;
    for (uint64_t b = 0; b < blocks; b++) {  // find which blocks
      Status st = ReadSync(*legs_[i], data_offset_ + offset + b * kBlock, bufs[i].get() + b * kBlock, kBlock);
      if (!st.ok()) errors[i][b] = st.message();
    }
  }
  for (uint64_t b = 0; b < blocks; b++) {
    const uint64_t block = offset / kBlock + b;
    std::optional<size_t> ref;
    std::string why;
    std::vector<size_t> bad;  // legs whose copy is to be rewritten from ref
    bool diverged = false;
    for (size_t i = 0; i < n; i++) {
      if (!errors[i][b].empty()) {
        why += fmt::format("{}leg {}: {}", why.empty() ? "" : "; ", i, errors[i][b]);
        bad.push_back(i);
        continue;
      }
      if (!ref) {
        ref = i;
        continue;
      }
      if (std::memcmp(bufs[*ref].get() + b * kBlock, bufs[i].get() + b * kBlock, kBlock) == 0) continue;
      bad.push_back(i);
      if (diverged) continue;
      diverged = true;
      counters_.mirror_divergence.fetch_add(1, std::memory_order_relaxed);
      report.Add({ScrubFinding::Kind::kMirrorDivergence, info_.name, block,
                  fmt::format("leg {} differs from leg {}; leg {} is the good copy{}", i, *ref, *ref,
                              report.repair ? "" : " for --repair (the first leg that reads)")});
    }
    if (!why.empty())
      // Unreadable only when no leg holds it; otherwise a read repairs it.
      report.Add({ref ? ScrubFinding::Kind::kDegraded : ScrubFinding::Kind::kUnreadable, info_.name, block,
                  ref ? fmt::format("leg {} holds it; {}", *ref, why) : why});
    if (!report.repair || !ref) continue;
    for (size_t i : bad) {  // under the chunk's range lock: no write of it meanwhile
      if (Missing(i)) continue;
      Status st = WriteSync(*legs_[i], data_offset_ + offset + b * kBlock, bufs[*ref].get() + b * kBlock, kBlock);
      if (!st.ok()) return st.WithContext(fmt::format("mirror: repairing block {} on leg {}", block, i));
      report.repaired++;
      counters_.repairs.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (report.repair)
    for (size_t i = 0; i < n; i++)
      if (!Missing(i)) SC_RETURN_IF_ERROR(FlushSync(*legs_[i]).WithContext(fmt::format("mirror: flushing repairs on leg {}", i)));
  report.blocks_checked += blocks;
  return Status::Ok();
}

}  // namespace stablecache
