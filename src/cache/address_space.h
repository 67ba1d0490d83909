// AddressSpace: the cached state of one file (one BlockDevice stack).
//
// Holds the page index, dirty tracking, the pages under writeback, the file
// size (and its record on the medium, cache/size_record.h), which device
// pages are holes, and the errseq of writeback errors. The file uses the
// device's pages below its size record: device_pages() counts those.
//
// Locking order: invalidate_lock (shared for Read/Write, exclusive for
// Truncate and extension) -> page lock -> state_mu_ / index shard locks.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
#include <vector>

#include "cache/direct_ranges.h"
#include "cache/errseq.h"
#include "cache/file_store.h"
#include "cache/mapped_view.h"
#include "cache/page_index.h"
#include "cache/page_pool.h"
#include "cache/size_record.h"
#include "stablecache/block_device.h"
#include "stablecache/cache.h"

namespace stablecache {

class CacheImpl;

class AddressSpace : public std::enable_shared_from_this<AddressSpace> {
 public:
  // `record`: what OpenSizeRecord found (or formatted) on the device.
  // `store`: the memfd that holds a mappable file's pages, or null for a
  // plain file (pages in arena frames).
  AddressSpace(CacheImpl& cache, std::shared_ptr<BlockDevice> dev, const SizeRecordState& record,
               StablePolicy policy, std::unique_ptr<FileStore> store = nullptr);
  ~AddressSpace();

  BlockDevice& device() { return *dev_; }
  const std::shared_ptr<BlockDevice>& device_ptr() const { return dev_; }
  CacheImpl& cache() { return cache_; }
  PagePool& pool() { return pool_; }
  StablePolicy policy() const { return policy_; }
  uint64_t device_pages() const { return device_pages_; }

  // ---- size and the invalidate lock ----
  std::shared_mutex& invalidate_lock() { return invalidate_lock_; }
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  void set_size(uint64_t s) { size_.store(s, std::memory_order_release); }
  uint64_t EofPages() const { return (size() + 4095) >> 12; }
  // The size on the medium and the Syncs that write it.
  SizeRecord& size_record() { return size_record_; }

  // ---- the page index ----
  PageRef FindGet(uint64_t idx) { return pool_.Adopt(index_.FindGet(idx)); }
  // Returns the page at idx, creating it locked and !Uptodate if absent.
  // `*created` tells which. Blocks to reclaim space. The page is referenced.
  Result<PageRef> FindOrCreate(uint64_t idx, bool* created);
  // Tries to create a locked !Uptodate page without blocking (readahead).
  PageRef TryCreate(uint64_t idx);
  // Fork: installs `copy` (locked, referenced by the caller) in place of
  // `old` (locked). Marks old detached and drops the index's reference.
  bool ReplacePage(Page* old_page, Page* copy);
  // Removes a locked page from the index for good (truncate, teardown,
  // failed reads). REQUIRES: not under writeback.
  void DetachLocked(Page* p);
  // CLOCK eviction of a clean, idle page. Called by the cache's reclaimer.
  bool TryEvict(Page* p);
  PageIndex& index() { return index_; }
  // A page fresh from the pool: locked, with the index's reference added.
  void PrepareNewPage(Page* p);
  void AbandonNewPage(Page* p);

  // ---- mappable files (cache/file_store.h, mapping/) ----
  // Page idx of a mappable file lives at a fixed offset of its memfd: there
  // is one frame per page number, so a page cannot fork: Open turns kFork
  // into kBounce (writeback copies the page), and a store through a
  // mapping never waits for the device, except under kWait.
  bool mappable() const { return store_ != nullptr; }
  FileStore* store() const { return store_.get(); }
  // The write-back I/O gets a private copy of the page. (Open turns fork
  // into bounce for a mappable file.)
  bool BouncesWriteback() const { return policy_ == StablePolicy::kBounce; }
  void AddView(MappedView* v);
  void RemoveView(MappedView* v);
  // page_mkclean for page idx in every view. REQUIRES: the page locked.
  void WriteProtectViews(uint64_t idx);
  // Sizes the store before the file grows past it / after it shrank.
  Status ResizeStore(uint64_t size_bytes);

  // ---- filling pages ----
  // Makes `run` (consecutive, locked, !Uptodate pages starting at first)
  // uptodate from the device, or zero for holes and bytes past EOF.
  // Unlocks nothing; on error marks pages kError.
  Status FillLocked(std::span<Page* const> run, uint64_t first);

