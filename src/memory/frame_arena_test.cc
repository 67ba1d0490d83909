#include "memory/frame_arena.h"

#include <set>
#include <thread>

#include <gtest/gtest.h>

namespace stablecache {

TEST(FrameArena, HandsOutEveryFrameOnceThenRunsOut) {
  auto arena = FrameArena::Create(64);
  ASSERT_TRUE(arena);
  std::set<uint32_t> seen;
  for (int i = 0; i < 64; i++) {
    uint32_t f = (*arena)->Allocate();
    ASSERT_NE(f, kNoFrame);
    EXPECT_TRUE(seen.insert(f).second) << "frame " << f << " handed out twice";
    (*arena)->Data(f)[0] = std::byte(i);  // memory is writable
  }
  EXPECT_EQ((*arena)->Allocate(), kNoFrame);
  (*arena)->Free(*seen.begin());
  EXPECT_EQ((*arena)->Allocate(), *seen.begin());
}

TEST(FrameArena, FramesFreedOnOneThreadAreFoundByAnother) {
  auto arena = FrameArena::Create(8);
  ASSERT_TRUE(arena);
  std::vector<uint32_t> got;
  for (int i = 0; i < 8; i++) got.push_back((*arena)->Allocate());
  std::thread([&] { for (uint32_t f : got) (*arena)->Free(f); }).join();
  EXPECT_EQ((*arena)->free_frames(), 8u);
  for (int i = 0; i < 8; i++) EXPECT_NE((*arena)->Allocate(), kNoFrame);
}

TEST(FrameArena, RejectsZeroFrames) { EXPECT_FALSE(FrameArena::Create(0)); }

TEST(FrameArena, BackedByOneMemfdRegion) {
  auto arena = FrameArena::Create(4);
  ASSERT_TRUE(arena);
  EXPECT_GE((*arena)->fd(), 0);
  EXPECT_EQ((*arena)->Region().size(), 4u * kFrameSize);
  EXPECT_EQ((*arena)->Data(1), (*arena)->Region().data() + kFrameSize);
}

}  // namespace stablecache
