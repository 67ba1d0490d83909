// DelayDevice: adds a fixed latency to every bio's completion (a timer
// thread completes them in order once due). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "block/stacked_device.h"
#include "util/completion_thread.h"

namespace stablecache {

class DelayDevice final : public StackedDevice {
 public:
  DelayDevice(std::shared_ptr<BlockDevice> lower, std::chrono::microseconds delay);
  ~DelayDevice() override;
  void Submit(BioPtr bio) override;

 private:
  struct Due {
    BioPtr bio;
    Status status;
    std::chrono::steady_clock::time_point at;
  };
  void Run();

  std::chrono::microseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Due> due_;  // GUARDED_BY(mu_), ordered by `at`
  bool stop_ = false;    // GUARDED_BY(mu_)
  CompletionThread timer_;
};

}  // namespace stablecache
