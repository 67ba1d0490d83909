// PagePool: frames plus their descriptors, with two quotas.
//
// Cache pages (file data, including fork copies still under I/O) count
// against `capacity`; bounce copies count against `io_reserve`, so writeback
// can always make progress even when the cache is full of dirty pages. The
// arena holds exactly capacity + io_reserve frames, so neither quota can be
// exceeded. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "cache/page.h"
#include "memory/frame_arena.h"

namespace stablecache {

class PagePool {
 public:
  [[nodiscard]] static Result<std::unique_ptr<PagePool>> Create(uint32_t capacity, uint32_t io_reserve);

  // A fresh descriptor with one reference and no flags, or nullptr when the
  // cache is at capacity (the caller reclaims and retries).
  Page* TryAllocPage();
  // Drops a reference; frees the frame at zero.
  void Put(Page* p);
  PageRef Adopt(Page* p) { return PageRef(this, p); }

  // Bounce frames: blocks (futex) until one is free. Never fails.
  uint32_t AllocIoFrame();
  // kNoFrame when the reserve is used up.
  uint32_t TryAllocIoFrame();
  void FreeIoFrame(uint32_t frame);

  std::byte* Data(const Page* p) const { return p->data != nullptr ? p->data : arena_->Data(p->frame); }
  std::byte* FrameData(uint32_t f) const { return arena_->Data(f); }
  Page* Descriptor(uint32_t frame) { return &pages_[frame]; }
  FrameArena& arena() { return *arena_; }

  uint32_t capacity() const { return capacity_; }
  uint32_t cached() const { return cached_.load(std::memory_order_relaxed); }
  uint32_t max_cached() const { return max_cached_.load(std::memory_order_relaxed); }

  // A counter bumped whenever a frame is freed; reclaimers wait on it.
  std::atomic<uint32_t>& free_event() { return free_event_; }
  void BumpFreeEvent();

  // ---- test hook: frame-allocation faults (fail the Nth) ----
  // Every allocation attempt is counted by kind (TryAllocPage: kPageFrame;
  // TryAllocIoFrame, also under AllocIoFrame: kIoFrame). An armed fault
  // makes attempts nth .. nth+count-1 of a kind, counted from the arming,
  // fail as if that quota were used up for a moment (a frame is freed
  // right after: free_event is bumped), so callers take their
  // out-of-frames paths (reclaim, wait, fall back) on purpose.
  enum class FrameKind : uint8_t { kPageFrame = 0, kIoFrame = 1 };
  uint64_t alloc_attempts(FrameKind k) const { return fault(k).attempts.load(); }
  uint64_t alloc_faults_injected(FrameKind k) const { return fault(k).injected.load(); }
  // REQUIRES: nth >= 1. count 0 disarms.
  void FailNthAllocation(FrameKind k, uint64_t nth, uint64_t count = 1);
  void ClearAllocationFaults();

 private:
  PagePool(std::unique_ptr<FrameArena> arena, uint32_t capacity, uint32_t io_reserve);

  std::unique_ptr<FrameArena> arena_;
  std::unique_ptr<Page[]> pages_;
  uint32_t capacity_;
  uint32_t io_reserve_;
  std::atomic<uint32_t> cached_{0};
  std::atomic<uint32_t> max_cached_{0};
  std::atomic<uint32_t> io_in_use_{0};
  std::atomic<uint32_t> free_event_{0};

  struct AllocFault {
    std::atomic<uint64_t> attempts{0};
    std::atomic<uint64_t> fail_from{UINT64_MAX};  // attempt numbers [fail_from, fail_to) fail
    std::atomic<uint64_t> fail_to{UINT64_MAX};
    std::atomic<uint64_t> injected{0};
  };
  AllocFault& fault(FrameKind k) { return alloc_faults_[static_cast<size_t>(k)]; }
  const AllocFault& fault(FrameKind k) const { return alloc_faults_[static_cast<size_t>(k)]; }
  // Counts an attempt; true when the test hook says it fails.
  bool InjectAllocFault(FrameKind k);
  AllocFault alloc_faults_[2];
};

}  // namespace stablecache
