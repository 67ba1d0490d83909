// The page cache through the public File API, over RAM disks and faults.
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;

struct Fixture {
  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
};

Fixture Make(uint64_t dev_bytes = 8 << 20, uint64_t cache_bytes = 1 << 20, FileOptions fo = {}) {
  Fixture f;
  f.mem = *MemoryDevice::Create({.size_bytes = dev_bytes});
  CacheOptions co;
  co.capacity_bytes = cache_bytes;
  co.io_reserve_frames = 16;
  f.cache = *Cache::Create(co);
  f.file = std::move(*f.cache->Open(f.mem, fo));
  return f;
}

TEST(Cache, ReadsWhatWasWrittenAcrossPageBoundaries) {
  auto f = Make();
  auto data = Pattern(10000, 3);
  ASSERT_EQ(*f.file->Write(1234, data), data.size());
  EXPECT_EQ(*f.file->Size(), 1234u + 10000u);
  std::vector<std::byte> back(10000);
  ASSERT_EQ(*f.file->Read(1234, back), 10000u);
  EXPECT_EQ(back, data);
  // The unwritten head reads as zeros; reads stop at EOF.
  std::vector<std::byte> head(1234, std::byte{0xff});
  ASSERT_EQ(*f.file->Read(0, head), 1234u);
  EXPECT_EQ(head, std::vector<std::byte>(1234));
  std::vector<std::byte> tail(100);
  EXPECT_EQ(*f.file->Read(11200, tail), 34u);
  EXPECT_EQ(*f.file->Read(20000, tail), 0u);
}

TEST(Cache, SyncPutsTheBytesOnTheDevice) {
  auto f = Make();
  auto data = Pattern(3 * 4096, 4);
  ASSERT_TRUE(f.file->Write(4096, data));
  ASSERT_TRUE(f.file->Sync().ok());
  std::vector<std::byte> raw(data.size());
  f.mem->ReadRaw(4096, raw.data(), raw.size());
  EXPECT_EQ(raw, data);
  EXPECT_EQ(f.cache->Stats().dirty_pages, 0u);
}

TEST(Cache, ReadBypassingCacheReturnsWhatTheDeviceHolds) {
  auto f = Make();
  auto a = Pattern(8192, 21), b = Pattern(8192, 22);
  ASSERT_TRUE(f.file->Write(0, a));
  ASSERT_TRUE(f.file->Sync().ok());
  ASSERT_TRUE(f.file->Write(0, b));  // dirty, not yet on the device
  std::vector<std::byte> got(8192);
  ASSERT_TRUE(f.file->ReadBypassingCache(0, got).ok());
  EXPECT_EQ(got, a);
  ASSERT_TRUE(f.file->Read(0, got));
  EXPECT_EQ(got, b);  // the cache still serves the newer bytes
  EXPECT_EQ(f.cache->Stats().dirty_pages, 2u);  // and they stay dirty
  ASSERT_TRUE(f.file->Sync().ok());
  ASSERT_TRUE(f.file->ReadBypassingCache(0, got).ok());
  EXPECT_EQ(got, b);
  // Pages never cached are read too, and leave nothing behind.
  std::vector<std::byte> far(4096);
  ASSERT_TRUE(f.file->ReadBypassingCache(40960, far).ok());
  EXPECT_EQ(far, std::vector<std::byte>(4096));
  EXPECT_EQ(f.file->ReadBypassingCache(100, far).code(), Code::kInvalidArgument);
}

TEST(Cache, HolesExposedByExtensionAreZeroOnTheDeviceAfterSync) {
  auto f = Make();
  auto data = Pattern(4 * 4096, 6);
  ASSERT_TRUE(f.file->Write(0, data));
  ASSERT_TRUE(f.file->Sync().ok());
  ASSERT_TRUE(f.file->Truncate(0).ok());
  ASSERT_TRUE(f.file->Truncate(4 * 4096).ok());
  ASSERT_TRUE(f.file->Sync().ok());
  std::vector<std::byte> raw(4 * 4096, std::byte{1});
  f.mem->ReadRaw(0, raw.data(), raw.size());
  EXPECT_EQ(raw, std::vector<std::byte>(4 * 4096));
}

