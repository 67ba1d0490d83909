// Leaf devices and the fault layer, driven through the BlockDevice API.
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "devices/fault_device.h"
#include "devices/file_device.h"
#include "devices/memory_device.h"
#include "memory/frame_arena.h"
#include "test_util.h"

namespace stablecache {

TEST(MemoryDevice, WritesAndReadsBack) {
  auto dev = MemoryDevice::Create({.size_bytes = 1 << 20});
  ASSERT_TRUE(dev);
  auto data = testing::Pattern(8192, 1);
  ASSERT_TRUE(WriteSync(**dev, 4096, data.data(), 8192).ok());
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(ReadSync(**dev, 4096, back.data(), 8192).ok());
  EXPECT_EQ(back, data);
}

TEST(MemoryDevice, RejectsMisalignedAndOutOfRangeBios) {
  auto dev = MemoryDevice::Create({.size_bytes = 1 << 20});
  ASSERT_TRUE(dev);
  std::vector<std::byte> buf(8192);
  Status a = WriteSync(**dev, 100, buf.data(), 512);
  EXPECT_EQ(a.code(), Code::kInvalidArgument);
  EXPECT_NE(a.message().find("not aligned"), std::string::npos) << a.message();
  Status b = WriteSync(**dev, (1 << 20) - 4096, buf.data(), 8192);
  EXPECT_EQ(b.code(), Code::kOutOfRange);
  EXPECT_NE(b.message().find("beyond the device end"), std::string::npos) << b.message();
}

TEST(MemoryDevice, LateCopyTakesTheBytesAtCompletion) {
  auto dev = MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .manual_release = true});
  ASSERT_TRUE(dev);
  std::vector<std::byte> page(4096, std::byte{1});
  std::atomic<bool> done{false};
  auto bio = Bio::Make(BioOp::kWrite, 0, Stability::kStable);
  bio->AddSegment(page.data(), 4096);
  bio->on_complete = [&](BioPtr, Status st) {
    EXPECT_TRUE(st.ok());
    done = true;
    done.notify_all();
  };
  (*dev)->Submit(std::move(bio));
  (*dev)->WaitForPendingWrites(1);
  EXPECT_FALSE(done.load());
  std::fill(page.begin(), page.end(), std::byte{2});  // scribble during the "DMA"
  (*dev)->ReleaseWrites(1);
  done.wait(false);
  std::byte b;
  (*dev)->ReadRaw(0, &b, 1);
  EXPECT_EQ(b, std::byte{2});  // the medium got the late bytes
}

TEST(FaultDevice, FailsMatchingBiosAndPassesTheRest) {
  auto mem = MemoryDevice::Create({.size_bytes = 1 << 20});
  ASSERT_TRUE(mem);
  auto fault = std::make_shared<FaultDevice>(*mem);
  fault->AddRule({.op = BioOp::kRead, .offset = 8192, .len = 4096, .error = EIO, .count = 2});
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(ReadSync(*fault, 0, buf.data(), 4096).ok());
  EXPECT_TRUE(WriteSync(*fault, 8192, buf.data(), 4096).ok());
  Status st = ReadSync(*fault, 8192, buf.data(), 4096);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_NE(st.message().find("injected fault on read at offset 8192"), std::string::npos) << st.message();
  EXPECT_FALSE(ReadSync(*fault, 4096, buf.data(), 8192).ok());  // overlaps
  EXPECT_TRUE(ReadSync(*fault, 8192, buf.data(), 4096).ok());   // count used up
  EXPECT_EQ(fault->injected(), 2u);
}

class FileDeviceTest : public ::testing::TestWithParam<DirectMode> {};

TEST_P(FileDeviceTest, RoundTripsThroughIoUring) {
  testing::TempFile f;
  auto dev = FileDevice::Open({.path = f.path(), .size_bytes = 4 << 20, .create = true, .direct = GetParam()});
  ASSERT_TRUE(dev) << dev.error().ToString();
  if (GetParam() == DirectMode::kOff) {
    EXPECT_FALSE((*dev)->direct());
  }
  // A registered region, as the cache provides; and plain heap memory.
  auto arena = FrameArena::Create(4);
  ASSERT_TRUE(arena);
  (*dev)->RegisterMemory((*arena)->Region());
  auto data = testing::Pattern(3 * 4096, 9);
  auto bio = Bio::Make(BioOp::kWrite, 1 << 20, Stability::kStable);
  for (int i = 0; i < 3; i++) {
    std::memcpy((*arena)->Data(i), data.data() + i * 4096, 4096);
    bio->AddSegment((*arena)->Data(i), 4096);
  }
  ASSERT_TRUE(SubmitAndWait(**dev, std::move(bio)).ok());
  ASSERT_TRUE(FlushSync(**dev).ok());
  std::vector<std::byte> back(3 * 4096);
  ASSERT_TRUE(ReadSync(**dev, 1 << 20, back.data(), back.size()).ok());
  EXPECT_EQ(back, data);
  std::vector<LayerStats> stats;
  (*dev)->CollectStats(stats);
  EXPECT_EQ(stats.at(0).bytes_written, 3u * 4096);
}