  // ---- dirty tracking (REQUIRES page locked, but for Redirty) ----
  // Sets Dirty unless the page is detached; returns whether it is dirty.
  bool MarkDirty(Page* p);
  // Clears Dirty if set; returns whether it was set.
  bool TakeDirty(Page* p);
  // Re-dirties after a failed write (completion context, page not locked):
  // a detached page (forked or truncated meanwhile) stays clean.
  void Redirty(Page* p);
  std::vector<uint64_t> DirtyIndices(uint64_t first, uint64_t last, size_t limit);
  size_t dirty_count() const;

  // ---- writeback in flight: at most one write per page number ----
  // Returns the page under writeback at idx with a reference, if any.
  PageRef InFlight(uint64_t idx);
  void AddInFlight(uint64_t idx, Page* p);
  void RemoveInFlight(uint64_t idx);
  std::vector<PageRef> InFlightRange(uint64_t first, uint64_t last);
  bool NothingInFlight() const;

  // ---- holes: device pages whose contents are not file data ----
  bool IsHole(uint64_t idx) const;
  void MarkValid(uint64_t idx);
  void MarkHoles(uint64_t first, uint64_t end);
  // Holes inside EOF are zero in memory only; an extension sets this so the
  // next Sync writes them out as zero pages (see MaterializeHoles).
  std::atomic<bool>& holes_exposed() { return holes_exposed_; }
  void MarkHolesExposed() { holes_exposed_.store(true); }
  // Held by MaterializeHoles: one materializer at a time.
  std::mutex& holes_mu() { return holes_mu_; }

  // ---- errors ----
  void RecordWritebackError(const Status& st);
  // Writeback of this space failed last time and has not succeeded since:
  // its dirty pages cannot be cleaned now, so they do not throttle writers
  // of other spaces.
  bool writeback_failing() const { return writeback_failing_.load(std::memory_order_acquire); }
  void set_writeback_failing(bool f) { writeback_failing_.store(f, std::memory_order_release); }
  uint64_t writeback_error_count() const { return writeback_errors_.load(std::memory_order_acquire); }
  ErrSeq& errseq() { return errseq_; }
  Status LastWritebackError() const;

  // ---- readahead ----
  uint32_t ReadaheadWindow(uint64_t idx);

  // ---- direct I/O in flight (cache/direct_ranges.h) ----
  DirectRanges& direct() { return direct_; }

  // ---- lifetime ----
  std::atomic<int>& open_handles() { return open_handles_; }
  // Detaches every page numbered `first` or above, waiting for writeback
  // (fork copies still in flight included). Dirty pages are dropped: the
  // caller has synced, or is truncating them away.
  void DropPagesFrom(uint64_t first);
  void DropAllPages() { DropPagesFrom(0); }

 private:
  bool WithdrawIfDirectWrite(Page* p);
  // Index changes of a mappable file go with its memfd (store_mu_).
  bool Insert(uint64_t idx, Page* p);
  bool RemoveAndPunch(uint64_t idx, Page* p);

  CacheImpl& cache_;
  PagePool& pool_;
  std::shared_ptr<BlockDevice> dev_;
  StablePolicy policy_;
  uint64_t device_pages_;

  std::shared_mutex invalidate_lock_;
  std::atomic<uint64_t> size_;
  SizeRecord size_record_;
  PageIndex index_;  // after pool_ and device_pages_: built from them

  mutable std::mutex state_mu_;
  std::set<uint64_t> dirty_;               // GUARDED_BY(state_mu_)
  std::map<uint64_t, Page*> writeback_;    // GUARDED_BY(state_mu_), holds a ref

  std::unique_ptr<std::atomic<uint64_t>[]> valid_bits_;
  std::atomic<bool> holes_exposed_{false};
  std::mutex holes_mu_;

  ErrSeq errseq_;
  std::atomic<bool> writeback_failing_{false};
  std::atomic<uint64_t> writeback_errors_{0};
  mutable std::mutex err_mu_;
  Status last_error_;  // GUARDED_BY(err_mu_)

  // Mappable files: a page number has one frame, so a page leaves the index
  // and its memfd hole is punched under store_mu_, and a new page for that
  // number is indexed under it too (never before the old one's punch).
  std::unique_ptr<FileStore> store_;
  std::mutex store_mu_;
  std::mutex views_mu_;
  std::vector<MappedView*> views_;  // GUARDED_BY(views_mu_)

  std::atomic<uint64_t> ra_last_{UINT64_MAX};
  std::atomic<uint32_t> ra_window_{0};
  std::atomic<int> open_handles_{0};
  DirectRanges direct_;
};

}  // namespace stablecache
