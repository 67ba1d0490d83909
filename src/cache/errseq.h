// ErrSeq: Linux errseq_t semantics for writeback errors.
//
// One 32-bit word: errno in bits 0-14, a "seen" flag in bit 15, a counter in
// bits 16-31. Set() records an error; each observer keeps its own sample and
// CheckAndAdvance() reports an error it has not seen exactly once. A new
// observer samples 0 when the latest error was never seen, so an error is
// not lost to someone who opens after it happened. Thread-safe, lock-free.
#pragma once

#include <atomic>
#include <cstdint>

namespace stablecache {

class ErrSeq {
 public:
  static constexpr uint32_t kErrMask = 0x7fff;
  static constexpr uint32_t kSeen = 0x8000;
  static constexpr uint32_t kCtrInc = 0x10000;

  void Set(int err) {
    uint32_t old = v_.load(std::memory_order_acquire);
    for (;;) {
      uint32_t next = (old & ~(kErrMask | kSeen)) | (static_cast<uint32_t>(err) & kErrMask);
      if (old & kSeen) next += kCtrInc;
      if (next == old) return;
      if (v_.compare_exchange_weak(old, next, std::memory_order_acq_rel)) return;
    }
  }

  // An error was recorded that no observer has reported yet.
  bool HasUnseen() const {
    uint32_t v = v_.load(std::memory_order_acquire);
    return (v & kErrMask) != 0 && (v & kSeen) == 0;
  }

  uint32_t Sample() const {
    uint32_t old = v_.load(std::memory_order_acquire);
    return (old & kSeen) ? old : 0;
  }

  // Returns the errno of an unseen error (0 if none) and advances `since`.
  int CheckAndAdvance(uint32_t* since) {
    uint32_t old = v_.load(std::memory_order_acquire);
    if (old == *since) return 0;
    uint32_t next = old | kSeen;
    while ((old & kSeen) == 0 && !v_.compare_exchange_weak(old, next, std::memory_order_acq_rel))
      next = old | kSeen;
    *since = next;
    return static_cast<int>(next & kErrMask);
  }

 private:
  std::atomic<uint32_t> v_{0};
};

}  // namespace stablecache
