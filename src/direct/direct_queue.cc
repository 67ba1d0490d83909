#include "stablecache/cache.h"
#include "stablecache/direct.h"

namespace stablecache {

DirectQueue::DirectQueue(File& file, uint32_t depth) : file_(file), depth_(depth == 0 ? 1 : depth) {}

DirectQueue::~DirectQueue() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return in_flight_ == 0; });
}

Status DirectQueue::Submit(DirectRequest req, uint64_t tag) {
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return in_flight_ < depth_; });
    in_flight_++;
  }
  Status st = file_.SubmitDirect(std::move(req), [this, tag](Result<size_t> r) {
    // Notified under the lock: once in_flight_ drops, the destructor may
    // run, so nothing of the queue is touched after the unlock.
    std::lock_guard lk(mu_);
    ready_.push_back(Completion{tag, std::move(r)});
    in_flight_--;
    cv_.notify_all();
  });
  if (!st.ok()) {
    std::lock_guard lk(mu_);
    in_flight_--;
    cv_.notify_all();
  }
  return st;
}

std::vector<DirectQueue::Completion> DirectQueue::Reap(size_t min_complete) {
  std::unique_lock lk(mu_);
  // Fewer than asked only once nothing more is in flight.
  cv_.wait(lk, [&] { return ready_.size() >= min_complete || in_flight_ == 0; });
  std::vector<Completion> out(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.end()));
  ready_.clear();
  return out;
}

Status DirectQueue::Drain() {
  std::deque<Completion> done;
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return in_flight_ == 0; });
    done.swap(ready_);
  }
  Status first;
  for (auto& c : done)
    if (!c.result) first.Update(c.result.error());
  return first;
}

uint32_t DirectQueue::InFlight() const {
  std::lock_guard lk(mu_);
  return in_flight_;
}

}  // namespace stablecache