TEST(Cache, TruncateDropsDataAndExtensionReadsZeros) {
  auto f = Make();
  auto data = Pattern(5 * 4096, 5);
  ASSERT_TRUE(f.file->Write(0, data));
  ASSERT_TRUE(f.file->Sync().ok());  // old bytes are on the device too
  ASSERT_TRUE(f.file->Truncate(4096 + 100).ok());
  EXPECT_EQ(*f.file->Size(), 4196u);
  ASSERT_TRUE(f.file->Truncate(5 * 4096).ok());
  std::vector<std::byte> back(5 * 4096);
  ASSERT_EQ(*f.file->Read(0, back), back.size());
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 4196, data.begin()));
  EXPECT_TRUE(std::all_of(back.begin() + 4196, back.end(), [](std::byte b) { return b == std::byte{0}; }));
}

TEST(Cache, BadInputGetsClearErrors) {
  auto f = Make(1 << 20);
  std::vector<std::byte> buf(100);
  auto overflow = f.file->Write(UINT64_MAX - 10, buf);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code(), Code::kInvalidArgument);
  EXPECT_NE(overflow.error().message().find("overflows"), std::string::npos);
  auto past = f.file->Write((1 << 20) - 50, buf);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code(), Code::kNoSpace);
  EXPECT_NE(past.error().message().find("past the file limit of device"), std::string::npos) << past.error().message();
  EXPECT_EQ(f.file->Truncate(2 << 20).code(), Code::kOutOfRange);
  EXPECT_EQ(f.file->SyncRange(0, 0, 0x80).code(), Code::kInvalidArgument);
  ASSERT_TRUE(f.file->Close().ok());
  auto closed = f.file->Read(0, buf);
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().code(), Code::kClosed);
  EXPECT_EQ(f.file->Sync().code(), Code::kClosed);
  EXPECT_EQ(f.file->Close().code(), Code::kClosed);
}

TEST(Cache, OpenRejectsTooSmallDevicesAndBadOptions) {
  auto cache = *Cache::Create(CacheOptions{.capacity_bytes = 1 << 20});
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20});
  auto big = cache->Open(mem, FileOptions{.initial_size = 2 << 20});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), Code::kOutOfRange);
  EXPECT_FALSE(Cache::Create(CacheOptions{.capacity_bytes = 4096}));
  EXPECT_FALSE(Cache::Create(CacheOptions{.dirty_background_ratio = 0.9, .dirty_ratio = 0.5}));
  EXPECT_FALSE(cache->Open(nullptr));
}

TEST(Cache, AWriteFloodNeverTakesTheCachePastItsCapacity) {
  // 32 MiB through a 1 MiB cache, from 4 threads, with reads mixed in.
  auto f = Make((32 << 20) + 8192, 1 << 20);  // 32 MiB of file, and the size record
  const uint64_t cap = f.cache->Stats().capacity_pages;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      auto data = Pattern(64 << 10, t);
      std::vector<std::byte> back(64 << 10);
      for (uint64_t off = t * (8 << 20); off < (t + 1) * uint64_t(8 << 20); off += data.size()) {
        ASSERT_TRUE(f.file->Write(off, data));
        if ((off >> 16) % 7 == 0) {
          ASSERT_TRUE(f.file->Read(off, back));
        }
      }
    });
  for (auto& t : ts) t.join();
  ASSERT_TRUE(f.file->Sync().ok());
  CacheStats s = f.cache->Stats();
  EXPECT_LE(s.max_cached_pages, cap);
  EXPECT_GT(s.evictions, 0u);
  EXPECT_GT(s.throttle_waits + s.pages_written, 0u);
  // And nothing was lost on the way.
  auto want = Pattern(64 << 10, 2);
  std::vector<std::byte> raw(want.size());
  f.mem->ReadRaw(uint64_t(2) * (8 << 20) + (1 << 20), raw.data(), raw.size());
  EXPECT_EQ(raw, want);
}

TEST(Cache, SequentialReadsTriggerReadahead) {
  auto f = Make(8 << 20, 4 << 20, FileOptions{.initial_size = 4 << 20});
  std::vector<std::byte> buf(4096);
  for (uint64_t off = 0; off < (2 << 20); off += 4096) ASSERT_TRUE(f.file->Read(off, buf));
  CacheStats s = f.cache->Stats();
  EXPECT_GT(s.readahead_pages, 256u);
  EXPECT_LT(s.misses, 100u);
}

