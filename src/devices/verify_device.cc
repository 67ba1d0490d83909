#include "devices/verify_device.h"

#include <isa-l/crc.h>

#include <algorithm>

namespace stablecache {

namespace {
constexpr uint32_t kBlock = 512;

std::vector<uint32_t> BlockSums(const Bio& bio) {
  std::vector<uint32_t> sums;
  for (const auto& s : bio.segments)
    for (uint32_t o = 0; o < s.len; o += kBlock)
      sums.push_back(crc32_iscsi(reinterpret_cast<unsigned char*>(s.data + o), static_cast<int>(std::min(kBlock, s.len - o)), 0));
  return sums;
}
}  // namespace

void VerifyDevice::Submit(BioPtr bio) {
  counters_.CountBio(*bio);
  HoldDeviceWhileInFlight(*this, *bio);
  if (bio->op != BioOp::kWrite) {
    lower_->Submit(std::move(bio));
    return;
  }
  auto before = BlockSums(*bio);
  // An unstable bio may change (a layer below bounces it if it must); one
  // that promised stability must not.
  const bool promised = bio->stability >= Stability::kDeclaredStable;
  Bio::Completion inner = std::move(bio->on_complete);
  bio->on_complete = [this, promised, before = std::move(before), inner = std::move(inner)](BioPtr b, Status st) mutable {
    auto after = BlockSums(*b);
    for (size_t i = 0; i < before.size(); i++) {
      if (before[i] == after[i]) continue;
      if (!promised) {
        counters_.unstable_modified.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      counters_.modified_in_flight.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lk(mu_);
      if (modified_.size() < 1024) modified_.push_back(b->offset + uint64_t{i} * kBlock);
    }
    if (inner) inner(std::move(b), std::move(st));
  };
  lower_->Submit(std::move(bio));
}

void VerifyDevice::CollectStats(std::vector<LayerStats>& out) const {
  LayerStats s = counters_.Snapshot(info_.name);
  {
    std::lock_guard lk(mu_);
    s.modified_offsets.assign(modified_.begin(), modified_.begin() + std::min<size_t>(modified_.size(), 16));
  }
  out.push_back(std::move(s));
  lower_->CollectStats(out);
}

std::vector<uint64_t> VerifyDevice::ModifiedOffsets() const {
  std::lock_guard lk(mu_);
  return modified_;
}

}  // namespace stablecache
