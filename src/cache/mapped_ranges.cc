#include "cache/mapped_ranges.h"

#include "cache/address_space.h"

namespace stablecache {

void MappedRanges::Add(const std::byte* base, size_t length, AddressSpace* space, uint64_t first_idx, bool writable) {
  std::lock_guard lk(mu_);
  ranges_[base] = Range{length, space, first_idx, writable};
  count_.store(ranges_.size(), std::memory_order_release);
}

void MappedRanges::Remove(const std::byte* base) {
  std::lock_guard lk(mu_);
  ranges_.erase(base);
  count_.store(ranges_.size(), std::memory_order_release);
}

std::optional<MappedRanges::Hit> MappedRanges::Find(const std::byte* addr) const {
  if (empty()) return std::nullopt;
  std::lock_guard lk(mu_);
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return std::nullopt;
  --it;
  if (addr >= it->first + it->second.length) return std::nullopt;
  const uint64_t idx = it->second.first_idx + static_cast<uint64_t>(addr - it->first) / 4096;
  return Hit{it->second.space->shared_from_this(), idx, it->second.writable};
}

}  // namespace stablecache
