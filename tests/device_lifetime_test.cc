// Device lifetime (issue 8, item 5): one device used by several caches in
// turn, and stacks dropped while reads, repairs and writebacks are in
// flight. Run under the asan and tsan presets: a use after free shows only
// there.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include <gtest/gtest.h>

#include "cache/cache_impl.h"
#include "devices/delay_device.h"
#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "fail_nth.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;
using testing::TempFile;
using Bytes = std::vector<std::byte>;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kFileBytes = 64 * kPage;


bool Bounded(std::function<void()> fn) { return testing::RunBounded(std::move(fn), std::chrono::seconds(10)); }

// "" when equal, else where they first differ.
std::string FirstDifference(const Bytes& got, const Bytes& want) {
  if (got.size() != want.size()) return fmt::format("size {} instead of {}", got.size(), want.size());
  for (size_t i = 0; i < got.size(); i++)
    if (got[i] != want[i])
      return fmt::format("byte {} is {:#04x}, not {:#04x}", i, unsigned(got[i]), unsigned(want[i]));
  return "";
}

// Round k: a new cache reads what round k-1 wrote, writes its own pattern,
// syncs, and is destroyed. Every cache has the same size, so its arena is
// likely to land where the previous one was (defect 1: the file leaf kept
// the first arena registered as io_uring fixed buffers, and moved bytes to
// and from its stale pages).
void CachesInTurn(const std::shared_ptr<BlockDevice>& dev, int rounds, int* arena_reused) {
  const std::byte* last_arena = nullptr;
  for (int k = 0; k < rounds; k++) {
    auto cache = *Cache::Create({.capacity_bytes = 1 << 20});
    const std::byte* arena = static_cast<CacheImpl&>(*cache).pool().arena().Region().data();
    if (arena == last_arena) ++*arena_reused;
    last_arena = arena;
    auto f = cache->Open(dev, {.initial_size = k == 0 ? 0 : kFileBytes});
    ASSERT_TRUE(f) << f.error().ToString();
    if (k > 0) {
      Bytes got(kFileBytes);
      auto n = (*f)->Read(0, got);
      ASSERT_TRUE(n) << "round " << k << ": " << n.error().ToString();
      EXPECT_EQ(FirstDifference(got, Pattern(kFileBytes, k - 1)), "")
          << "round " << k << " does not read what round " << k - 1 << " wrote";
    }
    ASSERT_TRUE((*f)->Write(0, Pattern(kFileBytes, k)));
    Status st = (*f)->Sync();
    ASSERT_TRUE(st.ok()) << "round " << k << ": " << st.ToString();
    ASSERT_TRUE((*f)->Close().ok());
  }
}

class DeviceLifetimeFile : public ::testing::TestWithParam<const char*> {};

TEST_P(DeviceLifetimeFile, SeveralCachesInTurnOverOneFileDevice) {
  TempFile tmp("lifetime");
  auto dev = BuildStack(fmt::format("file:{}(size=4M,direct={})", tmp.path(), GetParam()));
  ASSERT_TRUE(dev) << dev.error().ToString();
  constexpr int kRounds = 4;
  int reused = 0;
  CachesInTurn(*dev, kRounds, &reused);
  fmt::print("[lifetime] {} of {} caches got the previous cache's arena address\n", reused, kRounds - 1);
  // What the file holds, read with plain pread: the last round's bytes.
  Bytes disk(kFileBytes);
  int fd = ::open(tmp.path().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pread(fd, disk.data(), disk.size(), 0), static_cast<ssize_t>(disk.size()));
  ::close(fd);
  EXPECT_EQ(FirstDifference(disk, Pattern(kFileBytes, kRounds - 1)), "")
      << "the file does not hold what the last Sync acknowledged";
}

INSTANTIATE_TEST_SUITE_P(Direct, DeviceLifetimeFile, ::testing::Values("auto", "off"));

TEST(DeviceLifetime, SeveralCachesInTurnOverOneMemoryDevice) {
  std::shared_ptr<BlockDevice> dev = *MemoryDevice::Create({.size_bytes = 4 << 20});
  int reused = 0;
  CachesInTurn(dev, 4, &reused);
}

// Many short-lived caches whose writeback completes on the device's own
// thread (late copy): the completion must not touch a cache that the
// closer, woken by EndWriteback, has already destroyed.
TEST(DeviceLifetime, CachesDestroyedRightAfterWritebackCompletesOnAnotherThread) {
  std::shared_ptr<BlockDevice> dev = *MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true});
  for (int i = 0; i < 200; i++) {
    auto cache = *Cache::Create({.capacity_bytes = 256 << 10});
    auto f = *cache->Open(dev);
    ASSERT_TRUE(f->Write(0, Pattern(4 * kPage, i)));
    ASSERT_TRUE(f->Close().ok());
    f.reset();
    cache.reset();  // the last reference, while the device thread may still be in EndBatch
  }
}

// A mirror leg with a latent bad block at `offset`, and a slow medium so
// the repair write is still in flight when the caller's read returns.
struct SlowLeg {
  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<FaultDevice> fault;
};
SlowLeg MakeSlowLeg() {
  SlowLeg l;
  l.mem = *MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .delay = std::chrono::milliseconds(30)});
  l.fault = std::make_shared<FaultDevice>(l.mem);
  return l;
}

