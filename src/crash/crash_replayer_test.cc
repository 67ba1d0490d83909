// The crash replayer on hand-made logs: which writes are durable, which are
// in flight, and what dropping, tearing and reordering can produce.
#include <set>

#include <gtest/gtest.h>

#include "crash/crash_replayer.h"
#include "devices/memory_device.h"

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
LogEntry On(uint32_t device, LogEntry e) {
  e.device = device;
  return e;
}

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
  EXPECT_EQ(Blocks(r.Build(At(3, Unflushed::kDropAll)).images[0]), (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(Blocks(r.Build(At(4, Unflushed::kDropAll)).images[0]), (std::vector<int>{0xa, 0, 0, 0}));
  EXPECT_EQ(Blocks(r.Build(At(4, Unflushed::kApplyAll)).images[0]), (std::vector<int>{0xa, 0xb, 0, 0}));
}

TEST(CrashReplayer, WritesInFlightAtTheCrashAreUnflushed) {
  // 1: W b was submitted at position 0 and completes at 1: in flight at 1.
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0), W(4096, 1, 0xb, 0), W(8192, 1, 0xc, 2)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  CrashState s = r.Build(At(1, Unflushed::kApplyAll));
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(Blocks(s.images[0]), (std::vector<int>{0xa, 0xb, 0, 0}));  // c not submitted yet
}

