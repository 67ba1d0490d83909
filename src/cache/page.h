// Page: the descriptor of one cache frame, with one packed atomic state word.
//
// Layout of `word`:  bits 0-7 flags | bits 8-31 references | bits 32-63 pins.
// A reference keeps the descriptor (and its frame) alive; a pin says someone
// outside the cache (a mapping, a direct-I/O caller) may touch the bytes, so
// fork must not move them. Waiting is on the word itself (C++20 atomic
// wait/notify, a futex underneath): no sleeping, no polling. A waiter sets
// kWaiters first, so clearing a flag only pays for a wake-up when someone
// actually sleeps.
//
// Invariants: kWriteback means the bytes under I/O do not change until it
// clears (the stable-write policy enforces it); a page is never freed while
// referenced, so never while under I/O; kDetached pages are out of the index
// for good.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace stablecache {

class AddressSpace;

class Page {
 public:
  static constexpr uint64_t kLocked = 1u << 0;
  static constexpr uint64_t kUptodate = 1u << 1;
  static constexpr uint64_t kDirty = 1u << 2;
  static constexpr uint64_t kWriteback = 1u << 3;
  static constexpr uint64_t kError = 1u << 4;
  static constexpr uint64_t kWaiters = 1u << 5;
  static constexpr uint64_t kReferenced = 1u << 6;  // CLOCK second chance
  static constexpr uint64_t kDetached = 1u << 7;    // removed from the index
  static constexpr uint64_t kFlagMask = 0xff;
  static constexpr uint64_t kRefOne = 1ull << 8;
  static constexpr uint64_t kRefMask = 0xffffffull << 8;
  static constexpr uint64_t kPinOne = 1ull << 32;

  std::atomic<uint64_t> word{0};
  uint32_t frame = 0;                       // fixed: descriptor i owns frame i
  std::atomic<AddressSpace*> owner{nullptr};  // set while in an index
  // Page number in the file. Like owner, the CLOCK scanner reads it without
  // a reference while the descriptor may be freed and reused (TryEvict then
  // finds another page, or none, in the slot), so it is atomic; relaxed suffices
  // because the index insert publishes it.
  std::atomic<uint64_t> index{0};
  // Where the bytes are when not in arena frame `frame`: a mappable file's
  // page lives at its own offset of the file's memfd (cache/file_store.h).
  // Set before the page is indexed, by its creator; read only with a
  // reference.
  std::byte* data = nullptr;

  uint64_t Index() const { return index.load(std::memory_order_relaxed); }
  void SetIndex(uint64_t i) { index.store(i, std::memory_order_relaxed); }

  uint64_t Load() const { return word.load(std::memory_order_acquire); }
  bool Test(uint64_t flag) const { return (Load() & flag) != 0; }
  static uint32_t Refs(uint64_t w) { return static_cast<uint32_t>((w & kRefMask) >> 8); }
  static uint32_t Pins(uint64_t w) { return static_cast<uint32_t>(w >> 32); }

  // ---- references and pins ----
  void Get() { word.fetch_add(kRefOne, std::memory_order_relaxed); }
  // Returns true when this dropped the last reference: the caller frees.
  [[nodiscard]] bool PutTestZero() {
    return Refs(word.fetch_sub(kRefOne, std::memory_order_acq_rel)) == 1;
  }
  void Pin() { word.fetch_add(kPinOne, std::memory_order_acq_rel); }
  void Unpin() { word.fetch_sub(kPinOne, std::memory_order_acq_rel); }

  // ---- the page lock ----
  bool TryLock() { return (word.fetch_or(kLocked, std::memory_order_acquire) & kLocked) == 0; }
  void Lock() {
    while (!TryLock()) WaitWhile(kLocked);
  }
  void Unlock() { ClearFlags(kLocked); }

  // ---- flags ----
  void SetFlags(uint64_t f) { word.fetch_or(f, std::memory_order_acq_rel); }
  // Returns the flags before the change.
  uint64_t TestAndSet(uint64_t f) { return word.fetch_or(f, std::memory_order_acq_rel); }
  uint64_t TestAndClear(uint64_t f) { return word.fetch_and(~f, std::memory_order_acq_rel); }
  // Clears flags and wakes anyone waiting on the word.
  void ClearFlags(uint64_t f) {
    uint64_t old = word.fetch_and(~(f | kWaiters), std::memory_order_acq_rel);
    if (old & kWaiters) word.notify_all();
  }

  // Named transitions. REQUIRES: page locked for Start/Dirty changes.
  void StartWriteback() { SetFlags(kWriteback); }
  void EndWriteback() { ClearFlags(kWriteback); }
  void WaitWriteback() { WaitWhile(kWriteback); }

  // Blocks until none of `mask` is set.
  void WaitWhile(uint64_t mask) {
    for (;;) {
      uint64_t w = word.load(std::memory_order_acquire);
      if ((w & mask) == 0) return;
      if ((w & kWaiters) == 0) {
        if (!word.compare_exchange_weak(w, w | kWaiters, std::memory_order_acq_rel)) continue;
        w |= kWaiters;
      }
      word.wait(w, std::memory_order_acquire);
    }
  }
};

// RAII for a page reference; Release hands the page back to its pool.
class PagePool;
class PageRef {
 public:
  PageRef() = default;
  PageRef(PagePool* pool, Page* p) : pool_(pool), page_(p) {}
  PageRef(PageRef&& o) noexcept : pool_(o.pool_), page_(o.page_) { o.page_ = nullptr; }
  PageRef& operator=(PageRef&& o) noexcept {
    if (this != &o) {
      Reset();
      pool_ = o.pool_;
      page_ = o.page_;
      o.page_ = nullptr;
    }
    return *this;
  }
  PageRef(const PageRef&) = delete;
  PageRef& operator=(const PageRef&) = delete;
  ~PageRef() { Reset(); }

  Page* get() const { return page_; }
  Page* operator->() const { return page_; }
  explicit operator bool() const { return page_ != nullptr; }
  Page* release() {
    Page* p = page_;
    page_ = nullptr;
    return p;
  }
  void Reset() noexcept;

 private:
  PagePool* pool_ = nullptr;
  Page* page_ = nullptr;
};

}  // namespace stablecache
