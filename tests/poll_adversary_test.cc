// Adversarial tests of completion polling on the io_uring file leaf
// (FileDevice::PollUntil, Bio::polled, File::PollDirect, DirectQueue).
// Hangs abort through a watchdog, so ctest fails instead of blocking.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "devices/file_device.h"
#include "stablecache/cache.h"
#include "stablecache/direct.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::TempFile;

// Runs fn; aborts the process if it has not returned within a minute (a
// hang), so the test run fails instead of blocking.
void Watchdog(const char* what, const std::function<void()>& fn) {
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto s = std::make_shared<State>();
  std::thread dog([s, what] {
    std::unique_lock lk(s->mu);
    if (!s->cv.wait_for(lk, std::chrono::seconds(60), [&] { return s->done; })) {
      std::fprintf(stderr, "poll_adversary: %s hung\n", what);
      std::abort();
    }
  });
  fn();
  {
    std::lock_guard lk(s->mu);
    s->done = true;
  }
  s->cv.notify_all();
  dog.join();
}

struct AlignedBuf {
  explicit AlignedBuf(size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(4096, n))), len(n) {
    std::memset(p, 0x5a, n);
  }
  ~AlignedBuf() { std::free(p); }
  std::byte* p;
  size_t len;
};

std::shared_ptr<FileDevice> OpenDevice(const TempFile& tmp, unsigned qd = 256, uint64_t size = 8 << 20) {
  auto dev = FileDevice::Open(
      {.path = tmp.path(), .size_bytes = size, .create = true, .direct = DirectMode::kOn, .queue_depth = qd});
  if (!dev) return nullptr;
  return *dev;
}

// Counts completions: each bio must complete exactly once.
struct Tally {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t done = 0;
  uint64_t errors = 0;
  void Add(const Status& st) {
    {
      std::lock_guard lk(mu);
      done++;
      if (!st.ok()) errors++;
    }
    cv.notify_all();
  }
  void WaitFor(uint64_t n) {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return done >= n; });
  }
};

BioPtr MakeBio(BioOp op, uint64_t off, std::byte* p, uint32_t len, bool polled, std::shared_ptr<Tally> t,
               std::shared_ptr<std::atomic<int>> once = nullptr) {
  auto bio = Bio::Make(op, off);
  bio->AddSegment(p, len);
  bio->polled = polled;
  bio->on_complete = [t, once](BioPtr, Status st) {
    if (once && once->fetch_add(1) != 0) {
      std::fprintf(stderr, "poll_adversary: a bio completed twice\n");
      std::abort();
    }
    t->Add(st);
  };
  return bio;
}

// A polled bio whose submitter never polls still completes (the reaper
// looks every millisecond), also when the device is dropped meanwhile.
TEST(PollAdversary, PolledBiosNobodyPollsDeviceDroppedInFlight) {
  TempFile tmp("polladv");
  auto dev = OpenDevice(tmp);
  if (!dev || !dev->direct()) GTEST_SKIP() << "no O_DIRECT file device here";
  Watchdog("unpolled wait for polled bios", [&] {
    AlignedBuf buf(64 * 4096);
    auto t = std::make_shared<Tally>();
    for (int round = 0; round < 50; round++) {
      auto d = OpenDevice(tmp);
      const uint64_t before = t->done;
      for (int i = 0; i < 64; i++)
        d->Submit(MakeBio(i % 2 ? BioOp::kRead : BioOp::kWrite, uint64_t(i) * 4096, buf.p + i * 4096, 4096, true, t));
      d.reset();  // the last bio's completion destroys it, on the reaper thread
      t->WaitFor(before + 64);
    }
    EXPECT_EQ(t->errors, 0u);
  });
}

