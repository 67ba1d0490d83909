#include "cache/direct_ranges.h"

#include <algorithm>

namespace stablecache {

thread_local const void* DirectRanges::current_ = nullptr;

void DirectRanges::AcquireWrite(uint64_t first, uint64_t last, const void* owner) {
  std::unique_lock lk(mu_);
  writes_.fetch_add(1, std::memory_order_seq_cst);
  auto me = ranges_.insert(ranges_.end(), Range{first, last, owner, false});
  // Granted once no range before it (held or waiting) overlaps: arrival
  // order among overlapping writes, so none starves.
  auto conflicts = [&] {
    return std::any_of(ranges_.begin(), me, [&](const Range& r) { return r.first <= last && first <= r.last; });
  };
  cv_.wait(lk, [&] { return !conflicts(); });
  me->held = true;
  lk.unlock();
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void DirectRanges::ReleaseWrite(const void* owner) {
  {
    std::lock_guard lk(mu_);
    auto it = std::find_if(ranges_.begin(), ranges_.end(), [&](const Range& r) { return r.owner == owner && r.held; });
    if (it == ranges_.end()) return;
    ranges_.erase(it);
    writes_.fetch_sub(1, std::memory_order_seq_cst);
  }
  cv_.notify_all();
}

bool DirectRanges::BlocksLocked(uint64_t idx) const {
  for (const Range& r : ranges_)
    if (r.held && r.owner != current_ && r.first <= idx && idx <= r.last) return true;
  return false;
}

bool DirectRanges::Blocks(uint64_t idx) const {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (writes_.load(std::memory_order_seq_cst) == 0) return false;
  std::lock_guard lk(mu_);
  return BlocksLocked(idx);
}

void DirectRanges::WaitUnblocked(uint64_t idx) const {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return !BlocksLocked(idx); });
}

}  // namespace stablecache
