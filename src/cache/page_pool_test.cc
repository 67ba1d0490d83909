// PagePool's frame-allocation fault hook: attempts are counted per kind and
// the Nth fails as if the quota were used up, without leaking quota.
#include <gtest/gtest.h>

#include "cache/page_pool.h"

namespace stablecache {
namespace {

using Kind = PagePool::FrameKind;

TEST(PagePoolFaults, FailsTheNthPageAllocationOnly) {
  auto pool = PagePool::Create(16, 4);
  ASSERT_TRUE(pool);
  PagePool& p = **pool;
  p.FailNthAllocation(Kind::kPageFrame, 2);
  Page* a = p.TryAllocPage();
  Page* b = p.TryAllocPage();
  Page* c = p.TryAllocPage();
  EXPECT_NE(a, nullptr);
  EXPECT_EQ(b, nullptr);
  EXPECT_NE(c, nullptr);
  EXPECT_EQ(p.cached(), 2u);  // the failed attempt took no quota
  EXPECT_EQ(p.alloc_attempts(Kind::kPageFrame), 3u);
  EXPECT_EQ(p.alloc_faults_injected(Kind::kPageFrame), 1u);
  EXPECT_EQ(p.alloc_attempts(Kind::kIoFrame), 0u);
  p.Put(a);
  p.Put(c);
  EXPECT_EQ(p.cached(), 0u);
}

TEST(PagePoolFaults, IoFramesFailTooAndBlockingAllocationRetries) {
  auto pool = PagePool::Create(16, 4);
  ASSERT_TRUE(pool);
  PagePool& p = **pool;
  p.FailNthAllocation(Kind::kIoFrame, 1, 2);
  EXPECT_EQ(p.TryAllocIoFrame(), kNoFrame);
  uint32_t f = p.AllocIoFrame();  // attempt 2 fails, 3 succeeds
  EXPECT_NE(f, kNoFrame);
  EXPECT_EQ(p.alloc_attempts(Kind::kIoFrame), 3u);
  EXPECT_EQ(p.alloc_faults_injected(Kind::kIoFrame), 2u);
  p.FreeIoFrame(f);
  p.FailNthAllocation(Kind::kIoFrame, 1);
  p.ClearAllocationFaults();
  f = p.TryAllocIoFrame();
  EXPECT_NE(f, kNoFrame);
  p.FreeIoFrame(f);
}

}  // namespace
}  // namespace stablecache