INSTANTIATE_TEST_SUITE_P(Modes, FileDeviceTest, ::testing::Values(DirectMode::kAuto, DirectMode::kOff));

TEST(FileDevice, ErrorsNameTheFile) {
  auto missing = FileDevice::Open({.path = "/nonexistent-dir/disk"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("/nonexistent-dir/disk"), std::string::npos);
  testing::TempFile f;
  auto tiny = FileDevice::Open({.path = f.path(), .create = true});
  ASSERT_FALSE(tiny);
  EXPECT_EQ(tiny.error().code(), Code::kNoSpace);
}

TEST(FileDevice, ManyConcurrentBiosAllComplete) {
  testing::TempFile f;
  auto dev = FileDevice::Open({.path = f.path(), .size_bytes = 8 << 20, .create = true, .queue_depth = 8});
  ASSERT_TRUE(dev);
  constexpr int kBios = 500;  // far more than the queue depth: back-pressure
  std::vector<std::vector<std::byte>> bufs;
  for (int i = 0; i < kBios; i++) bufs.push_back(testing::Pattern(4096, i));
  std::atomic<int> done{0};
  for (int i = 0; i < kBios; i++) {
    auto bio = Bio::Make(BioOp::kWrite, uint64_t(i) * 4096, Stability::kStable);
    bio->AddSegment(bufs[i].data(), 4096);
    bio->on_complete = [&](BioPtr, Status st) {
      EXPECT_TRUE(st.ok()) << st.ToString();
      done.fetch_add(1);
      done.notify_all();
    };
    (*dev)->Submit(std::move(bio));
  }
  for (int d; (d = done.load()) < kBios;) done.wait(d);
  std::vector<std::byte> back(4096);
  for (int i = 0; i < kBios; i += 37) {
    ASSERT_TRUE(ReadSync(**dev, uint64_t(i) * 4096, back.data(), 4096).ok());
    EXPECT_EQ(back, bufs[i]) << "block " << i;
  }
}

TEST(FileDevice, BiosOfAThreadThatExitedStillComplete) {
  // io_uring cancels io-wq work whose submitting thread has exited; the
  // device must finish those bios itself (wac's writers submit writeback
  // from sync_range, then end).
  testing::TempFile f;
  auto dev = FileDevice::Open({.path = f.path(), .size_bytes = 16 << 20, .create = true, .direct = DirectMode::kOff});
  ASSERT_TRUE(dev);
  constexpr int kThreads = 16, kPerThread = 256;  // contend on the inode: io_uring punts
  std::vector<std::vector<std::byte>> bufs;
  for (int i = 0; i < kThreads * kPerThread; i++) bufs.push_back(testing::Pattern(4096, 100 + i));
  std::atomic<int> done{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++)
    threads.emplace_back([&, t] {
      for (int i = t * kPerThread; i < (t + 1) * kPerThread; i++) {
        auto bio = Bio::Make(BioOp::kWrite, uint64_t(i) * 4096, Stability::kStable);
        bio->AddSegment(bufs[i].data(), 4096);
        bio->on_complete = [&](BioPtr, Status st) {
          if (!st.ok()) failed.fetch_add(1);
          done.fetch_add(1);
          done.notify_all();
        };
        (*dev)->Submit(std::move(bio));
      }
      (*dev)->Submit([&] {
        auto fl = Bio::Make(BioOp::kFlush, 0);
        fl->on_complete = [&](BioPtr, Status st) {
          if (!st.ok()) failed.fetch_add(1);
          done.fetch_add(1);
          done.notify_all();
        };
        return fl;
      }());
    });  // each thread ends with its I/O in flight
  for (auto& t : threads) t.join();
  for (int d; (d = done.load()) < kThreads * (kPerThread + 1);) done.wait(d);
  EXPECT_EQ(failed.load(), 0);
  std::vector<std::byte> back(4096);
  for (int i = 0; i < kThreads * kPerThread; i += 13) {
    ASSERT_TRUE(ReadSync(**dev, uint64_t(i) * 4096, back.data(), 4096).ok());
    EXPECT_EQ(back, bufs[i]) << "block " << i;
  }
}

}  // namespace stablecache
