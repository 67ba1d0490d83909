// Differential test: the same random sequence of write, read, truncate and
// sync (and, in the mapped variant, stores and loads through File::Map)
// goes to a stablecache File (over an io_uring file device, through a
// cache much smaller than the file) and to a real file through the kernel.
// Every read must return identical bytes; at the end a cold cache over the
// same device must read back what the kernel file holds.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

constexpr uint64_t kDevice = 4 << 20;
constexpr uint64_t kMaxFile = 3 << 20;

uint64_t Ops() {
  const char* env = std::getenv("STABLECACHE_DIFF_OPS");
  return env ? std::strtoull(env, nullptr, 10) : 100000;
}

void RunDifferential(StablePolicy policy, uint32_t seed, uint64_t ops, bool mapped = false) {
  testing::TempFile dev_file("diff-dev"), ref_file("diff-ref");
  auto dev = BuildStack("file", BuildOptions{dev_file.path(), kDevice});
  ASSERT_TRUE(dev) << dev.error().ToString();
  CacheOptions co;
  co.capacity_bytes = 256 << 10;  // 64 pages for a 3 MiB file: constant eviction
  co.io_reserve_frames = 32;
  co.readahead_pages = 8;
  co.max_bio_pages = 16;
  co.writeback_interval_ms = 5;
  co.policy = policy;
  auto cache = *Cache::Create(co);
  FileOptions fo;
  fo.mappable = mapped;
  auto file = std::move(*cache->Open(*dev, fo));
  std::unique_ptr<Mapping> map;
  if (mapped) {
    auto m = file->Map(0, kMaxFile, MapAccess::kReadWrite);
    ASSERT_TRUE(m) << m.error().ToString();
    map = std::move(*m);
  }
  int ref = open(ref_file.path().c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(ref, 0);

  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
  std::vector<std::byte> buf, want;
  uint64_t reads = 0, bytes_compared = 0;
  for (uint64_t op = 0; op < ops; op++) {
    uint64_t dice = pick(100);
    // Lengths: mostly small, some page-sized and page-aligned, some large.
    uint64_t len = dice % 3 == 0 ? 4096 * (1 + pick(4)) : 1 + pick(dice % 5 == 0 ? 40000 : 3000);
    uint64_t off = pick(kMaxFile);
    if (dice % 4 == 0) off &= ~uint64_t{4095};
    len = std::min(len, kMaxFile - off);
    const uint64_t size_now = *file->Size();
    if (mapped && dice >= 30 && dice < 60) {
      // Through the mapping, inside EOF (past it is SIGBUS, on both sides).
      if (off >= size_now) continue;
      len = std::min(len, size_now - off);
      if (dice < 45) {  // mapped store; the kernel file gets it by pwrite
        buf = testing::Pattern(len, static_cast<uint32_t>(op));
        std::memcpy(map->data() + off, buf.data(), len);
        ASSERT_EQ(pwrite(ref, buf.data(), len, off), static_cast<ssize_t>(len));
      } else {  // mapped load
        want.assign(len, std::byte{0xdd});
        ASSERT_EQ(pread(ref, want.data(), len, off), static_cast<ssize_t>(len));
        ASSERT_EQ(0, std::memcmp(map->data() + off, want.data(), len))
            << "op " << op << ": a mapped load diverges at " << off << " len " << len;
        reads++;
        bytes_compared += len;
      }
    } else if (dice < 45) {  // write
      buf = testing::Pattern(len, static_cast<uint32_t>(op));
      auto w = file->Write(off, buf);
      ASSERT_TRUE(w) << "op " << op << ": " << w.error().ToString();
      ASSERT_EQ(pwrite(ref, buf.data(), len, off), static_cast<ssize_t>(len));
    } else if (dice < 90) {  // read
      buf.assign(len, std::byte{0xee});
      want.assign(len, std::byte{0xdd});
      auto r = file->Read(off, buf);
      ASSERT_TRUE(r) << "op " << op << ": " << r.error().ToString();
      ssize_t k = pread(ref, want.data(), len, off);
      ASSERT_EQ(*r, static_cast<size_t>(k)) << "op " << op << " read at " << off << " len " << len;
      ASSERT_TRUE(std::equal(buf.begin(), buf.begin() + *r, want.begin()))
          << "op " << op << ": contents diverge in read at " << off << " len " << len;
      reads++;
      bytes_compared += *r;
    } else if (dice < 95) {  // truncate, down or up
      uint64_t size = pick(kMaxFile);
      ASSERT_TRUE(file->Truncate(size).ok()) << "op " << op;
      ASSERT_EQ(ftruncate(ref, static_cast<off_t>(size)), 0);
    } else if (dice < 98) {
      ASSERT_TRUE(file->SyncRange(off, len, kSyncWrite | (dice & 1 ? unsigned{kSyncWaitAfter} : 0u)).ok()) << "op " << op;
    } else {
      ASSERT_TRUE(file->Sync().ok()) << "op " << op;
    }
    ASSERT_EQ(*file->Size(), static_cast<uint64_t>(lseek(ref, 0, SEEK_END))) << "op " << op;
  }
  EXPECT_GT(reads, ops / 3);
  EXPECT_GT(cache->Stats().evictions, 0u);

  // Durability: everything reaches the device and a cold cache reads it.
  uint64_t size = *file->Size();
  if (map) {
    ASSERT_TRUE(map->Unmap().ok());
  }
  ASSERT_TRUE(file->Close().ok());
  auto cold = *Cache::Create(co);
  auto again = std::move(*cold->Open(*dev, FileOptions{.initial_size = size}));
  buf.assign(size, std::byte{0xee});
  want.assign(size, std::byte{0xdd});
  ASSERT_EQ(*again->Read(0, buf), size);
  ASSERT_EQ(pread(ref, want.data(), size, 0), static_cast<ssize_t>(size));
  auto diff = std::mismatch(buf.begin(), buf.end(), want.begin());
  EXPECT_TRUE(diff.first == buf.end()) << "device contents diverge after close at byte "
                                       << (diff.first - buf.begin()) << " of " << size;
  close(ref);
  ::testing::Test::RecordProperty("bytes_compared", std::to_string(bytes_compared));
}

TEST(Differential, MatchesTheKernelOverAHundredThousandOps) { RunDifferential(StablePolicy::kAuto, 1, Ops()); }

// The other policies change the write path under writeback; they must not
// change what a reader sees.
// Mapped stores and loads mixed with Read, Write, Truncate and Sync, on a
// file much larger than the cache: page_mkwrite, page_mkclean, eviction of
// mapped pages and the memfd's size all have to agree with the kernel.
TEST(Differential, MappedAccessMatchesTheKernel) {
  for (StablePolicy p : {StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce}) {
    SCOPED_TRACE(PolicyName(p));
    RunDifferential(p, 200 + static_cast<uint32_t>(p), Ops() / 5, /*mapped=*/true);
  }
}

TEST(Differential, MatchesTheKernelUnderEveryPolicy) {
  for (StablePolicy p : {StablePolicy::kWait, StablePolicy::kBounce, StablePolicy::kFork}) {
    SCOPED_TRACE(PolicyName(p));
    RunDifferential(p, 100 + static_cast<uint32_t>(p), Ops() / 5);
  }
}

}  // namespace
}  // namespace stablecache
