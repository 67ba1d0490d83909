// CacheImpl: the Cache behind the public interface. Owns the page pool, the
// address spaces, reclaim (CLOCK over frame descriptors), dirty throttling
// and the flusher threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "cache/address_space.h"
#include "cache/mapped_ranges.h"
#include "cache/page_pool.h"
#include "stablecache/cache.h"

namespace stablecache {

struct CacheCounters {
  std::atomic<uint64_t> hits{0}, misses{0}, readahead_pages{0}, evictions{0};
  std::atomic<uint64_t> pages_written{0}, writeback_errors{0}, throttle_waits{0};
  std::atomic<uint64_t> stable_waits{0}, forks{0}, fork_copies_skipped{0}, bytes_bounced{0};
  std::atomic<int64_t> dirty{0}, writeback{0};
};

class Flusher;

// Writeback batches in flight, counted in a block each batch shares, so
// the count outlives the cache: a completion may still be finishing its
// bookkeeping (in the cache's counters and pool) after it woke the thread
// that destroys the cache, which therefore waits for the count to reach 0.
struct InFlightBatches {
  std::atomic<uint64_t> n{0};
  void Start() { n.fetch_add(1, std::memory_order_acq_rel); }
  // The last thing a batch does with the cache.
  void Done() {
    if (n.fetch_sub(1, std::memory_order_acq_rel) == 1) n.notify_all();
  }
  void WaitNone() {
    for (uint64_t v; (v = n.load(std::memory_order_acquire)) != 0;) n.wait(v, std::memory_order_acquire);
  }
};

class CacheImpl final : public Cache, public std::enable_shared_from_this<CacheImpl> {
 public:
  CacheImpl(const CacheOptions& opts, std::unique_ptr<PagePool> pool);
  ~CacheImpl() override;

  Result<std::unique_ptr<File>> Open(std::shared_ptr<BlockDevice> device,
                                     const FileOptions& opts) override;
  CacheStats Stats() const override;
  const CacheOptions& Options() const override { return opts_; }

  PagePool& pool() { return *pool_; }
  // Live mappings of this cache's files, by address (direct I/O pins).
  MappedRanges& mapped_ranges() { return mapped_ranges_; }
  CacheCounters& counters() { return counters_; }
  const std::shared_ptr<InFlightBatches>& batches() { return batches_; }

  // A new page: evicts clean pages and waits for writeback as needed.
  Result<Page*> AllocPage();
  // A new page if one is free or one clean page can be evicted now.
  Page* TryAllocPage();

  // Writers to `as` call this before dirtying: blocks while over the dirty
  // limit, not counting the dirty pages of other spaces whose writeback is
  // failing (they cannot be cleaned now). Fails when writeback of `as`
  // itself fails meanwhile.
  Status BalanceDirtyPages(AddressSpace& as);
  void WakeFlusher();
  // Writeback completed: wake reclaimers and throttled writers.
  void NotifyProgress();

  // Snapshot of live address spaces, for the flusher.
  std::vector<std::shared_ptr<AddressSpace>> Spaces();
  // Called by every handle's Close. The last one waits out the space's
  // writes in flight, then drops its pages and unregisters the arena from
  // its device, unless `keep_dirty` (its Sync failed), pages are still
  // dirty, or an error is recorded that no handle has reported: then the
  // space stays, so the flusher retries and a later Open gets the pages
  // and the error back. ReleaseIdleSpaces lets it go once that is over.
  Status CloseSpace(const std::shared_ptr<AddressSpace>& as, bool keep_dirty);
  // Drops the spaces that no handle holds and that are clean, idle and
  // have no unreported error (the flusher calls it after each pass). First
  // writes the size record of such spaces whose size the medium lacks (a
  // failed Close left it): that I/O is the only wait here.
  void ReleaseIdleSpaces();

  uint64_t dirty_limit() const { return dirty_limit_; }
  uint64_t background_limit() const { return background_limit_; }

 private:
  bool EvictOne();
  // Frees a space's pages and its device registration. REQUIRES: erased
  // from spaces_, no handle.
  void ReleaseSpace(AddressSpace& as);
  // Dirty pages of spaces other than `self` whose writeback is failing.
  uint64_t StuckDirtyPages(const AddressSpace& self);

  CacheOptions opts_;
  std::unique_ptr<PagePool> pool_;
  CacheCounters counters_;
  MappedRanges mapped_ranges_;
  uint64_t dirty_limit_;
  uint64_t background_limit_;

  std::mutex open_mu_;  // one Open at a time reads or formats a size record
  std::shared_mutex spaces_mu_;
  std::map<BlockDevice*, std::shared_ptr<AddressSpace>> spaces_;  // GUARDED_BY(spaces_mu_)

  std::mutex clock_mu_;
  uint32_t clock_hand_ = 0;  // GUARDED_BY(clock_mu_)

  std::unique_ptr<Flusher> flusher_;
  std::shared_ptr<InFlightBatches> batches_ = std::make_shared<InFlightBatches>();
};

}  // namespace stablecache