TEST(CrashReplayer, FuaWritesAreDurableWithoutAFlush) {
  std::vector<LogEntry> log = {W(0, 1, 0xa, 0, /*fua=*/true), W(0, 2, 0xb, 1)};
  CrashReplayer r(log, std::vector<std::byte>(kMedium));
  for (uint64_t seed = 0; seed < 20; seed++)
    EXPECT_EQ(Blocks(r.Build(At(2, Unflushed::kDropReorderTear, seed)).images[0])[0], 0xa);
  CrashReplayer ignored(log, std::vector<std::byte>(kMedium), FlushModel::kIgnored);
  EXPECT_EQ(Blocks(ignored.Build(At(2, Unflushed::kDropAll)).images[0])[0], 0);
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
    for (size_t o = 0; o < s.images[0].size(); o++) ASSERT_EQ(s.images[0][o], s.images[0][o - o % 4096]) << "torn inside a block";
    seen.insert(Blocks(s.images[0]));
    if (seed % 100 == 0) {
      EXPECT_EQ(s.images[0], r.Build(At(2, Unflushed::kDropReorderTear, seed)).images[0]) << "not deterministic";
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
  EXPECT_EQ(Blocks(honoured.Build(At(3, Unflushed::kDropAll)).images[0])[0], 0xa);
  EXPECT_EQ(Blocks(ignored.Build(At(3, Unflushed::kDropAll)).images[0])[0], 0);
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
  EXPECT_EQ(Blocks(r.Build(At(6, Unflushed::kDropAll)).images[0])[0], 0xb);
  EXPECT_EQ(Blocks(r.Build(At(3, Unflushed::kDropAll)).images[0])[0], 0xa);
}

// ---- Several devices, one log ----

TEST(CrashReplayer, SharedLogOrdersTheEntriesOfEveryDeviceAndTagsThem) {
  auto log = std::make_shared<WriteLog>();
  std::vector<std::shared_ptr<LogWritesDevice>> devs;
  for (uint32_t d = 0; d < 2; d++) {
    auto mem = MemoryDevice::Create({.size_bytes = kMedium});
    ASSERT_TRUE(mem);
    devs.push_back(std::make_shared<LogWritesDevice>(*mem, log, d));
  }
  std::vector<std::byte> a(4096, std::byte{0xa}), b(4096, std::byte{0xb});
  ASSERT_TRUE(WriteSync(*devs[0], 0, a.data(), 4096).ok());
  ASSERT_TRUE(WriteSync(*devs[1], 4096, b.data(), 4096).ok());
  ASSERT_TRUE(FlushSync(*devs[1]).ok());
  const uint64_t mark = devs[0]->Mark("both written");
  auto entries = log->Snapshot();
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(devs[1]->Snapshot().size(), 5u) << "one log, seen from every device";
  EXPECT_EQ(entries[0].device, 0u);
  EXPECT_EQ(entries[1].device, 1u);
  EXPECT_EQ(entries[1].submitted_at, 1u) << "submission is placed in the shared order";
  EXPECT_EQ(entries[2].kind, LogEntry::Kind::kFlush);
  EXPECT_EQ(entries[2].device, 1u);
  EXPECT_EQ(entries[3].flush_index, 2u);
  EXPECT_EQ(mark, 4u);

  // Device 1's flush makes only device 1's write durable.
  CrashReplayer r(entries, {std::vector<std::byte>(kMedium), std::vector<std::byte>(kMedium)});
  ASSERT_EQ(r.devices(), 2u);
  CrashState s = r.Build(At(5, Unflushed::kDropAll));
  ASSERT_EQ(s.images.size(), 2u);
  EXPECT_EQ(Blocks(s.images[0]), (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(Blocks(s.images[1]), (std::vector<int>{0, 0xb, 0, 0}));
  EXPECT_EQ(r.DurableBoundary(0, 5), 0u);
  EXPECT_EQ(r.DurableBoundary(1, 5), 2u);
}

TEST(CrashReplayer, OneCrashPointCutsEveryDeviceAtTheSameInstant) {
  // 0: d0 W a@0  1: d1 W a@0  2: d0 F  3: d1 F  4: d0 FD(2)  5: d1 W b@1  6: d1 FD(3)  7: d0 W c@1
  std::vector<LogEntry> log = {On(0, W(0, 1, 0xa, 0)), On(1, W(0, 1, 0xa, 0)), On(0, F()), On(1, F()),
                               On(0, FD(2)),           On(1, W(4096, 1, 0xb, 4)), On(1, FD(3)),
                               On(0, W(4096, 1, 0xc, 7))};
  CrashReplayer r(log, {std::vector<std::byte>(kMedium), std::vector<std::byte>(kMedium)});
  // At 5: leg 0 flushed, leg 1's flush still running: leg 1 may lose a.
  CrashState s5 = r.Build(At(5, Unflushed::kDropAll));
  EXPECT_EQ(Blocks(s5.images[0]), (std::vector<int>{0xa, 0, 0, 0}));
  EXPECT_EQ(Blocks(s5.images[1]), (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(s5.unflushed_writes, 2u);  // leg 1's a, and its b in flight
  EXPECT_EQ(s5.in_flight, 1u);
  // At 7 with everything applied: c (logged at 7) is not there yet.
  CrashState s7 = r.Build(At(7, Unflushed::kApplyAll));
  EXPECT_EQ(Blocks(s7.images[0]), (std::vector<int>{0xa, 0, 0, 0}));
  EXPECT_EQ(Blocks(s7.images[1]), (std::vector<int>{0xa, 0xb, 0, 0}));
  EXPECT_EQ(s7.source[1][1], 5);
  EXPECT_EQ(s7.source[0][1], CrashState::kInitial);
  // Every at-flush point of either device is planned.
  EXPECT_EQ(r.PlanCrashPoints({Unflushed::kDropAll}, 0, 1).size(), 2u);
}

// ---- Corruption below every layer ----

namespace {

// Block 0 of device 0 gets three flushed versions (fill 1, 2, 3); block 1 an
// unflushed write (fill 9) that lands; block 2 one flushed write (fill 5).
// Device 1 mirrors nothing: only device 0 is written.
std::vector<LogEntry> VersionedLog() {
  return {W(0, 1, 1, 0),    W(8192, 1, 5, 1), F(), FD(2),  // 0..3
          W(0, 1, 2, 4),    F(),              FD(5),        // 4..6
          W(0, 1, 3, 7),    F(),              FD(8),        // 7..9
          W(4096, 1, 9, 10)};                               // 10, unflushed
}

CorruptionPlan Only(CorruptionKind k, bool at_rest, bool in_flight, uint64_t seed = 7) {
  CorruptionPlan p;
  p.seed = seed;
  p.kinds = {k};
  p.at_rest = at_rest;
  p.in_flight = in_flight;
  return p;
}

int Differing(std::span<const std::byte> a, uint8_t fill) {
  int bits = 0;
  for (std::byte x : a) bits += __builtin_popcount(static_cast<unsigned>(x) ^ fill);
  return bits;
}

std::span<const std::byte> BlockOf(const CrashState& s, uint64_t b) {
  return std::span<const std::byte>(s.images[0]).subspan(b * 4096, 4096);
}

}  // namespace

TEST(CrashReplayerCorruption, BitFlipAtRestFlipsOneToThreeBitsOfADurableBlock) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  for (uint64_t seed = 0; seed < 50; seed++) {
    CrashState s = r.Build(At(11, Unflushed::kApplyAll));
    auto c = r.Corrupt(s, Only(CorruptionKind::kBitFlip, true, false, seed));
    ASSERT_EQ(c.size(), 1u);
    EXPECT_FALSE(c[0].in_flight);
    ASSERT_TRUE(c[0].block == 0 || c[0].block == 2) << c[0].Describe();  // durable blocks only
    const int bits = Differing(BlockOf(s, c[0].block), c[0].block == 0 ? 3 : 5);
    EXPECT_GE(bits, 1);
    EXPECT_LE(bits, 3);
  }
}

TEST(CrashReplayerCorruption, BitFlipInFlightHitsOnlyALandedUnflushedWrite) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  CrashState s = r.Build(At(11, Unflushed::kApplyAll));
  auto c = r.Corrupt(s, Only(CorruptionKind::kBitFlip, false, true));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c[0].in_flight);
  EXPECT_EQ(c[0].block, 1u);
  EXPECT_GE(Differing(BlockOf(s, 1), 9), 1);
  // Dropped: nothing unflushed landed, nothing to corrupt in flight.
  CrashState dropped = r.Build(At(11, Unflushed::kDropAll));
  EXPECT_TRUE(r.Corrupt(dropped, Only(CorruptionKind::kBitFlip, false, true)).empty());
}

TEST(CrashReplayerCorruption, TornBlockIsHalfOldHalfNewCutAt512Bytes) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  CorruptionPlan plan = Only(CorruptionKind::kTorn, true, false);
  plan.group = [](size_t, uint64_t b, std::span<const std::byte>) -> std::optional<uint64_t> {
    if (b == 0) return 0;
    return std::nullopt;
  };
  for (uint64_t seed = 0; seed < 30; seed++) {
    plan.seed = seed;
    CrashState s = r.Build(At(11, Unflushed::kApplyAll));
    auto c = r.Corrupt(s, plan);
    ASSERT_EQ(c.size(), 1u);
    auto blk = BlockOf(s, 0);
    // Old (version 2) and new (version 3), one cut, at a 512-byte boundary.
    size_t cuts = 0;
    for (size_t i = 0; i < 4096; i++) {
      const int v = static_cast<int>(blk[i]);
      ASSERT_TRUE(v == 2 || v == 3) << i;
      if (i > 0 && blk[i] != blk[i - 1]) {
        cuts++;
        EXPECT_EQ(i % 512, 0u);
      }
    }
    EXPECT_EQ(cuts, 1u);
  }
  // In flight, "old" is the block's durable content (initial zeros here).
  CrashState s = r.Build(At(11, Unflushed::kApplyAll));
  auto c = r.Corrupt(s, Only(CorruptionKind::kTorn, false, true));
  ASSERT_EQ(c.size(), 1u);
  std::set<int> values;
  for (std::byte x : BlockOf(s, 1)) values.insert(static_cast<int>(x));
  EXPECT_EQ(values, (std::set<int>{0, 9}));
}

TEST(CrashReplayerCorruption, MisdirectedWriteLandsElsewhereAndAtRestItsBlockKeepsTheOldVersion) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  CorruptionPlan plan = Only(CorruptionKind::kMisdirected, true, false);
  plan.group = [](size_t, uint64_t b, std::span<const std::byte>) -> std::optional<uint64_t> {
    if (b == 0 || b == 3) return b;
    return std::nullopt;
  };
  CrashState s = r.Build(At(11, Unflushed::kApplyAll));
  auto c = r.Corrupt(s, plan);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].block, 3u) << c[0].Describe();
  EXPECT_EQ(c[1].block, 0u) << c[1].Describe();
  EXPECT_EQ(Blocks(s.images[0]), (std::vector<int>{2, 9, 5, 3}));
  // In flight: only the landing block changes.
  plan.at_rest = false;
  plan.in_flight = true;
  plan.group = [](size_t, uint64_t b, std::span<const std::byte>) -> std::optional<uint64_t> {
    if (b == 1 || b == 3) return b;
    return std::nullopt;
  };
  CrashState f = r.Build(At(11, Unflushed::kApplyAll));
  auto cf = r.Corrupt(f, plan);
  ASSERT_EQ(cf.size(), 1u);
  EXPECT_TRUE(cf[0].in_flight);
  EXPECT_EQ(Blocks(f.images[0]), (std::vector<int>{3, 9, 5, 9}));
}

