// PageIndex: page number -> Page*, sharded by page number.
//
// Each entry holds one reference on its page. Lookups take a reference under
// the shard lock, so a remover that checks the reference count under the
// same lock sees every holder. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cache/page.h"

namespace stablecache {

class PageIndex {
 public:
  // Returns the page with a new reference, or nullptr.
  Page* FindGet(uint64_t index);
  // Inserts `p` (the index takes over one reference the caller gives it).
  // Returns false, changing nothing, when the slot is taken.
  bool Insert(uint64_t index, Page* p);
  // Swaps `old_page` for `new_page` at `index` (fork). The index keeps the
  // reference it had on old_page; the caller must drop it. new_page's
  // reference is given by the caller. Returns false if old_page is not there.
  bool Replace(uint64_t index, Page* old_page, Page* new_page);
  // Removes `p` if it is still at `index`. The caller inherits the index's
  // reference. `precondition` runs under the shard lock; removal happens
  // only if it returns true.
  bool RemoveIf(uint64_t index, Page* p, const std::function<bool()>& precondition);
  // Snapshot of the page numbers present at or above `from`, sorted.
  std::vector<uint64_t> IndicesFrom(uint64_t from) const;
  size_t Size() const;

 private:
  static constexpr size_t kShards = 64;
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Page*> map;
  };
  Shard& ShardOf(uint64_t index) { return shards_[(index * 0x9E3779B97F4A7C15ull) >> 58]; }

  Shard shards_[kShards];
};

}  // namespace stablecache