// Many threads poll one device at once while others wait (unpolled) for
// their own bios, on a ring small enough that its completion queue
// overflows. Every bio completes exactly once.
TEST(PollAdversary, ManyPollersAndUnpolledWaitersOnASmallRing) {
  TempFile tmp("polladv");
  auto dev = OpenDevice(tmp, /*qd=*/4);
  if (!dev || !dev->direct()) GTEST_SKIP() << "no O_DIRECT file device here";
  Watchdog("many pollers", [&] {
    constexpr int kPollers = 6, kWaiters = 2, kRounds = 150, kBatch = 24;
    std::vector<std::thread> threads;
    std::atomic<uint64_t> errors{0};
    for (int p = 0; p < kPollers + kWaiters; p++) {
      threads.emplace_back([&, p] {
        const bool poll = p < kPollers;
        AlignedBuf buf(kBatch * 4096);
        for (int r = 0; r < kRounds; r++) {
          auto t = std::make_shared<Tally>();
          std::vector<std::shared_ptr<std::atomic<int>>> once;
          for (int i = 0; i < kBatch; i++) {
            once.push_back(std::make_shared<std::atomic<int>>(0));
            const uint64_t off = (uint64_t(p) * kBatch + i) * 4096;
            dev->Submit(MakeBio((r + i) % 2 ? BioOp::kRead : BioOp::kWrite, off, buf.p + i * 4096, 4096, poll, t,
                                once.back()));
          }
          if (poll)
            (void)dev->PollUntil([&] {
              std::lock_guard lk(t->mu);
              return t->done == kBatch;
            });
          t->WaitFor(kBatch);
          errors += t->errors;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(errors.load(), 0u);
  });
}

// A completion run by a poller drops the last reference to the device (as
// when another thread's Close returns, the op having ended in that very
// completion, and it drops the cache and stack before the polling thread
// has left PollUntil). The device must not be destroyed under the poller:
// its destructor joined a reaper that, seeing a poller, never consumed the
// stop token, and the poller then touched the freed device.
TEST(PollAdversary, ACompletionOnThePollerDropsTheLastReference) {
  TempFile tmp("polladv");
  if (!OpenDevice(tmp)) GTEST_SKIP() << "no O_DIRECT file device here";
  Watchdog("device destroyed under its poller", [&] {
    AlignedBuf buf(4096);
    for (int round = 0; round < 20; round++) {
      auto dev = OpenDevice(tmp);
      FileDevice* raw = dev.get();
      auto t = std::make_shared<Tally>();
      dev->Submit(MakeBio(BioOp::kRead, 0, buf.p, 4096, true, t));
      // The test's reference goes once the poller is in (done() runs first
      // with the poller counted, so the reaper stands aside): then only the
      // bio holds the device, and the completion this thread runs drops it.
      (void)raw->PollUntil([&] {
        dev.reset();
        std::lock_guard lk(t->mu);
        return t->done == 1;
      });
      t->WaitFor(1);
    }
  });
}

// Direct I/O through the cache: DirectQueues destroyed with requests in
// flight, DirectIo on other threads, buffered writes whose writeback
// (unpolled) shares the ring, then Close.
TEST(PollAdversary, DirectQueuesAndWritebackThenClose) {
  TempFile tmp("polladv");
  auto dev = OpenDevice(tmp, /*qd=*/8, 16 << 20);
  if (!dev || !dev->direct()) GTEST_SKIP() << "no O_DIRECT file device here";
  Watchdog("direct queues with writeback", [&] {
    auto cache = *Cache::Create({.capacity_bytes = 4 << 20});
    auto file = *cache->Open(dev, {.initial_size = 8 << 20});
    dev.reset();
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::atomic<uint64_t> errors{0};
    for (int q = 0; q < 3; q++) {
      threads.emplace_back([&, q] {
        AlignedBuf buf(16 * 4096);
        for (int r = 0; r < 60; r++) {
          DirectQueue queue(*file, 16);
          for (int i = 0; i < 16; i++) {
            const uint64_t off = (uint64_t(q) * 64 + i) * 4096;
            DirectRequest req{(r + i) % 3 ? DirectOp::kRead : DirectOp::kWrite, off,
                              {std::span<std::byte>(buf.p + i * 4096, 4096)}};
            if (!queue.Submit(std::move(req), i).ok()) errors++;
          }
          if (r % 2) (void)queue.Reap(3);
          // Destroyed with requests in flight: waits (polling) for them.
        }
      });
    }
    threads.emplace_back([&] {
      AlignedBuf buf(4096);
      for (int r = 0; r < 300; r++) {
        auto res = file->DirectRead(uint64_t(256 + r % 64) * 4096, {buf.p, 4096});
        if (!res) errors++;
      }
    });
    threads.emplace_back([&] {
      std::vector<std::byte> data(4096, std::byte{7});
      for (int r = 0; !stop.load(); r++) {
        (void)file->Write(uint64_t(512 + r % 256) * 4096, data);
        if (r % 16 == 0) (void)file->Sync();
      }
    });
    for (size_t i = 0; i + 1 < threads.size(); i++) threads[i].join();
    stop = true;
    threads.back().join();
    EXPECT_EQ(errors.load(), 0u);
    EXPECT_TRUE(file->Close().ok());
    file.reset();
    cache.reset();
  });
}

// A completion that runs on the reaper thread (a request nobody polls)
// chains an appending direct write, as an asynchronous reader would. The
// append extends the file, so it completes inside SubmitDirect: it polls
// (File::PollDirect), and PollUntil first waits for the reaper to finish the
// completion it is running, which is this very one: the reaper waits for
// itself. Before polling it waited on a condition variable for a completion
// only the reaper could run: the same deadlock. Decided: PollUntil on the
// reaper thread does not wait for reaper_busy_ (it is that completion; the
// poller holds the device by its own reference), so such a chain completes.
TEST(PollAdversary, ACallbackOnTheReaperMayAppendWithADirectWrite) {
  TempFile tmp("polladv");
  auto dev = OpenDevice(tmp);
  if (!dev || !dev->direct()) GTEST_SKIP() << "no O_DIRECT file device here";
  Watchdog("append chained from a reaper completion", [&] {
    auto cache = *Cache::Create({.capacity_bytes = 4 << 20});
    auto file = *cache->Open(dev, {.initial_size = 8192});
    AlignedBuf rbuf(8192), wbuf(4096);
    ASSERT_TRUE(file->DirectWrite(0, {rbuf.p, 8192}));  // no holes: the read goes to the device
    Tally appended;
    Status st = file->SubmitDirect({DirectOp::kRead, 0, {std::span<std::byte>(rbuf.p, 8192)}},
                                   [&](Result<size_t> r) {
                                     EXPECT_TRUE(r);
                                     Status s = file->SubmitDirect(
                                         {DirectOp::kWrite, 8192, {std::span<std::byte>(wbuf.p, 4096)}},
                                         [&](Result<size_t> w) { appended.Add(w ? Status::Ok() : w.error()); });
                                     if (!s.ok()) appended.Add(s);
                                   });
    ASSERT_TRUE(st.ok()) << st.ToString();
    appended.WaitFor(1);
    EXPECT_EQ(appended.errors, 0u);
    EXPECT_EQ(*file->Size(), 12288u);
    EXPECT_TRUE(file->Close().ok());
  });
}

}  // namespace
}  // namespace stablecache
