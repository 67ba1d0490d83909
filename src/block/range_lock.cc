#include "block/range_lock.h"

#include <atomic>
#include <cassert>
#include <memory>
#include <vector>

namespace stablecache {

void RangeLock::Acquire(uint64_t begin, uint64_t end, Granted fn) {
  Ticket t;
  {
    std::lock_guard lk(mu_);
    t = next_++;
    bool blocked = false;
    for (const Entry& h : held_) blocked |= Overlaps(h, begin, end);
    for (const Entry& w : waiting_) blocked |= Overlaps(w, begin, end);
    if (blocked) {
      waiting_.push_back(Entry{t, begin, end, std::move(fn)});
      return;
    }
    held_.push_back(Entry{t, begin, end, {}});
  }
  fn(t);
}

void RangeLock::Release(Ticket t) {
  std::vector<std::pair<Ticket, Granted>> run;
  {
    std::lock_guard lk(mu_);
    bool found = false;
    for (auto it = held_.begin(); it != held_.end(); ++it) {
      if (it->ticket != t) continue;
      held_.erase(it);
      found = true;
      break;
    }
    assert(found && "RangeLock::Release of a ticket not held");
    (void)found;
    // Grant, in order, each waiter that overlaps neither a held range nor
    // an earlier waiter that is still waiting.
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      bool blocked = false;
      for (const Entry& h : held_) blocked |= Overlaps(h, it->begin, it->end);
      for (auto e = waiting_.begin(); e != it && !blocked; ++e) blocked |= Overlaps(*e, it->begin, it->end);
      if (blocked) {
        ++it;
        continue;
      }
      run.emplace_back(it->ticket, std::move(it->fn));
      it->fn = {};
      held_.splice(held_.end(), waiting_, it++);
    }
  }
  for (auto& [ticket, fn] : run) fn(ticket);
}

RangeLock::Ticket RangeLock::AcquireSync(uint64_t begin, uint64_t end) {
  auto granted = std::make_shared<std::atomic<Ticket>>(0);
  Acquire(begin, end, [granted](Ticket t) {
    granted->store(t, std::memory_order_release);
    granted->notify_all();
  });
  for (;;) {
    Ticket t = granted->load(std::memory_order_acquire);
    if (t != 0) return t;
    granted->wait(0, std::memory_order_acquire);
  }
}

size_t RangeLock::HeldCount() const {
  std::lock_guard lk(mu_);
  return held_.size();
}

}  // namespace stablecache
