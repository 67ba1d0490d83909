// The crash replayer on hand-made logs: which writes are durable, which are
// in flight, and what dropping, tearing and reordering can produce.
#include <set>

#include <gtest/gtest.h>

#include "crash/crash_replayer.h"

namespace stablecache {
namespace {

constexpr size_t kMedium = 4 * 4096;

LogEntry W(uint64_t offset, uint64_t pages, uint8_t fill, uint64_t submitted_at, bool fua = false) {
  LogEntry e;
  e.kind = LogEntry::Kind::kWrite;
  e.offset = offset;
  e.data = std::make_shared<std::vector<std::byte>>(pages * 4096, std::byte{fill});
  e.submitted_at = submitted_at;
  e.fua = fua;
  return e;
}
LogEntry F() { return LogEntry{.kind = LogEntry::Kind::kFlush}; }
LogEntry FD(uint64_t flush_index) { return LogEntry{.kind = LogEntry::Kind::kFlushDone, .flush_index = flush_index}; }

// The fill byte of each 4 KiB block of an image.
std::vector<int> Blocks(const std::vector<std::byte>& image) {
  std::vector<int> out;
  for (size_t o = 0; o < image.size(); o += 4096) out.push_back(static_cast<int>(image[o]));
  return out;
}

CrashPoint At(uint64_t pos, Unflushed u, uint64_t seed = 1) { return CrashPoint{pos, u, seed, "test"}; }

}  // namespace

TEST(CrashReplayer, AFlushCoversOnlyWritesCompletedBeforeItWasSubmitted) {
  // 0: W a@0  1: F  2: W b@1 (completed after the flush was submitted)  3: FD(1)
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0), F(), W(4096, 1, 0xb, 1), FD(1)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  EXPECT_EQ(r.DurableBoundary(3), 0u);  // flush not complete yet
  EXPECT_EQ(r.DurableBoundary(4), 1u);
  EXPECT_EQ(Blocks(r.Build(At(3, Unflushed::kDropAll)).image), (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(Blocks(r.Build(At(4, Unflushed::kDropAll)).image), (std::vector<int>{0xa, 0, 0, 0}));
  EXPECT_EQ(Blocks(r.Build(At(4, Unflushed::kApplyAll)).image), (std::vector<int>{0xa, 0xb, 0, 0}));
}

TEST(CrashReplayer, WritesInFlightAtTheCrashAreUnflushed) {
  // 1: W b was submitted at position 0 and completes at 1: in flight at 1.
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0), W(4096, 1, 0xb, 0), W(8192, 1, 0xc, 2)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  CrashState s = r.Build(At(1, Unflushed::kApplyAll));
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(Blocks(s.image), (std::vector<int>{0xa, 0xb, 0, 0}));  // c not submitted yet
}

TEST(CrashReplayer, FuaWritesAreDurableWithoutAFlush) {
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0, /*fua=*/true), W(0, 2, 0xb, 1)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  for (uint64_t seed = 0; seed < 20; seed++)
    EXPECT_EQ(Blocks(r.Build(At(2, Unflushed::kDropReorderTear, seed)).image)[0], 0xa);
  CrashReplayer ignored(log, std::vector<std::byte>(kMedium), FlushModel::kIgnored);
  EXPECT_EQ(Blocks(ignored.Build(At(2, Unflushed::kDropAll)).image)[0], 0);
}

// Each unflushed write is absent, whole or torn at 4 KiB, and their pieces
// land in any order; nothing is torn inside a block; the seed fixes it.
TEST(CrashReplayer, DropReorderTearReachesEveryMixAndOnlyThose) {
  // Two unflushed 4-page writes over the same blocks.
  std::vector<LogEntry> log = {W(0, 4, 0xa, 0), W(0, 4, 0xb, 1)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium, std::byte{0x1}));
  std::set<std::vector<int>> seen;
  for (uint64_t seed = 0; seed < 20000; seed++) {
    CrashState s = r.Build(At(2, Unflushed::kDropReorderTear, seed));
    for (size_t o = 0; o < s.image.size(); o++) ASSERT_EQ(s.image[o], s.image[o - o % 4096]) << "torn inside a block";
    seen.insert(Blocks(s.image));
    if (seed % 100 == 0) {
      EXPECT_EQ(s.image, r.Build(At(2, Unflushed::kDropReorderTear, seed)).image) << "not deterministic";
    }
  }
  // 3 values per block, 4 blocks: all 81 mixes, including b under a.
  EXPECT_EQ(seen.size(), 81u);
  EXPECT_TRUE(seen.count({0x1, 0xa, 0xb, 0x1}));
}

TEST(CrashReplayer, IgnoringFlushesLosesFlushedWrites) {
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0), F(), FD(1)};
  CrashReplayer honoured(log, std::vector<std::byte>(kMedium));
  CrashReplayer ignored(log, std::vector<std::byte>(kMedium), FlushModel::kIgnored);
  EXPECT_EQ(Blocks(honoured.Build(At(3, Unflushed::kDropAll)).image)[0], 0xa);
  EXPECT_EQ(Blocks(ignored.Build(At(3, Unflushed::kDropAll)).image)[0], 0);
}

TEST(CrashReplayer, PlansPointsAtEveryFlushAndBetweenInOrder) {
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0), F(), FD(1), W(0, 1, 0xb, 3), F(), FD(4)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  auto points = r.PlanCrashPoints({Unflushed::kDropAll, Unflushed::kApplyAll}, 10, 42);
  ASSERT_EQ(points.size(), 14u);
  size_t at_flush = 0;
  for (size_t i = 0; i < points.size(); i++) {
    if (i > 0) {
      EXPECT_LE(points[i - 1].position, points[i].position);
    }
    EXPECT_LE(points[i].position, log.size());
    if (points[i].kind == "at-flush") {
      at_flush++;
      EXPECT_TRUE(points[i].position == 3 || points[i].position == 6);
    }
  }
  EXPECT_EQ(at_flush, 4u);
  // Going back in the log rebuilds from the initial image.
  EXPECT_EQ(Blocks(r.Build(At(6, Unflushed::kDropAll)).image)[0], 0xb);
  EXPECT_EQ(Blocks(r.Build(At(3, Unflushed::kDropAll)).image)[0], 0xa);
}

}  // namespace stablecache
