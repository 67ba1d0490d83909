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

// One read's progress over the legs. Steps run one after another (each leg
// read is submitted from the previous one's completion), so no lock.
struct MirrorDevice::Read {
  BioPtr parent;
  std::vector<BioSegment> segs;  // the caller's memory
  uint64_t offset = 0, len = 0;
  std::vector<bool> failed;
  Status first_error;
  bool locked = false;
  RangeLock::Ticket ticket = 0;
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
  r->failed.assign(legs_.size(), false);
  r->parent = std::move(bio);
  ReadFromLeg(r, next_leg_.fetch_add(1, std::memory_order_relaxed) % legs_.size());
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

void MirrorDevice::ReadFromLeg(std::shared_ptr<Read> r, size_t leg) {
  auto c = Bio::Make(BioOp::kRead, r->offset, Stability::kStable);
  c->segments = r->segs;
  c->on_complete = [this, r, leg](BioPtr, Status st) { LegReadDone(r, leg, std::move(st)); };
  legs_[leg]->Submit(std::move(c));
}

void MirrorDevice::LegReadDone(std::shared_ptr<Read> r, size_t leg, Status st) {
  if (st.ok()) {
    if (!r->locked) return Bio::Complete(std::move(r->parent), Status::Ok());
    return Repair(std::move(r), leg);
  }
  r->failed[leg] = true;
  r->first_error.Update(st.WithContext(fmt::format("mirror leg {}", leg)));
  auto untried = [](const Read& rd, size_t after) -> std::optional<size_t> {
    for (size_t k = 1; k <= rd.failed.size(); k++)
      if (size_t j = (after + k) % rd.failed.size(); !rd.failed[j]) return j;
    return std::nullopt;
  };
  if (!r->locked) {
    // Retry with writes to the range held off, so the good copy we read is
    // still the newest when we write it over the bad one.
    r->locked = true;
    locks_.Acquire(r->offset, r->offset + r->len, [this, r, untried, leg](RangeLock::Ticket t) {
      r->ticket = t;
      ReadFromLeg(r, *untried(*r, leg));  // a mirror has >= 2 legs and one has failed
    });
    return;
  }
  if (auto next = untried(*r, leg)) return ReadFromLeg(std::move(r), *next);
  counters_.errors.fetch_add(1, std::memory_order_relaxed);
  locks_.Release(r->ticket);
  Bio::Complete(std::move(r->parent),
                r->first_error.WithContext(fmt::format("mirror: no leg could read [{}, {})", r->offset, r->offset + r->len)));
}

void MirrorDevice::Repair(std::shared_ptr<Read> r, size_t good_leg) {
  counters_.degraded_reads.fetch_add(1, std::memory_order_relaxed);
  // The caller owns its buffer once the read completes: repair from a copy.
  std::shared_ptr<std::byte> copy = AllocAligned(r->len);
  r->parent->CopyTo(copy.get());
  Bio::Complete(std::move(r->parent), Status::Ok());
  const uint64_t blocks = r->len / kBlock;
  auto join = BioJoin::Start(nullptr, [this, r, good_leg](BioPtr, Status st) {
    if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);
    locks_.Release(r->ticket);
  });
  for (size_t i = 0; i < legs_.size(); i++) {
    if (!r->failed[i] || i == good_leg) continue;
    auto c = join->Child(BioOp::kWrite, r->offset, Stability::kStable);
    c->AddSegment(copy.get(), static_cast<uint32_t>(r->len));
    c->keep_alive.push_back(copy);
    auto counted = std::move(c->on_complete);
    c->on_complete = [this, counted = std::move(counted), blocks](BioPtr b, Status st) {
      if (st.ok()) counters_.repairs.fetch_add(blocks, std::memory_order_relaxed);
      counted(std::move(b), std::move(st));
    };
    legs_[i]->Submit(std::move(c));
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
  // readable[i][b]: leg i returned block b.
  std::vector<std::vector<bool>> readable(n, std::vector<bool>(blocks, true));
  for (size_t i = 0; i < n; i++) {
    bufs[i] = AllocAligned(len);
    if (ReadSync(*legs_[i], offset, bufs[i].get(), len).ok()) continue;
    for (uint64_t b = 0; b < blocks; b++) {  // find which blocks
      Status st = ReadSync(*legs_[i], offset + b * kBlock, bufs[i].get() + b * kBlock, kBlock);
      if (st.ok()) continue;
      readable[i][b] = false;
      report.Add({ScrubFinding::Kind::kUnreadable, info_.name, offset / kBlock + b,
                  fmt::format("leg {}: {}", i, st.message())});
    }
  }
  for (uint64_t b = 0; b < blocks; b++) {
    std::optional<size_t> ref;
    for (size_t i = 0; i < n; i++) {
      if (!readable[i][b]) continue;
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
  }
  report.blocks_checked += blocks;
  return Status::Ok();
}

}  // namespace stablecache
