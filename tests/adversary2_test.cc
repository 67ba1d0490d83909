// Second adversarial review of the issue-8 fixes (kept spaces, per-device
// dirty throttling, ReleaseIdleSpaces on the flusher). Each TEST is named
// after the behaviour that must hold and fails on the reviewed code (66c86d0).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "block/stacked_device.h"
#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "test_util.h"

namespace stablecache {
namespace {

using namespace std::chrono_literals;
using testing::Pattern;
using Bytes = std::vector<std::byte>;

// A layer the test drives by hand: fails the next N writes, or holds writes
// until the test lets them go.
class HoldDevice final : public StackedDevice {
 public:
  explicit HoldDevice(std::shared_ptr<BlockDevice> lower)
      : StackedDevice(std::move(lower), "hold", Stability::kUnstable) {}
  void Submit(BioPtr bio) override {
    std::unique_lock lk(mu_);
    if (bio->op == BioOp::kWrite && fail_writes_ > 0) {
      fail_writes_--;
      lk.unlock();
      Bio::Complete(std::move(bio), Status::IoError("hold: injected write error"));
      return;
    }
    if (bio->op == BioOp::kWrite && hold_writes_) {
      held_.push_back(std::move(bio));
      cv_.notify_all();
      return;
    }
    lk.unlock();
    lower_->Submit(std::move(bio));
  }
  void Configure(int fail_writes, bool hold_writes) {
    std::lock_guard lk(mu_);
    fail_writes_ = fail_writes;
    hold_writes_ = hold_writes;
  }
  bool WaitHeld(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return !held_.empty(); });
  }
  // Stops holding and lets every held write go down.
  void ReleaseAll() {
    std::deque<BioPtr> go;
    {
      std::lock_guard lk(mu_);
      hold_writes_ = false;
      go.swap(held_);
    }
    for (auto& b : go) lower_->Submit(std::move(b));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<BioPtr> held_;
  int fail_writes_ = 0;
  bool hold_writes_ = false;
};

// Runs fn on a thread; the returned future tells whether it has finished.
template <class F>
std::pair<std::thread, std::future<void>> Spawn(F fn) {
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  std::thread t([fn = std::move(fn), done]() mutable {
    fn();
    done->set_value();
  });
  return {std::move(t), std::move(fut)};
}

// ---------------------------------------------------------------------------
// ReleaseIdleSpaces runs on the flusher thread and calls WaitWritebackRange
// on every space with no handle. A kept space whose device is slow or stalled
// (its retried write is in flight) parks the only flusher there: writeback
// of every other device stops, and a writer of a healthy device that reaches
// the dirty limit waits in BalanceDirtyPages for a flusher that never comes.
// Before ReleaseIdleSpaces, the flusher only submitted to the stalled device
// and moved on.
TEST(Adversary2Flusher, AStalledDeviceOfAKeptSpaceDoesNotStopWritebackOfOtherDevices) {
  auto cache = *Cache::Create({.capacity_bytes = 1 << 20, .writeback_interval_ms = 10});
  auto mem_a = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto slow = std::make_shared<HoldDevice>(mem_a);
  {
    auto f = cache->Open(slow);
    ASSERT_TRUE(f);
    ASSERT_TRUE((*f)->Write(0, Pattern(4096, 1)));
    slow->Configure(/*fail_writes=*/1, /*hold_writes=*/false);
    ASSERT_FALSE((*f)->Close().ok()) << "the injected write error did not reach Close: test broken";
  }
  // The kept space's retry goes to a device that is now stalled.
  slow->Configure(0, /*hold_writes=*/true);
  ASSERT_TRUE(slow->WaitHeld()) << "the flusher never retried the kept page: test broken";
  std::this_thread::sleep_for(100ms);  // the flusher finishes its pass and goes to ReleaseIdleSpaces

  auto mem_b = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto g = cache->Open(mem_b);
  ASSERT_TRUE(g);
  File* file = g->get();
  std::atomic<int> written{0};
  auto [t, fut] = Spawn([&] {
    for (uint64_t i = 0; i < 200; i++) {  // twice the dirty limit (102 pages)
      if (!file->Write(i * 4096, Pattern(4096, 100 + static_cast<uint32_t>(i)))) return;
      written++;
    }
  });
  const bool done = fut.wait_for(5s) == std::future_status::ready;
  EXPECT_TRUE(done) << "writes to a healthy device hang at the dirty limit (" << written.load()
                    << " of 200 pages written): the flusher is parked in ReleaseIdleSpaces waiting for another "
                       "device's write";
  slow->ReleaseAll();
  t.join();
  EXPECT_TRUE((*g)->Close().ok());
}

// ---------------------------------------------------------------------------
// BalanceDirtyPages no longer counts the dirty pages of *other* failing
// spaces. So each failing device may dirty up to the whole dirty limit of its
// own: with four of them (0.3 each) the cache is entirely dirty pages that
// cannot be cleaned, nothing can be evicted, and AllocPage waits forever:
// a read of a healthy device hangs (so does the fourth writer). The global
// dirty limit must bound the dirty pages that cannot be cleaned.
TEST(Adversary2DirtyLimit, FailingDevicesTogetherNeverFillTheCacheAndHangAHealthyDevice) {
  auto cache = *Cache::Create({.capacity_bytes = 1 << 20,
                               .dirty_background_ratio = 0.1,
                               .dirty_ratio = 0.3,
                               .writeback_interval_ms = 10});
  std::vector<std::shared_ptr<FaultDevice>> dead;
  std::vector<std::unique_ptr<File>> files;
  std::vector<std::thread> threads;
  std::vector<std::future<void>> futs;
  for (int d = 0; d < 4; d++) {
    auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
    auto fault = std::make_shared<FaultDevice>(mem);
    auto f = cache->Open(fault);
    ASSERT_TRUE(f);
    fault->AddRule({.op = BioOp::kWrite, .count = -1});  // once open: Open formats the size record
    File* file = f->get();
    dead.push_back(fault);
    files.push_back(std::move(*f));
    auto [t, fut] = Spawn([file, d] {
      for (uint64_t i = 0; i < 256; i++)
        if (!file->Write(i * 4096, Pattern(4096, static_cast<uint32_t>(d * 1000 + i)))) return;  // refused
    });
    (void)fut.wait_for(3s);  // refused by the dirty limit, or stuck
    threads.push_back(std::move(t));
    futs.push_back(std::move(fut));
  }
  auto healthy = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto g = cache->Open(healthy, {.initial_size = 4096});
  ASSERT_TRUE(g);
  File* hf = g->get();
  auto [rt, rfut] = Spawn([hf] {
    Bytes buf(4096);
    (void)hf->Read(0, buf);
  });
  const bool read_done = rfut.wait_for(5s) == std::future_status::ready;
  EXPECT_TRUE(read_done) << "a read of a healthy device hangs: the dirty pages of failing devices ("
                         << cache->Stats().dirty_pages << " of " << cache->Stats().capacity_pages
                         << " pages) fill the cache";
  for (auto& f : dead) f->ClearRules();  // heal, so every stuck thread ends
  rt.join();
  for (auto& t : threads) t.join();
  for (auto& f : files) (void)f->Close();
}

}  // namespace
}  // namespace stablecache
