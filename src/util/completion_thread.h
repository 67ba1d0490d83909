// CompletionThread: a device's own worker thread (an io_uring reaper, a
// timer, a late-DMA engine) that runs bio completions. Any completion may
// drop the last reference to the device that owns the thread, so the
// device's destructor can run on this very thread, where it cannot join.
//
// The owner calls Stop() from its destructor: on another thread it joins;
// on the worker itself it detaches and raises a thread-local flag, and the
// worker's loop must return as soon as the completion it is running
// returns, touching nothing of the owner (check OwnerGone() right after
// every completion). REQUIRES: the owner drains its own queue before Stop
// when OnThisThread(), since the loop will not run again.
#pragma once

#include <thread>
#include <utility>

namespace stablecache {

class CompletionThread {
 public:
  template <typename Fn>
  void Start(Fn fn) {
    thread_ = std::thread(std::move(fn));
  }
  bool OnThisThread() const { return thread_.get_id() == std::this_thread::get_id(); }
  void Stop() {
    if (!thread_.joinable()) return;
    if (OnThisThread()) {
      OwnerGone() = true;
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  // True on a worker whose owner was destroyed by the completion it ran.
  static bool& OwnerGone() {
    thread_local bool gone = false;
    return gone;
  }

 private:
  std::thread thread_;
};

}  // namespace stablecache