TEST(CrashReplayerCorruption, LostWriteLeavesThePreviousVersionStaleAnOlderOne) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  CorruptionPlan plan = Only(CorruptionKind::kLost, true, false);
  plan.group = [](size_t, uint64_t b, std::span<const std::byte>) -> std::optional<uint64_t> {
    if (b == 0) return 0;
    return std::nullopt;
  };
  CrashState s = r.Build(At(11, Unflushed::kApplyAll));
  auto c = r.Corrupt(s, plan);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].kind, CorruptionKind::kLost);
  EXPECT_EQ(Blocks(s.images[0])[0], 2);
  std::set<int> stale;
  plan.kinds = {CorruptionKind::kStale};
  for (uint64_t seed = 0; seed < 40; seed++) {
    plan.seed = seed;
    CrashState t = r.Build(At(11, Unflushed::kApplyAll));
    ASSERT_EQ(r.Corrupt(t, plan).size(), 1u);
    stale.insert(Blocks(t.images[0])[0]);
  }
  EXPECT_EQ(stale, (std::set<int>{0, 1})) << "older than the previous version: the initial one or version 1";
  // Neither exists in flight.
  CrashState f = r.Build(At(11, Unflushed::kApplyAll));
  EXPECT_TRUE(r.Corrupt(f, Only(CorruptionKind::kLost, false, true)).empty());
}

