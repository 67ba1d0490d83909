// PageIndex: page number -> Page*, a two-level radix array.
//
// Lookups take no lock: they load the slot, take a reference only if the
// page is still live (get-unless-zero), and re-check that the slot still
// holds it and that it was not detached; otherwise they drop the reference
// and retry. Changes are compare-and-swaps on a slot. Leaves of 512 slots
// are allocated on first use and live as long as the index, so a reader
// never touches freed memory. Page descriptors are never freed either (they
// belong to the pool), so a stale pointer is always safe to inspect.
//
// Each slot holds one reference on its page. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "cache/page.h"

namespace stablecache {

class PagePool;

class PageIndex {
 public:
  PageIndex(PagePool& pool, uint64_t max_pages);
  ~PageIndex();
  PageIndex(const PageIndex&) = delete;
  PageIndex& operator=(const PageIndex&) = delete;

  // Returns the page with a new reference, or nullptr.
  Page* FindGet(uint64_t index);
  // Inserts `p` (the index takes over one reference the caller gives it).
  // Returns false, changing nothing, when the slot is taken.
  bool Insert(uint64_t index, Page* p);
  // Swaps `old_page` for `new_page` (fork). The index keeps the reference it
  // had on old_page, for the caller to drop; new_page's comes from the
  // caller. Returns false if old_page is not there.
  bool Replace(uint64_t index, Page* old_page, Page* new_page);
  // Removes `p` if it is still at `index`. The caller inherits the index's
  // reference. Whoever decides to remove a page must own it first (its lock)
  // and must not change the page before Remove succeeds: a check on a page
  // that is not (or no longer) in the slot is a check on a recycled
  // descriptor.
  bool Remove(uint64_t index, Page* p);
  // The page numbers present at or above `from`, sorted.
  std::vector<uint64_t> IndicesFrom(uint64_t from) const;
  size_t Size() const { return count_.load(std::memory_order_relaxed); }

 private:
  static constexpr unsigned kLeafBits = 9;
  static constexpr uint64_t kLeafSize = 1u << kLeafBits;
  struct Leaf {
    std::atomic<Page*> slot[kLeafSize] = {};
  };
  std::atomic<Page*>* SlotFor(uint64_t index, bool create);

  PagePool& pool_;
  uint64_t max_pages_;
  size_t nleaves_;
  std::unique_ptr<std::atomic<Leaf*>[]> leaves_;
  std::atomic<size_t> count_{0};
};

}  // namespace stablecache