TEST(Cache, AWriteErrorReachesEverySyncOnce) {
  auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  auto cache = *Cache::Create(CacheOptions{.capacity_bytes = 1 << 20, .writeback_interval_ms = 60000});
  auto a = std::move(*cache->Open(fault));
  auto b = std::move(*cache->Open(fault));  // a second handle on the same file
  auto data = Pattern(8192, 7);
  ASSERT_TRUE(a->Write(0, data));
  fault->AddRule({.op = BioOp::kWrite, .error = EIO, .count = 1});
  Status sa = a->Sync();
  EXPECT_EQ(sa.code(), Code::kIoError);
  EXPECT_NE(sa.message().find("injected fault on write"), std::string::npos) << sa.message();
  // b retries the still-dirty pages, which now land, and still hears of the
  // error it has not seen. Then both are clean.
  EXPECT_EQ(b->Sync().code(), Code::kIoError);
  EXPECT_TRUE(a->Sync().ok());
  EXPECT_TRUE(b->Sync().ok());
  std::vector<std::byte> raw(8192);
  mem->ReadRaw(0, raw.data(), raw.size());
  EXPECT_EQ(raw, data);
  // A handle opened after everyone saw the error starts clean.
  auto c = std::move(*cache->Open(fault));
  EXPECT_TRUE(c->Sync().ok());
}

TEST(Cache, DataStaysDirtyWhileTheDeviceKeepsFailing) {
  auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  auto cache = *Cache::Create(CacheOptions{.capacity_bytes = 1 << 20, .writeback_interval_ms = 60000});
  auto f = std::move(*cache->Open(fault));
  auto data = Pattern(8192, 8);
  ASSERT_TRUE(f->Write(0, data));
  fault->AddRule({.op = BioOp::kWrite, .error = EIO, .count = -1});
  for (int i = 0; i < 3; i++) EXPECT_EQ(f->Sync().code(), Code::kIoError) << "attempt " << i;
  EXPECT_EQ(cache->Stats().dirty_pages, 2u);  // kept, not dropped
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(f->Read(0, back));
  EXPECT_EQ(back, data);  // and still readable from the cache
  fault->ClearRules();
  EXPECT_TRUE(f->Sync().ok());
  std::vector<std::byte> raw(8192);
  mem->ReadRaw(0, raw.data(), raw.size());
  EXPECT_EQ(raw, data);
}

TEST(Cache, AReadErrorIsReturnedAndNotCached) {
  auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  auto cache = *Cache::Create(CacheOptions{.capacity_bytes = 1 << 20, .readahead_pages = 1});
  auto f = std::move(*cache->Open(fault, FileOptions{.initial_size = 1 << 20}));
  fault->AddRule({.op = BioOp::kRead, .offset = 8192, .len = 4096, .error = EIO, .count = 1});
  std::vector<std::byte> buf(4096);
  auto r = f->Read(8192, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Code::kIoError);
  EXPECT_TRUE(f->Read(8192, buf));  // retried from the device, not a cached error
}

TEST(Cache, SyncRangeWritesOnlyTheRange) {
  auto f = Make();
  auto data = Pattern(8 * 4096, 8);
  ASSERT_TRUE(f.file->Write(0, data));
  ASSERT_TRUE(f.file->SyncRange(0, 4096, kSyncWaitBefore | kSyncWrite | kSyncWaitAfter).ok());
  std::vector<std::byte> raw(4096);
  f.mem->ReadRaw(0, raw.data(), 4096);
  EXPECT_TRUE(std::equal(raw.begin(), raw.end(), data.begin()));
  EXPECT_EQ(f.cache->Stats().dirty_pages, 7u);
}

TEST(Cache, TwoOpensShareOnePageCache) {
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20});
  auto cache = *Cache::Create(CacheOptions{.capacity_bytes = 1 << 20});
  auto a = std::move(*cache->Open(mem));
  auto b = std::move(*cache->Open(mem));
  ASSERT_TRUE(a->Write(0, testing::AsBytes("shared")));
  std::vector<std::byte> buf(6);
  ASSERT_EQ(*b->Read(0, buf), 6u);
  EXPECT_EQ(std::memcmp(buf.data(), "shared", 6), 0);
}

TEST(Cache, AutoPolicyIsNoneWhenNothingBelowNeedsStability) {
  auto f = Make();
  EXPECT_EQ(f.file->EffectivePolicy(), StablePolicy::kNone);
  auto g = Make(1 << 20, 1 << 20, FileOptions{.policy = StablePolicy::kWait});
  EXPECT_EQ(g.file->EffectivePolicy(), StablePolicy::kWait);
  EXPECT_FALSE(ParsePolicy("sometimes"));
  EXPECT_EQ(*ParsePolicy("fork"), StablePolicy::kFork);
}

}  // namespace
}  // namespace stablecache
