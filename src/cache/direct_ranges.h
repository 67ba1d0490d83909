// DirectRanges: the direct I/O in flight on one file (seed 002's per-file
// count and range entries in the index).
//
//  - Every direct read or write in flight is counted; Truncate waits for the
//    count to drop to zero (Linux's inode_dio_wait), so no direct I/O runs
//    on pages a truncate is dropping.
//  - A direct write holds its page range [first, last] exclusively against
//    other direct writes and against page creation: AddressSpace checks
//    Blocks() after it indexes a new page and, if a write of another owner
//    holds the number, takes the page out again and waits (WaitUnblocked).
//    The direct write registers before it scans the index, the creator
//    indexes before it checks: with a full fence on each side, either the
//    scan sees the page or the creator sees the range (a Dekker pair).
//  - The owner's own thread may create pages in its range (the partial
//    pages a write fills through the cache): an OwnerScope on that thread
//    says whose range it is.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>

namespace stablecache {

class DirectRanges {
 public:
  // Page creation on this thread is exempt from `owner`'s range while the
  // scope lives.
  class OwnerScope {
   public:
    explicit OwnerScope(const void* owner) : prev_(current_) { current_ = owner; }
    ~OwnerScope() { current_ = prev_; }
    OwnerScope(const OwnerScope&) = delete;
    OwnerScope& operator=(const OwnerScope&) = delete;

   private:
    const void* prev_;
  };

  // ---- the in-flight count ----
  void BeginIo() { in_flight_.fetch_add(1, std::memory_order_acq_rel); }
  void EndIo() {
    if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) in_flight_.notify_all();
  }
  // Blocks until no direct I/O is in flight. The caller keeps new ones out
  // (the invalidate lock held exclusive).
  void WaitIdle() const {
    for (uint64_t n; (n = in_flight_.load(std::memory_order_acquire)) != 0;) in_flight_.wait(n);
  }
  uint64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // ---- write ranges ----
  // Blocks until [first, last] overlaps no write range held or waited for
  // before it, then holds it for `owner`. Ends with a full fence.
  void AcquireWrite(uint64_t first, uint64_t last, const void* owner);
  void ReleaseWrite(const void* owner);
  // Whether page idx lies in a write range held by an owner other than the
  // current thread's. Call after indexing the page (a full fence first).
  bool Blocks(uint64_t idx) const;
  // Blocks until Blocks(idx) is false.
  void WaitUnblocked(uint64_t idx) const;

 private:
  struct Range {
    uint64_t first, last;
    const void* owner;
    bool held;
  };
  bool BlocksLocked(uint64_t idx) const;

  static thread_local const void* current_;
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> writes_{0};  // ranges held or waiting: the fast path
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::list<Range> ranges_;  // GUARDED_BY(mu_), arrival order
};

}  // namespace stablecache
