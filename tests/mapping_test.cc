// File::Map: mapped loads and stores on the cache's own pages
// (stablecache/mapping.h).
#include <setjmp.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "stablecache/stack.h"
#include "mapping_test_util.h"
#include "test_util.h"

namespace stablecache {
namespace {

using namespace maptest;
using testing::Pattern;
using Bytes = std::vector<std::byte>;
constexpr uint64_t kPage = 4096;

TEST(Mapping, LoadsSeeWhatWriteStoredAndStoresReachRead) {
  auto cache = NewCache();
  auto f = std::move(*cache->Open(NewMemory(), Mappable()));
  const Bytes a = Pattern(4 * kPage, 1);
  ASSERT_TRUE(f->Write(0, a));
  auto m = f->Map(0, 4 * kPage, MapAccess::kReadWrite);
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(0, std::memcmp((*m)->data(), a.data(), a.size()));
  const Bytes b = Pattern(kPage, 2);
  std::memcpy((*m)->data() + kPage + 100, b.data(), 1000);
  Bytes want = a;
  std::memcpy(want.data() + kPage + 100, b.data(), 1000);
  EXPECT_EQ(ReadFile(*f, 0, want.size()), want);
  // And a Write after the mapping faulted the page in shows through it.
  ASSERT_TRUE(f->Write(3 * kPage, b));
  EXPECT_EQ(0, std::memcmp((*m)->data() + 3 * kPage, b.data(), kPage));
  ASSERT_TRUE((*m)->Unmap().ok());
  ASSERT_TRUE(f->Close().ok());
}

TEST(Mapping, TwoMappingsOfOneFileShareTheirBytes) {
  auto cache = NewCache();
  auto f = std::move(*cache->Open(NewMemory(), Mappable(8 * kPage)));
  auto m1 = std::move(*f->Map(0, 8 * kPage, MapAccess::kReadWrite));
  auto m2 = std::move(*f->Map(4 * kPage, 4 * kPage, MapAccess::kRead));
  std::memset(m1->data() + 5 * kPage, 0x5a, 10);
  EXPECT_EQ(m2->data()[kPage], std::byte{0x5a});
  EXPECT_EQ(m2->offset(), 4 * kPage);
}

// Stores reach the device at Msync(kSync) and survive a reopen; a store
// after writeback (page_mkclean write-protected the page) dirties the page
// again and reaches the device at the next Msync.
class MappingPolicies : public ::testing::TestWithParam<StablePolicy> {};

TEST_P(MappingPolicies, StoresAfterEveryMsyncSurviveReopen) {
  auto mem = NewMemory();
  {
    auto cache = NewCache(64ull << 20, GetParam());
    auto f = std::move(*cache->Open(mem, Mappable(16 * kPage)));
    auto m = std::move(*f->Map(0, 16 * kPage, MapAccess::kReadWrite));
    for (int round = 0; round < 3; round++) {
      for (uint64_t p = 0; p < 16; p += 3) std::memset(m->data() + p * kPage + round, 'a' + round, 100);
      ASSERT_TRUE(m->Msync(0, 0, MsyncMode::kSync).ok());
      ASSERT_EQ(cache->Stats().dirty_pages, 0u) << "round " << round;
    }
    ASSERT_TRUE(m->Unmap().ok());
    ASSERT_TRUE(f->Close().ok());
  }
  auto f = std::move(*NewCache()->Open(mem, Mappable()));
  ASSERT_EQ(*f->Size(), 16 * kPage);
  for (uint64_t p = 0; p < 16; p++) {
    Bytes got = ReadFile(*f, p * kPage, kPage);
    Bytes want(kPage);
    if (p % 3 == 0)
      for (int round = 0; round < 3; round++) std::memset(want.data() + round, 'a' + round, 100);
    EXPECT_EQ(got, want) << "page " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(All, MappingPolicies,
                         ::testing::Values(StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce,
                                           StablePolicy::kFork),
                         [](const auto& p) { return std::string(PolicyName(p.param)); });

// Clean mapped pages are evicted (and unmapped) under pressure and fault
// back in from the device; dirty ones are written back first.
TEST(Mapping, AMappingFarLargerThanTheCacheKeepsEveryStore) {
  // On tmpfs when there is one: random 4 KiB writes into a sparse image on
  // a disk filesystem measure its block allocator, not the mapping.
  const char* tmpdir = std::getenv("TMPDIR");
  if (std::filesystem::is_directory("/dev/shm")) setenv("TMPDIR", "/dev/shm", 1);
  testing::TempFile img("map-big");
  if (tmpdir) setenv("TMPDIR", tmpdir, 1); else unsetenv("TMPDIR");
  constexpr uint64_t kFile = 1ull << 30;
  auto dev = BuildStack("file", BuildOptions{img.path(), kFile + 8192});
  ASSERT_TRUE(dev) << dev.error().ToString();
  auto cache = NewCache(64ull << 20, StablePolicy::kAuto, 50);
  auto f = std::move(*cache->Open(*dev, Mappable(kFile)));
  auto m = f->Map(0, kFile, MapAccess::kReadWrite);
  ASSERT_TRUE(m) << m.error().ToString();
  std::byte* base = (*m)->data();
  std::map<uint64_t, uint64_t> model;  // page -> last sequence stored
  std::mt19937_64 rng(42);
  uint64_t wrong = 0;
  for (uint64_t op = 1; op <= 40000; op++) {
    const uint64_t page = rng() % (kFile / kPage);
    uint64_t* words = reinterpret_cast<uint64_t*>(base + page * kPage);
    if (rng() % 2) {
      words[0] = page;
      words[511] = op;
      model[page] = op;
    } else {
      auto it = model.find(page);
      const uint64_t want_page = it == model.end() ? 0 : page, want_seq = it == model.end() ? 0 : it->second;
      wrong += words[0] != want_page || words[511] != want_seq;
    }
  }
  EXPECT_EQ(wrong, 0u);
  const CacheStats s = cache->Stats();
  EXPECT_GT(s.evictions, 1000u) << "the run never pushed mapped pages out";
  EXPECT_LE(s.cached_pages, (64ull << 20) / kPage);
  ASSERT_TRUE((*m)->Msync(0, 0, MsyncMode::kSync).ok());
  ASSERT_TRUE((*m)->Unmap().ok());
  ASSERT_TRUE(f->Close().ok());
  // Every store is on the device.
  auto g = std::move(*NewCache()->Open(*dev, Mappable()));
  for (auto [page, seq] : model) {
    uint64_t words[512];
    ASSERT_TRUE(g->Read(page * kPage, std::as_writable_bytes(std::span(words))));
    ASSERT_EQ(words[0], page);
    ASSERT_EQ(words[511], seq) << "page " << page;
  }
}

TEST(Mapping, TruncateUnderAMappingRaisesSigbusPastTheEndAndZeroesTheTail) {
  auto cache = NewCache();
  auto f = std::move(*cache->Open(NewMemory(), Mappable()));
  ASSERT_TRUE(f->Write(0, Pattern(4 * kPage, 7)));
  auto m = std::move(*f->Map(0, 4 * kPage, MapAccess::kReadWrite));
  std::byte* d = m->data();
  ASSERT_FALSE(LoadFaults(d + 3 * kPage));
  ASSERT_TRUE(f->Truncate(kPage + 100).ok());
  EXPECT_TRUE(LoadFaults(d + 3 * kPage)) << "a page past the new end is still mapped";
  EXPECT_TRUE(LoadFaults(d + 2 * kPage));
  EXPECT_FALSE(LoadFaults(d + kPage));
  for (size_t i = 100; i < kPage; i++) ASSERT_EQ(d[kPage + i], std::byte{0}) << "tail byte " << i;
  // Growing again makes the range accessible, reading zeros.
  ASSERT_TRUE(f->Truncate(4 * kPage).ok());
  ASSERT_FALSE(LoadFaults(d + 3 * kPage));
  EXPECT_EQ(d[3 * kPage + 5], std::byte{0});
  // Past EOF from the start, too.
  auto beyond = std::move(*f->Map(0, 8 * kPage, MapAccess::kRead));
  EXPECT_TRUE(LoadFaults(beyond->data() + 6 * kPage));
}

TEST(Mapping, APageTheDeviceCannotReadRaisesSigbus) {
  auto mem = NewMemory();
  {
    auto f = std::move(*NewCache()->Open(mem));
    ASSERT_TRUE(f->Write(0, Pattern(4 * kPage, 3)));
    ASSERT_TRUE(f->Close().ok());
  }
  auto faulty = std::make_shared<FaultDevice>(mem);
  faulty->AddRule({.op = BioOp::kRead, .offset = 2 * kPage, .len = kPage});
  CacheOptions co;
  co.readahead_pages = 1;
  auto cache = *Cache::Create(co);
  auto f = std::move(*cache->Open(faulty, Mappable()));
  auto m = std::move(*f->Map(0, 4 * kPage, MapAccess::kRead));
  EXPECT_FALSE(LoadFaults(m->data() + kPage));
  EXPECT_TRUE(LoadFaults(m->data() + 2 * kPage));
}

TEST(Mapping, BadCallsAreClearErrors) {
  auto cache = NewCache();
  auto mem = NewMemory();
  {
    auto plain = std::move(*cache->Open(mem));
    auto m = plain->Map(0, kPage, MapAccess::kRead);
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message().find("mappable"), std::string::npos) << m.error().ToString();
    auto again = cache->Open(mem, Mappable());
    ASSERT_FALSE(again) << "a mappable open of a device open without it";
    EXPECT_EQ(again.error().code(), Code::kInvalidArgument);
  }
  auto f = std::move(*cache->Open(mem, Mappable()));
  EXPECT_EQ(f->Map(100, kPage, MapAccess::kRead).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(f->Map(0, 0, MapAccess::kRead).error().code(), Code::kInvalidArgument);
  EXPECT_EQ(f->Map(0, 64ull << 20, MapAccess::kRead).error().code(), Code::kOutOfRange);
  auto m = std::move(*f->Map(0, kPage, MapAccess::kRead));
  EXPECT_EQ(m->Msync(0, 2 * kPage, MsyncMode::kSync).code(), Code::kOutOfRange);
  ASSERT_TRUE(m->Unmap().ok());
  EXPECT_EQ(m->Unmap().code(), Code::kClosed);
}

// Stores racing truncates: each store lands or the storer gets SIGBUS;
// nothing hangs, the file holds only stored bytes and zeros, and after a
// Sync the device holds what the cache shows.
TEST(Mapping, StoresRacingTruncatesLandOrFaultAndTheDeviceMatchesTheCache) {
  auto cache = NewCache(1 << 20, StablePolicy::kAuto, 5);
  auto f = std::move(*cache->Open(NewMemory(), Mappable(16 * kPage)));
  auto m = std::move(*f->Map(0, 16 * kPage, MapAccess::kReadWrite));
  maptest::InstallBusHandler();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stores{0}, faults{0};
  std::thread storer([&] {
    sigjmp_buf jb;
    maptest::t_bus_jump = &jb;
    volatile uint64_t i = 0;
    while (!stop.load()) {
      if (sigsetjmp(jb, 1) != 0) {
        faults++;
        continue;
      }
      const uint64_t page = (i * 7) % 16;
      m->data()[page * kPage + (i % kPage)] = std::byte{0xab};
      i = i + 1;
      stores++;
    }
    maptest::t_bus_jump = nullptr;
  });
  for (int round = 0; round < 200 || (stores.load() < 5000 && round < 200000); round++) {
    ASSERT_TRUE(f->Truncate((round % 5) * 3 * kPage + 100).ok());
    ASSERT_TRUE(f->Truncate(16 * kPage).ok());
    if (round % 20 == 0) {
      ASSERT_TRUE(f->Sync().ok());
    }
  }
  stop = true;
  storer.join();
  EXPECT_GT(stores.load(), 0u);
  // Only 0 and 0xab can be in the file: no garbage, no stale frame.
  Bytes all = ReadFile(*f, 0, 16 * kPage);
  for (size_t i = 0; i < all.size(); i++)
    ASSERT_TRUE(all[i] == std::byte{0} || all[i] == std::byte{0xab}) << "byte " << i;
  // What the cache shows, the device holds after a Sync.
  ASSERT_TRUE(m->Msync(0, 0, MsyncMode::kSync).ok());
  Bytes dev(16 * kPage);
  ASSERT_TRUE(f->ReadBypassingCache(0, dev).ok());
  EXPECT_EQ(dev, all);
  std::printf("%llu stores, %llu SIGBUS\n", static_cast<unsigned long long>(stores.load()),
              static_cast<unsigned long long>(faults.load()));
}

// A mapping keeps the file's pages after the handle that mapped it closes.
TEST(Mapping, OutlivesTheHandleThatMappedIt) {
  auto cache = NewCache();
  auto mem = NewMemory();
  std::unique_ptr<Mapping> m;
  {
    auto f = std::move(*cache->Open(mem, Mappable()));
    ASSERT_TRUE(f->Write(0, Pattern(2 * kPage, 9)));
    m = std::move(*f->Map(0, 2 * kPage, MapAccess::kReadWrite));
    ASSERT_TRUE(f->Close().ok());
  }
  EXPECT_EQ(0, std::memcmp(m->data(), Pattern(2 * kPage, 9).data(), 2 * kPage));
  std::memset(m->data(), 0x11, 16);
  ASSERT_TRUE(m->Unmap().ok());
  auto f = std::move(*NewCache()->Open(mem));
  EXPECT_EQ(ReadFile(*f, 0, 1)[0], std::byte{0x11});
}

}  // namespace
}  // namespace stablecache