// Reads through a cache need a repair (defect 6): the caller's read is
// completed before the repair write ends; the test then drops the File, the
// Cache and the stack while that write is in flight, and keeps only the
// legs' media, as a disk outlives the array object. The repair's completion
// must not touch the freed mirror.
template <typename Device>
void DropStackWithRepairInFlight(size_t legs_n, uint64_t bad_leg, uint64_t bad_offset) {
  std::vector<SlowLeg> legs;
  std::vector<std::shared_ptr<BlockDevice>> lower;
  for (size_t i = 0; i < legs_n; i++) {
    legs.push_back(MakeSlowLeg());
    lower.push_back(legs.back().fault);
  }
  auto dev = Device::Create(lower);
  ASSERT_TRUE(dev);
  lower.clear();
  std::shared_ptr<BlockDevice> stack = *dev;
  const Bytes data = Pattern(16 * kPage, 6);
  {
    auto cache = *Cache::Create({.capacity_bytes = 1 << 20});
    auto f = *cache->Open(stack);
    ASSERT_TRUE(f->Write(0, data));
    ASSERT_TRUE(f->Close().ok());
  }
  legs[bad_leg].fault->AddRule({.op = BioOp::kRead, .offset = bad_offset, .len = kPage, .heal_on_write = true});
  auto cache = *Cache::Create({.capacity_bytes = 1 << 20});
  auto f = *cache->Open(stack, {.initial_size = data.size()});
  Bytes got(data.size());
  auto n = f->Read(0, got);
  ASSERT_TRUE(n) << n.error().ToString();
  EXPECT_EQ(FirstDifference(got, data), "");
  const size_t in_flight = legs[bad_leg].mem->PendingWrites();
  f.reset();
  cache.reset();
  stack.reset();
  dev = Err(Status::Closed("dropped"));
  // The legs finish their writes with nobody above them.
  for (auto& l : legs) l.mem->WaitForPendingAtMost(0);
  fmt::print("[lifetime] {} repair write(s) were in flight when the stack was dropped\n", in_flight);
}

TEST(DeviceLifetime, MirrorDroppedWithARepairInFlight) {
  // The first read goes to leg 0.
  EXPECT_TRUE(Bounded([] { DropStackWithRepairInFlight<MirrorDevice>(2, 0, 0); })) << "hang";
}

TEST(DeviceLifetime, ParityDroppedWithARepairInFlight) {
  // Data block 0 lives on leg 0 (stripe 0 keeps parity on the last leg).
  EXPECT_TRUE(Bounded([] { DropStackWithRepairInFlight<ParityDevice>(3, 0, 0); })) << "hang";
}

// The same without a cache: bios submitted straight to the stack, which is
// dropped before they complete. Reads, writes and flushes; the submitter
// waits for every completion, the stack object does not.
template <typename Device>
void DropStackWithBiosInFlight(size_t legs_n) {
  std::vector<SlowLeg> legs;
  std::vector<std::shared_ptr<BlockDevice>> lower;
  for (size_t i = 0; i < legs_n; i++) {
    legs.push_back(MakeSlowLeg());
    lower.push_back(legs.back().fault);
  }
  std::shared_ptr<BlockDevice> stack = *Device::Create(lower);
  lower.clear();
  struct Waiter {
    std::atomic<uint32_t> left{0};
  };
  auto w = std::make_shared<Waiter>();
  auto buf = std::make_shared<Bytes>(32 * kPage);
  auto submit = [&](BioOp op, uint64_t off, uint32_t len) {
    auto bio = Bio::Make(op, off, Stability::kStable);
    if (op != BioOp::kFlush) bio->AddSegment(buf->data() + off % buf->size(), len);
    w->left.fetch_add(1);
    bio->on_complete = [w, buf](BioPtr, Status) {
      w->left.fetch_sub(1);
      w->left.notify_all();
    };
    stack->Submit(std::move(bio));
  };
  for (uint64_t i = 0; i < 8; i++) submit(BioOp::kWrite, i * 2 * kPage, 2 * kPage);
  for (uint64_t i = 0; i < 8; i++) submit(BioOp::kRead, (16 + i) * kPage, kPage);
  submit(BioOp::kFlush, 0, 0);
  stack.reset();
  for (uint32_t left; (left = w->left.load()) != 0;) w->left.wait(left);
  for (auto& l : legs) l.mem->WaitForPendingAtMost(0);
}

// A delay layer dropped while the bio it delays is still below it.
TEST(DeviceLifetime, DelayDroppedWithABioInFlight) {
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .delay = std::chrono::milliseconds(30)});
  std::shared_ptr<BlockDevice> delay = std::make_shared<DelayDevice>(mem, std::chrono::milliseconds(5));
  auto done = std::make_shared<std::atomic<uint32_t>>(0);
  auto buf = std::make_shared<Bytes>(kPage);
  auto bio = Bio::Make(BioOp::kWrite, 0, Stability::kStable);
  bio->AddSegment(buf->data(), kPage);
  bio->on_complete = [done, buf](BioPtr, Status) {
    done->store(1);
    done->notify_all();
  };
  delay->Submit(std::move(bio));
  delay.reset();
  EXPECT_TRUE(Bounded([done] { done->wait(0); })) << "hang: the bio's completion was lost";
}

TEST(DeviceLifetime, MirrorDroppedWithBiosInFlight) {
  EXPECT_TRUE(Bounded([] { DropStackWithBiosInFlight<MirrorDevice>(2); })) << "hang: a completion was lost";
}

TEST(DeviceLifetime, ParityDroppedWithBiosInFlight) {
  EXPECT_TRUE(Bounded([] { DropStackWithBiosInFlight<ParityDevice>(3); })) << "hang: a completion was lost";
}

}  // namespace
}  // namespace stablecache
