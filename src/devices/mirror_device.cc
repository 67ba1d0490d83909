#include "devices/mirror_device.h"

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
  return std::shared_ptr<MirrorDevice>(new MirrorDevice(std::move(legs), opts));
}

MirrorDevice::MirrorDevice(std::vector<std::shared_ptr<BlockDevice>> legs, const MirrorOptions& opts)
    : FanoutDevice(std::move(legs), "mirror", opts.required) {
  uint64_t size = UINT64_MAX;
  for (const auto& l : legs_) size = std::min(size, l->Info().size_bytes);
  info_.size_bytes = size / info_.logical_block_size * info_.logical_block_size;
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
  auto c = Bio::Make(BioOp::kRead, r->offset, Stability::kStable);
  c->segments = r->segs;
  c->on_complete = [this, r](BioPtr, Status st) {
    if (st.ok()) return Bio::Complete(std::move(r->parent), Status::Ok());
    r->first_error = st.WithContext(fmt::format("mirror leg {}", r->first_leg));
    // Recover with writes to the range held off, so a good copy we read is
    // still the newest when we write it over a bad one.
    locks_.Acquire(r->offset, r->offset + r->len, [this, r](RangeLock::Ticket t) {
      r->ticket = t;
      r->flat = AllocAligned(r->len);
      RecoverBlock(r);
    });
  };
  legs_[r->first_leg]->Submit(std::move(c));
}

void MirrorDevice::SubmitWrite(BioPtr bio) {
  StabilizeBio(*bio, info_.required_stability, counters_.bytes_bounced);
  const uint64_t off = bio->offset, len = bio->Length();
  auto holder = std::make_shared<BioPtr>(std::move(bio));
  locks_.Acquire(off, off + len, [this, holder, off](RangeLock::Ticket t) {
    BioPtr parent = std::move(*holder);
    const std::vector<BioSegment> segs = parent->segments;
    const Stability level = parent->stability;
    auto join = BioJoin::Start(std::move(parent), [this, t](BioPtr p, Status st) {
      locks_.Release(t);
      if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);
      Bio::Complete(std::move(p), std::move(st));
    });
    for (size_t i = 0; i < legs_.size(); i++) {
      auto c = join->Child(BioOp::kWrite, off, level);
      c->segments = segs;
      auto counted = std::move(c->on_complete);
      c->on_complete = [counted = std::move(counted), i](BioPtr b, Status st) {
        counted(std::move(b), st.WithContext(fmt::format("mirror leg {}", i)));
      };
      legs_[i]->Submit(std::move(c));
    }
    join->Arm();
  });
}

// Reads block r->block from the next leg to try; every block is read from
// the first leg that can, so one bad block on each leg still reads.
void MirrorDevice::RecoverBlock(std::shared_ptr<Read> r) {
  const size_t leg = (r->first_leg + r->tries) % legs_.size();
  auto c = Bio::Make(BioOp::kRead, r->offset + r->block * kBlock, Stability::kStable);
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
  for (auto& [bad, e] : r->block_errors) r->repairs.emplace_back(r->block, bad);
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
  for (auto [block, leg] : r->repairs) {
    auto c = join->Child(BioOp::kWrite, r->offset + block * kBlock, Stability::kStable);
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
    if (ReadSync(*legs_[i], offset, bufs[i].get(), len).ok()) continue;
    for (uint64_t b = 0; b < blocks; b++) {  // find which blocks
      Status st = ReadSync(*legs_[i], offset + b * kBlock, bufs[i].get() + b * kBlock, kBlock);
      if (!st.ok()) errors[i][b] = st.message();
    }
  }
  for (uint64_t b = 0; b < blocks; b++) {
    std::optional<size_t> ref;
    std::string why;
    for (size_t i = 0; i < n; i++) {
      if (!errors[i][b].empty()) {
        why += fmt::format("{}leg {}: {}", why.empty() ? "" : "; ", i, errors[i][b]);
        continue;
      }
      if (!ref) {
        ref = i;
        continue;
      }
      if (std::memcmp(bufs[*ref].get() + b * kBlock, bufs[i].get() + b * kBlock, kBlock) == 0) continue;
      counters_.mirror_divergence.fetch_add(1, std::memory_order_relaxed);
      report.Add({ScrubFinding::Kind::kMirrorDivergence, info_.name, offset / kBlock + b,
                  fmt::format("leg {} differs from leg {}", i, *ref)});
      break;
    }
    if (why.empty()) continue;
    // Unreadable only when no leg holds it; otherwise a read repairs it.
    report.Add({ref ? ScrubFinding::Kind::kDegraded : ScrubFinding::Kind::kUnreadable, info_.name,
                offset / kBlock + b, ref ? fmt::format("leg {} holds it; {}", *ref, why) : why});
  }
  report.blocks_checked += blocks;
  return Status::Ok();
}

}  // namespace stablecache
