#include "stablecache/cache.h"
#include "stablecache/direct.h"

namespace stablecache {

DirectQueue::DirectQueue(File& file, uint32_t depth)
    : file_(file), depth_(depth == 0 ? 1 : depth), s_(std::make_shared<State>()) {}

// Waits until pred() (called with the state's lock held) is true,
// reaping completions on this thread where the stack allows it
// (File::PollDirect), so no device thread has to wake this one.
template <typename Pred>
void DirectQueue::WaitUntil(std::unique_lock<std::mutex>& lk, Pred pred) {
  if (pred()) return;
  lk.unlock();
  (void)file_.PollDirect([&] {
    std::lock_guard plk(s_->mu);
    return pred();
  });
  lk.lock();
  s_->cv.wait(lk, pred);
}

DirectQueue::~DirectQueue() {
  std::unique_lock lk(s_->mu);
  WaitUntil(lk, [&] { return s_->in_flight == 0; });
}

Status DirectQueue::Submit(DirectRequest req, uint64_t tag) {
  State& s = *s_;
  {
    std::unique_lock lk(s.mu);
    WaitUntil(lk, [&] { return s.in_flight < depth_; });
    s.in_flight++;
  }
  req.polled = true;  // every wait of the queue polls
  Status st = file_.SubmitDirect(std::move(req), [state = s_, tag](Result<size_t> r) {
    // Only the shared state is touched: the queue itself may be gone as
    // soon as in_flight drops. Notified after the unlock, so the woken
    // thread finds the mutex free (a notify under the lock wakes it only
    // to block on the mutex, one more sleep and wake-up per completion).
    {
      std::lock_guard lk(state->mu);
      state->ready.push_back(Completion{tag, std::move(r)});
      state->in_flight--;
    }
    state->cv.notify_all();
  });
  if (!st.ok()) {
    {
      std::lock_guard lk(s.mu);
      s.in_flight--;
    }
    s.cv.notify_all();
  }
  return st;
}

std::vector<DirectQueue::Completion> DirectQueue::Reap(size_t min_complete) {
  State& s = *s_;
  // Fewer than asked only once nothing more is in flight.
  auto enough = [&] { return s.ready.size() >= min_complete || s.in_flight == 0; };
  std::unique_lock lk(s.mu);
  WaitUntil(lk, enough);
  std::vector<Completion> out(std::make_move_iterator(s.ready.begin()), std::make_move_iterator(s.ready.end()));
  s.ready.clear();
  return out;
}

Status DirectQueue::Drain() {
  State& s = *s_;
  std::deque<Completion> done;
  {
    std::unique_lock lk(s.mu);
    WaitUntil(lk, [&] { return s.in_flight == 0; });
    done.swap(s.ready);
  }
  Status first;
  for (auto& c : done)
    if (!c.result) first.Update(c.result.error());
  return first;
}

uint32_t DirectQueue::InFlight() const {
  std::lock_guard lk(s_->mu);
  return s_->in_flight;
}

}  // namespace stablecache
