#include "cache/page.h"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "cache/errseq.h"

namespace stablecache {

TEST(Page, LockExcludesAndUnlockWakesTheWaiter) {
  Page p;
  ASSERT_TRUE(p.TryLock());
  EXPECT_FALSE(p.TryLock());
  std::atomic<int> stage{0};
  std::thread t([&] {
    stage = 1;
    p.Lock();  // sleeps on the futex until Unlock
    stage = 2;
    p.Unlock();
  });
  while (stage.load() != 1) std::this_thread::yield();
  EXPECT_EQ(stage.load(), 1);
  p.Unlock();
  t.join();
  EXPECT_EQ(stage.load(), 2);
  EXPECT_FALSE(p.Test(Page::kLocked));
}

TEST(Page, WaitWritebackReturnsWhenWritebackEnds) {
  Page p;
  p.StartWriteback();
  std::atomic<bool> done{false};
  std::thread t([&] {
    p.WaitWriteback();
    done = true;
  });
  // The waiter announces itself with kWaiters before sleeping.
  while (!p.Test(Page::kWaiters)) std::this_thread::yield();
  EXPECT_FALSE(done.load());
  p.EndWriteback();
  t.join();
  EXPECT_TRUE(done.load());
  EXPECT_FALSE(p.Test(Page::kWaiters));
}

TEST(Page, RefsAndPinsLiveInTheSameWord) {
  Page p;
  p.Get();
  p.Get();
  p.Pin();
  uint64_t w = p.Load();
  EXPECT_EQ(Page::Refs(w), 2u);
  EXPECT_EQ(Page::Pins(w), 1u);
  p.SetFlags(Page::kDirty);
  EXPECT_EQ(Page::Refs(p.Load()), 2u);
  EXPECT_FALSE(p.PutTestZero());
  EXPECT_TRUE(p.PutTestZero());
  p.Unpin();
  EXPECT_EQ(Page::Pins(p.Load()), 0u);
  EXPECT_TRUE(p.Test(Page::kDirty));
}

TEST(ErrSeq, EachObserverSeesAnErrorOnce) {
  ErrSeq e;
  uint32_t a = e.Sample(), b = e.Sample();
  EXPECT_EQ(e.CheckAndAdvance(&a), 0);
  e.Set(5);
  EXPECT_EQ(e.CheckAndAdvance(&a), 5);
  EXPECT_EQ(e.CheckAndAdvance(&a), 0);
  EXPECT_EQ(e.CheckAndAdvance(&b), 5);
  EXPECT_EQ(e.CheckAndAdvance(&b), 0);
  // A second error after both saw the first is reported again.
  e.Set(5);
  EXPECT_EQ(e.CheckAndAdvance(&a), 5);
  EXPECT_EQ(e.CheckAndAdvance(&b), 5);
}

TEST(ErrSeq, ANewObserverSeesAnUnseenError) {
  ErrSeq e;
  e.Set(28);
  uint32_t late = e.Sample();
  EXPECT_EQ(e.CheckAndAdvance(&late), 28);
  uint32_t later = e.Sample();  // seen now: a later opener starts clean
  EXPECT_EQ(e.CheckAndAdvance(&later), 0);
}

}  // namespace stablecache
