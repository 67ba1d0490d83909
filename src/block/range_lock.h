// RangeLock: an asynchronous exclusive lock over ranges of a device, for
// layers whose I/O on one range must not interleave (a mirror repair and a
// new write, a parity read-modify-write and another write to the stripe).
//
// Acquire(begin, end, fn) runs fn once the range [begin, end) conflicts with
// no held range and no earlier waiter, inline if it is free now, otherwise
// on the thread that releases the conflict. Waiters are granted in arrival
// order among overlapping ranges, so a stream of writes cannot starve a
// repair. fn must eventually lead to exactly one Release(ticket) call.
// Nothing blocks: Submit paths and completions may both call it.
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>

namespace stablecache {

class RangeLock {
 public:
  using Ticket = uint64_t;
  using Granted = std::function<void(Ticket)>;

  void Acquire(uint64_t begin, uint64_t end, Granted fn);
  // Blocks the calling thread until granted. Not from a completion or a
  // granted callback: it could wait on a lock its own thread must release.
  Ticket AcquireSync(uint64_t begin, uint64_t end);
  void Release(Ticket t);
  size_t HeldCount() const;

 private:
  struct Entry {
    Ticket ticket;
    uint64_t begin, end;
    Granted fn;  // empty once granted
  };
  static bool Overlaps(const Entry& a, uint64_t b, uint64_t e) { return a.begin < e && b < a.end; }

  mutable std::mutex mu_;
  Ticket next_ = 1;         // GUARDED_BY(mu_)
  std::list<Entry> held_;   // GUARDED_BY(mu_)
  std::list<Entry> waiting_;  // GUARDED_BY(mu_), arrival order
};

}  // namespace stablecache
