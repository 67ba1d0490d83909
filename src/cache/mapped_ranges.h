// MappedRanges: the address ranges of a cache's live mappings (File::Map),
// so direct I/O can tell when a caller's buffer is a mapped file page of
// this same cache. A direct read into such a page pins it (no eviction
// while the device writes it, the kernel's pin_user_pages) and re-dirties
// it when the read completes (bio_set_pages_dirty), since the device's
// stores reach the page without a fault the cache would see.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace stablecache {

class AddressSpace;

class MappedRanges {
 public:
  struct Hit {
    std::shared_ptr<AddressSpace> space;
    uint64_t idx;  // the file page the address maps
    bool writable;
  };

  // `space` outlives the registration (the mapping holds a handle on it).
  void Add(const std::byte* base, size_t length, AddressSpace* space, uint64_t first_idx, bool writable);
  void Remove(const std::byte* base);
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }
  // The mapped page holding `addr`, if any mapping of this cache covers it.
  std::optional<Hit> Find(const std::byte* addr) const;

 private:
  struct Range {
    size_t length;
    AddressSpace* space;
    uint64_t first_idx;
    bool writable;
  };
  mutable std::mutex mu_;
  std::map<const std::byte*, Range> ranges_;  // GUARDED_BY(mu_), by base address
  std::atomic<size_t> count_{0};
};

}  // namespace stablecache
