// Differential test of direct, buffered and mapped I/O mixed on one file,
// against a plain byte model: every read (of any kind) must return what the
// model says, so a stale read or a lost write of any path shows at once.
// Threads own disjoint regions (each with its own model) of one file in a
// cache far smaller than the file, so eviction, readahead and writeback of
// every thread's pages run into the others' direct I/O. At the end the file
// is synced and read back through a fresh cache.
#include <cstring>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "direct_test_util.h"

namespace stablecache {
namespace {

using directtest::AlignedBuf;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kOpsPerThread = 5000;  // sanitizer builds: the default build runs the full count
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int kOpsPerThread = 5000;
#else
constexpr int kOpsPerThread = 25000;
#endif
#else
constexpr int kOpsPerThread = 25000;
#endif

constexpr int kThreads = 4;
constexpr uint64_t kRegion = 2 << 20;
constexpr uint64_t kFileSize = kThreads * kRegion;

struct Counts {
  uint64_t ops = 0, direct_writes = 0, direct_reads = 0, writes = 0, reads = 0, mapped_writes = 0,
           mapped_reads = 0, syncs = 0;
};

// One thread's run over [base, base + kRegion). Returns a description of the
// first mismatch, or nothing.
std::string RunRegion(File& f, std::byte* map, uint64_t base, uint32_t seed, Counts& c) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> model(kRegion);  // the file starts as zeros
  AlignedBuf io(256 << 10);
  std::vector<std::byte> plain(256 << 10);
  uint64_t stamp = uint64_t{seed} << 40;
  auto fill = [&](std::byte* p, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = ++stamp;
      std::memcpy(p + i, &v, std::min<size_t>(8, n - i));
    }
  };
  for (int op = 0; op < kOpsPerThread; op++) {
    c.ops++;
    const int kind = static_cast<int>(rng() % 100);
    // Direct ranges: 512-byte aligned, up to 64 KiB; mostly small.
    const uint64_t dlen = 512 * (1 + (rng() % 4 == 0 ? rng() % 128 : rng() % 16));
    const uint64_t doff = (rng() % ((kRegion - dlen) / 512 + 1)) * 512;
    // Buffered and mapped ranges: any bytes, up to 20 KiB.
    const uint64_t blen = 1 + rng() % (20 << 10);
    const uint64_t boff = rng() % (kRegion - blen + 1);
    std::string what;
    if (kind < 25) {
      c.direct_writes++;
      fill(io.data(), dlen);
      auto n = f.DirectWrite(base + doff, io.span(dlen));
      if (!n) return "direct write: " + n.error().ToString();
      std::memcpy(model.data() + doff, io.data(), dlen);
    } else if (kind < 45) {
      c.direct_reads++;
      auto n = f.DirectRead(base + doff, io.span(dlen));
      if (!n || *n != dlen) return "direct read failed";
      if (std::memcmp(io.data(), model.data() + doff, dlen) != 0)
        return fmt::format("op {}: direct read [{}, +{}) differs from the model", op, base + doff, dlen);
    } else if (kind < 60) {
      c.writes++;
      fill(plain.data(), blen);
      auto n = f.Write(base + boff, {plain.data(), blen});
      if (!n) return "write: " + n.error().ToString();
      std::memcpy(model.data() + boff, plain.data(), blen);
    } else if (kind < 75) {
      c.reads++;
      auto n = f.Read(base + boff, {plain.data(), blen});
      if (!n || *n != blen) return "read failed";
      if (std::memcmp(plain.data(), model.data() + boff, blen) != 0)
        return fmt::format("op {}: read [{}, +{}) differs from the model", op, base + boff, blen);
    } else if (kind < 85) {
      c.mapped_writes++;
      fill(map + base + boff, blen);
      std::memcpy(model.data() + boff, map + base + boff, blen);
    } else if (kind < 97) {
      c.mapped_reads++;
      if (std::memcmp(map + base + boff, model.data() + boff, blen) != 0)
        return fmt::format("op {}: mapped load [{}, +{}) differs from the model", op, base + boff, blen);
    } else {
      c.syncs++;
      Status st = kind == 99 ? f.Sync() : f.SyncRange(base + boff, blen, kSyncWrite);
      if (!st.ok()) return "sync: " + st.ToString();
    }
  }
  // Everything once more, by every path.
  std::vector<std::byte> all(kRegion);
  if (auto n = f.Read(base, all); !n || all != model) return "final buffered read differs";
  AlignedBuf whole(kRegion);
  if (auto n = f.DirectRead(base, whole.span(kRegion)); !n || std::memcmp(whole.data(), model.data(), kRegion) != 0)
    return "final direct read differs";
  if (std::memcmp(map + base, model.data(), kRegion) != 0) return "final mapped load differs";
  return {};
}

TEST(DirectDifferential, DirectBufferedAndMappedIoMatchAModel) {
  auto mem = *MemoryDevice::Create({.size_bytes = kFileSize + (1 << 20)});
  CacheOptions co;
  co.capacity_bytes = 2 << 20;  // a quarter of the file: pages come and go
  co.writeback_interval_ms = 50;
  std::vector<std::vector<std::byte>> final_models;
  {
    auto cache = *Cache::Create(co);
    auto file = cache->Open(mem, {.initial_size = kFileSize, .mappable = true});
    ASSERT_TRUE(file) << file.error().ToString();
    auto map = (*file)->Map(0, kFileSize, MapAccess::kReadWrite);
    ASSERT_TRUE(map) << map.error().ToString();
    std::vector<std::string> errors(kThreads);
    std::vector<Counts> counts(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
      threads.emplace_back([&, t] {
        errors[t] = RunRegion(**file, (*map)->data(), t * kRegion, 1000 + t, counts[t]);
      });
    for (auto& th : threads) th.join();
    Counts sum;
    for (int t = 0; t < kThreads; t++) {
      EXPECT_EQ(errors[t], "") << "thread " << t;
      sum.ops += counts[t].ops;
      sum.direct_writes += counts[t].direct_writes;
      sum.direct_reads += counts[t].direct_reads;
      sum.mapped_writes += counts[t].mapped_writes;
    }
    std::printf("%llu operations: %llu direct writes, %llu direct reads, %llu mapped stores; %llu evictions\n",
                (unsigned long long)sum.ops, (unsigned long long)sum.direct_writes,
                (unsigned long long)sum.direct_reads, (unsigned long long)sum.mapped_writes,
                (unsigned long long)cache->Stats().evictions);
    EXPECT_GT(cache->Stats().evictions, 0u);
    for (int t = 0; t < kThreads; t++) {
      std::vector<std::byte> m(kRegion);
      std::memcpy(m.data(), (*map)->data() + t * kRegion, kRegion);
      final_models.push_back(std::move(m));
    }
    ASSERT_TRUE((*map)->Unmap().ok());
    ASSERT_TRUE((*file)->Close().ok());
  }
  // What was synced is what a fresh cache reads.
  auto cache = *Cache::Create(co);
  auto file = *cache->Open(mem);
  for (int t = 0; t < kThreads; t++) {
    std::vector<std::byte> got(kRegion);
    ASSERT_TRUE(file->Read(t * kRegion, got));
    EXPECT_TRUE(got == final_models[t]) << "region " << t << " after reopen";
  }
}

}  // namespace
}  // namespace stablecache
