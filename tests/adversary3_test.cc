// Third adversarial review: teardown and lifetime (CloseSpace,
// ReleaseIdleSpaces, ~CacheImpl, writeback completions). Each TEST fails on
// the reviewed code (0e4c7e0).
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
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "test_util.h"

namespace stablecache {
namespace {

using namespace std::chrono_literals;
using testing::Pattern;
using Bytes = std::vector<std::byte>;

// Holds every write until the test lets them go.
class HoldWrites final : public StackedDevice {
 public:
  explicit HoldWrites(std::shared_ptr<BlockDevice> lower)
      : StackedDevice(std::move(lower), "hold3", Stability::kUnstable) {}
  void Submit(BioPtr bio) override {
    std::unique_lock lk(mu_);
    if (bio->op == BioOp::kWrite && hold_) {
      held_.push_back(std::move(bio));
      return;
    }
    lk.unlock();
    lower_->Submit(std::move(bio));
  }
  void Hold() {
    std::lock_guard lk(mu_);
    hold_ = true;
  }
  void ReleaseAll() {
    std::deque<BioPtr> go;
    {
      std::lock_guard lk(mu_);
      hold_ = false;
      go.swap(held_);
    }
    for (auto& b : go) lower_->Submit(std::move(b));
  }

 private:
  std::mutex mu_;
  std::deque<BioPtr> held_;
  bool hold_ = false;
};

// "One File may be used by many threads at once" (cache.h). A Write that
// has passed its open check and sleeps in AllocPage (the cache is full of
// another device's pages under writeback) while another thread Closes the
// same handle: Close sees nothing dirty, CloseSpace erases the space and
// ReleaseSpace drops its pages. The Write then wakes, puts its page into the
// released space (no longer in spaces_, so no flusher ever sees it), marks
// it dirty and returns success. Nobody will ever write it: the data is gone
// when the handle goes, with no error anywhere, and until then the cache's
// dirty count holds a page no flusher can clean.
TEST(Adversary3Lifetime, AWriteThatOutlastsACloseOnAnotherThreadIsNotSilentlyDropped) {
  constexpr uint64_t kFileBytes = (1 << 20) - 8192;  // the last 8 KiB hold the file size record
  auto cache = *Cache::Create({.capacity_bytes = 16 * 4096,
                               .io_reserve_frames = 4,
                               .dirty_background_ratio = 1.0,
                               .dirty_ratio = 1.0,
                               .writeback_interval_ms = 60000,
                               .readahead_pages = 1});
  // Device B fills the whole cache with pages under (held) writeback.
  auto mem_b = *MemoryDevice::Create({.size_bytes = 1 << 20});
  auto hold_b = std::make_shared<HoldWrites>(mem_b);
  auto fb = cache->Open(hold_b, {.initial_size = kFileBytes});
  ASSERT_TRUE(fb);
  for (uint64_t i = 0; i < 16; i++) ASSERT_TRUE((*fb)->Write(i * 4096, Pattern(4096, 50 + i)));
  hold_b->Hold();
  ASSERT_TRUE((*fb)->SyncRange(0, 0, kSyncWrite).ok());
  ASSERT_EQ(cache->Stats().writeback_pages, 16u) << "test broken: the cache is not full of pages in flight";

  // Device A: a writer thread blocks in AllocPage, past the open check.
  auto mem_a = *MemoryDevice::Create({.size_bytes = 1 << 20});
  auto fa = cache->Open(mem_a, {.initial_size = kFileBytes});
  ASSERT_TRUE(fa);
  File* file_a = fa->get();
  std::promise<Result<size_t>> wrote;
  auto wrote_f = wrote.get_future();
  std::thread writer([&] { wrote.set_value(file_a->Write(0, Pattern(4096, 7))); });
  ASSERT_EQ(wrote_f.wait_for(200ms), std::future_status::timeout) << "test broken: the write did not block";

  // Another thread (here: this one) closes the handle.
  // Close may wait for the Write already running (it does: it drains the
  // handle's operations, then syncs); let the pool free up meanwhile.
  auto close_f = std::async(std::launch::async, [&] { return file_a->Close(); });
  std::this_thread::sleep_for(200ms);
  hold_b->ReleaseAll();
  ASSERT_EQ(close_f.wait_for(10s), std::future_status::ready) << "Close hangs behind a blocked Write";
  Status closed = close_f.get();
  ASSERT_EQ(wrote_f.wait_for(5s), std::future_status::ready) << "the blocked Write never finished";
  writer.join();
  Result<size_t> w = wrote_f.get();
  if (!w) {
    SUCCEED() << "the write was refused: " << w.error().ToString();
    return;
  }
  EXPECT_TRUE(closed.ok()) << closed.ToString();
  EXPECT_EQ(cache->Stats().dirty_pages, 0u) << "Close returned with the racing write's page still dirty";
  fa->reset();  // the handle goes (it was closed)
  auto again = cache->Open(mem_a, {.initial_size = kFileBytes});
  ASSERT_TRUE(again);
  Bytes got(4096);
  ASSERT_TRUE((*again)->Read(0, got));
  EXPECT_TRUE(got == Pattern(4096, 7)) << "Write returned success after racing Close, then its data vanished without an "
                                       "error: the page went into a space CloseSpace had already released";
  EXPECT_TRUE((*again)->Close().ok());
  EXPECT_TRUE((*fb)->Close().ok());
}

}  // namespace
}  // namespace stablecache
