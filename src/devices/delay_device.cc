#include "devices/delay_device.h"

namespace stablecache {

DelayDevice::DelayDevice(std::shared_ptr<BlockDevice> lower, std::chrono::microseconds delay)
    : StackedDevice(std::move(lower), "delay", Stability::kUnstable), delay_(delay) {
  timer_.Start([this] { Run(); });
}

DelayDevice::~DelayDevice() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (timer_.OnThisThread()) {
    // A completion the timer ran dropped us: finish the rest now.
    std::unique_lock lk(mu_);
    while (!due_.empty()) {
      Due d = std::move(due_.front());
      due_.pop_front();
      lk.unlock();
      Bio::Complete(std::move(d.bio), std::move(d.status));
      lk.lock();
    }
  }
  timer_.Stop();
}

void DelayDevice::Submit(BioPtr bio) {
  counters_.CountBio(*bio);
  HoldDeviceWhileInFlight(*this, *bio);
  Bio::Completion inner = std::move(bio->on_complete);
  bio->on_complete = [this, inner = std::move(inner)](BioPtr b, Status st) mutable {
    b->on_complete = std::move(inner);
    // Notify under the lock: once the timer completes this bio its owner
    // may destroy the device, so cv_ must not be touched after unlocking.
    std::lock_guard lk(mu_);
    due_.push_back(Due{std::move(b), std::move(st), std::chrono::steady_clock::now() + delay_});
    cv_.notify_all();
  };
  lower_->Submit(std::move(bio));
}

void DelayDevice::Run() {
  std::unique_lock lk(mu_);
  for (;;) {
    if (due_.empty()) {
      if (stop_) return;
      cv_.wait(lk);
      continue;
    }
    if (!stop_ && std::chrono::steady_clock::now() < due_.front().at) {
      cv_.wait_until(lk, due_.front().at);
      continue;
    }
    Due d = std::move(due_.front());
    due_.pop_front();
    lk.unlock();
    Bio::Complete(std::move(d.bio), std::move(d.status));
    if (CompletionThread::OwnerGone()) return;  // that completion destroyed us
    lk.lock();
  }
}

}  // namespace stablecache
