#include <atomic>
#include <memory>

#include <fmt/format.h>

#include "stablecache/block_device.h"

namespace stablecache {

Status CheckBio(const BlockDevice& dev, const Bio& bio) {
  const DeviceInfo& info = dev.Info();
  if (bio.op == BioOp::kFlush) {
    if (!bio.segments.empty()) return Status::InvalidArgument(fmt::format("{}: flush bio carries data", info.name));
    return Status::Ok();
  }
  const uint64_t len = bio.Length();
  const uint32_t lbs = info.logical_block_size;
  if (len == 0) return Status::InvalidArgument(fmt::format("{}: empty bio at offset {}", info.name, bio.offset));
  if (bio.offset % lbs != 0 || len % lbs != 0)
    return Status::InvalidArgument(fmt::format("{}: bio offset {} length {} not aligned to the {}-byte block size",
                                               info.name, bio.offset, len, lbs));
  if (bio.offset > info.size_bytes || len > info.size_bytes - bio.offset)
    return Status::OutOfRange(fmt::format("{}: bio [{}, {}) beyond the device end ({} bytes)", info.name,
                                          bio.offset, bio.offset + len, info.size_bytes));
  return Status::Ok();
}

Status SubmitAndWait(BlockDevice& dev, BioPtr bio) {
  struct Waiter {
    std::atomic<uint32_t> done{0};
    Status status;
  };
  auto w = std::make_shared<Waiter>();
  bio->on_complete = [w](BioPtr, Status st) {
    w->status = std::move(st);
    w->done.store(1, std::memory_order_release);
    w->done.notify_all();
  };
  dev.Submit(std::move(bio));
  while (w->done.load(std::memory_order_acquire) == 0) w->done.wait(0, std::memory_order_acquire);
  return w->status;
}

Status ReadSync(BlockDevice& dev, uint64_t offset, void* buf, uint32_t len) {
  auto bio = Bio::Make(BioOp::kRead, offset, Stability::kStable);
  bio->AddSegment(buf, len);
  return SubmitAndWait(dev, std::move(bio));
}

Status WriteSync(BlockDevice& dev, uint64_t offset, const void* buf, uint32_t len, Stability s) {
  auto bio = Bio::Make(BioOp::kWrite, offset, s);
  bio->AddSegment(const_cast<void*>(buf), len);
  return SubmitAndWait(dev, std::move(bio));
}

const char* ScrubKindName(ScrubFinding::Kind k) {
  switch (k) {
    case ScrubFinding::Kind::kMirrorDivergence: return "diverged";
    case ScrubFinding::Kind::kParityMismatch: return "parity";
    case ScrubFinding::Kind::kUnreadable: return "unreadable";
    case ScrubFinding::Kind::kDegraded: return "degraded";
  }
  return "?";
}

void ScrubReport::Add(ScrubFinding f) {
  switch (f.kind) {
    case ScrubFinding::Kind::kMirrorDivergence: mirror_divergence++; break;
    case ScrubFinding::Kind::kParityMismatch: parity_mismatch++; break;
    case ScrubFinding::Kind::kUnreadable: unreadable++; break;
    case ScrubFinding::Kind::kDegraded: degraded++; break;
  }
  if (findings.size() < kMaxFindings) findings.push_back(std::move(f));
}

Status FlushSync(BlockDevice& dev) { return SubmitAndWait(dev, Bio::Make(BioOp::kFlush, 0)); }

}  // namespace stablecache
