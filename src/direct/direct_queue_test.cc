// DirectQueue: completions reach Reap with their tags and bytes, and the
// queue can be destroyed while completions are still being delivered (each
// completion holds the queue's shared state, not the queue).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include "stablecache/cache.h"
#include "stablecache/direct.h"
#include "stablecache/stack.h"

namespace stablecache {
namespace {

struct Aligned {
  std::byte* p;
  explicit Aligned(size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(4096, n))) {}
  ~Aligned() { std::free(p); }
};

std::unique_ptr<File> OpenFile(const std::string& spec, std::shared_ptr<Cache>& cache) {
  auto dev = BuildStack(spec);
  EXPECT_TRUE(dev.has_value());
  cache = *Cache::Create(CacheOptions{});
  auto f = cache->Open(*dev);
  EXPECT_TRUE(f.has_value());
  return std::move(*f);
}

TEST(DirectQueue, ReapsEveryTagAndTheBytesReadBack) {
  std::shared_ptr<Cache> cache;
  auto file = OpenFile("delay(us=100),memory:8M", cache);
  constexpr int kRequests = 64, kDepth = 4;
  Aligned bufs(kRequests * 4096);
  for (int i = 0; i < kRequests; i++) std::memset(bufs.p + i * 4096, i + 1, 4096);
  {
    DirectQueue q(*file, kDepth);
    std::set<uint64_t> seen;
    for (int i = 0; i < kRequests; i++) {
      ASSERT_TRUE(q.Submit(DirectRequest{DirectOp::kWrite, uint64_t(i) * 8192, {{bufs.p + i * 4096, 4096}}}, i).ok());
      EXPECT_LE(q.InFlight(), uint32_t(kDepth));
      if (i % 8 == 7)
        for (auto& c : q.Reap(1)) {
          ASSERT_TRUE(c.result.has_value());
          EXPECT_EQ(*c.result, 4096u);
          EXPECT_TRUE(seen.insert(c.tag).second);
        }
    }
    while (q.InFlight() != 0 || seen.size() < size_t(kRequests)) {
      auto done = q.Reap(1);
      if (done.empty()) break;
      for (auto& c : done) {
        ASSERT_TRUE(c.result.has_value());
        EXPECT_TRUE(seen.insert(c.tag).second);
      }
    }
    EXPECT_EQ(seen.size(), size_t(kRequests));
    EXPECT_TRUE(q.Drain().ok());
  }
  Aligned back(4096);
  for (int i = 0; i < kRequests; i++) {
    auto r = file->DirectRead(uint64_t(i) * 8192, {back.p, 4096});
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(std::memcmp(back.p, bufs.p + i * 4096, 4096), 0) << "request " << i;
  }
  EXPECT_TRUE(file->Close().ok());
}

// The destructor returns once nothing is in flight; completions still
// waking waiters then must not touch the queue (ASan and TSan builds see it).
TEST(DirectQueue, DestroyedRightAfterTheLastCompletion) {
  std::shared_ptr<Cache> cache;
  auto file = OpenFile("delay(us=50),memory:4M", cache);
  Aligned buf(16 * 4096);
  std::memset(buf.p, 0x5a, 16 * 4096);
  for (int round = 0; round < 200; round++) {
    auto q = std::make_unique<DirectQueue>(*file, 16);
    for (int i = 0; i < 16; i++)
      ASSERT_TRUE(q->Submit(DirectRequest{i % 2 ? DirectOp::kRead : DirectOp::kWrite, uint64_t(i) * 4096,
                                          {{buf.p + i * 4096, 4096}}},
                            i)
                      .ok());
    q.reset();  // waits for all 16
  }
  EXPECT_TRUE(file->Close().ok());
}

}  // namespace
}  // namespace stablecache