TEST(CrashReplayerCorruption, NeverInjectsAVersionTheBlockMayLegitimatelyHold) {
  // Version 2 rewrites version 1's bytes: losing it changes nothing, so it
  // is no corruption; a later unflushed write of the old bytes makes them
  // legitimate too.
  std::vector<LogEntry> same = {W(0, 1, 1, 0), F(), FD(1), W(0, 1, 1, 3), F(), FD(4)};
  CrashReplayer r(same, std::vector<std::byte>(kMedium, std::byte{1}));
  CrashState s = r.Build(At(6, Unflushed::kApplyAll));
  EXPECT_TRUE(r.Corrupt(s, Only(CorruptionKind::kLost, true, false)).empty());
  EXPECT_TRUE(r.Corrupt(s, Only(CorruptionKind::kStale, true, false)).empty());
  std::vector<LogEntry> rewritten = {W(0, 1, 1, 0), F(), FD(1), W(0, 1, 2, 3), F(), FD(4), W(0, 1, 1, 6)};
  CrashReplayer r2(rewritten, std::vector<std::byte>(kMedium, std::byte{1}));
  CrashState s2 = r2.Build(At(7, Unflushed::kDropAll));
  EXPECT_TRUE(r2.Corrupt(s2, Only(CorruptionKind::kLost, true, false)).empty());
}

TEST(CrashReplayerCorruption, AtMostOneCorruptionPerGroupAndSeeded) {
  CrashReplayer r(VersionedLog(), std::vector<std::byte>(kMedium));
  CorruptionPlan plan;
  plan.count = 10;
  plan.seed = 3;
  plan.group = [](size_t, uint64_t b, std::span<const std::byte>) -> std::optional<uint64_t> { return b / 2; };
  CrashState s = r.Build(At(11, Unflushed::kApplyAll));
  auto c = r.Corrupt(s, plan);
  ASSERT_FALSE(c.empty());
  std::set<uint64_t> groups;
  for (const auto& x : c) EXPECT_TRUE(groups.insert(x.block / 2).second) << x.Describe();
  CrashState again = r.Build(At(11, Unflushed::kApplyAll));
  auto c2 = r.Corrupt(again, plan);
  EXPECT_EQ(again.images, s.images);
  ASSERT_EQ(c2.size(), c.size());
  for (size_t i = 0; i < c.size(); i++) EXPECT_EQ(c2[i].Describe(), c[i].Describe());
}

}  // namespace stablecache
