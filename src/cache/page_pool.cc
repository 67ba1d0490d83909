#include "cache/page_pool.h"

#include <cassert>

namespace stablecache {

void PageRef::Reset() noexcept {
  if (page_ != nullptr) pool_->Put(page_);
  page_ = nullptr;
}

Result<std::unique_ptr<PagePool>> PagePool::Create(uint32_t capacity, uint32_t io_reserve) {
  if (capacity < 16) return Err(Status::InvalidArgument("cache capacity must be at least 16 pages (64 KiB)"));
  auto arena = FrameArena::Create(capacity + io_reserve);
  if (!arena) return Err(arena.error());
  return std::unique_ptr<PagePool>(new PagePool(std::move(*arena), capacity, io_reserve));
}

PagePool::PagePool(std::unique_ptr<FrameArena> arena, uint32_t capacity, uint32_t io_reserve)
    : arena_(std::move(arena)),
      pages_(new Page[arena_->frames()]),
      capacity_(capacity),
      io_reserve_(io_reserve) {
  for (uint32_t i = 0; i < arena_->frames(); i++) pages_[i].frame = i;
}

Page* PagePool::TryAllocPage() {
  if (InjectAllocFault(FrameKind::kPageFrame)) return nullptr;
  uint32_t n = cached_.fetch_add(1, std::memory_order_acq_rel);
  if (n >= capacity_) {
    cached_.fetch_sub(1, std::memory_order_acq_rel);
    return nullptr;
  }
  uint32_t hw = max_cached_.load(std::memory_order_relaxed);
  while (n + 1 > hw && !max_cached_.compare_exchange_weak(hw, n + 1)) {
  }
  uint32_t f = arena_->Allocate();
  assert(f != kNoFrame && "quota accounting guarantees a frame");
  Page* p = &pages_[f];
  p->owner.store(nullptr, std::memory_order_relaxed);
  p->SetIndex(0);
  p->data = nullptr;
  p->word.store(Page::kRefOne, std::memory_order_release);
  return p;
}

void PagePool::Put(Page* p) {
  if (!p->PutTestZero()) return;
  p->owner.store(nullptr, std::memory_order_relaxed);
  p->word.store(0, std::memory_order_release);
  arena_->Free(p->frame);
  cached_.fetch_sub(1, std::memory_order_acq_rel);
  BumpFreeEvent();
}

uint32_t PagePool::TryAllocIoFrame() {
  if (InjectAllocFault(FrameKind::kIoFrame)) return kNoFrame;
  uint32_t n = io_in_use_.fetch_add(1, std::memory_order_acq_rel);
  if (n >= io_reserve_) {
    io_in_use_.fetch_sub(1, std::memory_order_acq_rel);
    return kNoFrame;
  }
  uint32_t f = arena_->Allocate();
  assert(f != kNoFrame && "quota accounting guarantees a frame");
  return f;
}

uint32_t PagePool::AllocIoFrame() {
  for (;;) {
    uint32_t ev = free_event_.load(std::memory_order_acquire);
    uint32_t f = TryAllocIoFrame();
    if (f != kNoFrame) return f;
    free_event_.wait(ev, std::memory_order_acquire);
  }
}

void PagePool::FreeIoFrame(uint32_t frame) {
  arena_->Free(frame);
  io_in_use_.fetch_sub(1, std::memory_order_acq_rel);
  BumpFreeEvent();
}

bool PagePool::InjectAllocFault(FrameKind k) {
  AllocFault& f = fault(k);
  const uint64_t n = f.attempts.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n < f.fail_from.load(std::memory_order_acquire) || n >= f.fail_to.load(std::memory_order_acquire)) return false;
  f.injected.fetch_add(1, std::memory_order_relaxed);
  // The quota was used up for a moment and a frame is freed right after:
  // a caller that sleeps on free_event until one is freed must wake.
  BumpFreeEvent();
  return true;
}

void PagePool::FailNthAllocation(FrameKind k, uint64_t nth, uint64_t count) {
  AllocFault& f = fault(k);
  f.fail_from.store(UINT64_MAX, std::memory_order_release);  // disarmed while it moves
  const uint64_t from = f.attempts.load() + nth;
  f.fail_to.store(count > UINT64_MAX - from ? UINT64_MAX : from + count, std::memory_order_release);
  f.fail_from.store(from, std::memory_order_release);
}

void PagePool::ClearAllocationFaults() {
  for (auto& f : alloc_faults_) {
    f.fail_from.store(UINT64_MAX, std::memory_order_release);
    f.fail_to.store(UINT64_MAX, std::memory_order_release);
  }
}

void PagePool::BumpFreeEvent() {
  free_event_.fetch_add(1, std::memory_order_acq_rel);
  free_event_.notify_all();
}

}  // namespace stablecache
