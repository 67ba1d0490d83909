// The pieces wac judges with: the self-describing block, the read-back
// verdicts, the latency histogram and the option lists.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include "wac/block_format.h"
#include "wac/harness.h"
#include "wac/latency_histogram.h"
#include "wac/wac.h"

namespace stablecache::wac {
namespace {

using Block = std::vector<std::byte>;

Block Make(BlockId id) {
  Block b(kBlockSize);
  FillBlock(id, b);
  return b;
}

TEST(BlockFormat, DescribesItselfAndDetectsTearing) {
  BlockId id{7, 3, 42};
  Block b = Make(id);
  ParsedBlock p = ParseBlock(b);
  ASSERT_EQ(p.state, BlockState::kValid);
  EXPECT_EQ(p.id, id);
  EXPECT_NE(Make({7, 3, 43}), b);  // each content differs
  // Half of one content, half of the next: torn.
  Block next = Make({7, 3, 43});
  std::copy(next.begin() + 2048, next.end(), b.begin() + 2048);
  EXPECT_EQ(ParseBlock(b).state, BlockState::kTorn);
  EXPECT_EQ(ParseBlock(Block(kBlockSize)).state, BlockState::kZero);
}

TEST(BlockFormat, JudgesEveryKindOfBadReadBack) {
  const BlockId last{5, 1, 9};
  EXPECT_EQ(JudgeReadback(5, last, Make(last)), std::nullopt);
  EXPECT_EQ(JudgeReadback(5, last, Make({5, 1, 8})), "stale");
  EXPECT_EQ(JudgeReadback(5, last, Make({5, 2, 9})), "stale");  // another writer's content
  EXPECT_EQ(JudgeReadback(5, last, Make({6, 1, 9})), "misdirected");
  EXPECT_EQ(JudgeReadback(5, last, Block(kBlockSize)), "lost");
  EXPECT_EQ(JudgeReadback(5, std::nullopt, Block(kBlockSize)), std::nullopt);  // never written
  Block torn = Make(last);
  torn[100] ^= std::byte{1};
  EXPECT_EQ(JudgeReadback(5, last, torn), "torn");
  // Live, the device may lag: an older whole content is fine, a torn one not.
  EXPECT_EQ(JudgeLive(5, Make({5, 1, 3})), std::nullopt);
  EXPECT_EQ(JudgeLive(5, torn), "torn");
  EXPECT_EQ(JudgeLive(5, Make({4, 1, 3})), "misdirected");
}

// A scribbled direct write may leave any byte-wise mix of its content and
// the scribble; the read-back accepts exactly those for its block.
TEST(BlockFormat, ScribbledWritesAreJudgedByteWise) {
  const BlockId last{5, 2, 9};
  const BlockId alt = ScribbleOf(last);
  EXPECT_NE(alt, last);
  EXPECT_EQ(alt.block, last.block);
  EXPECT_EQ(alt.seq, last.seq);
  Block a = Make(last), a2 = Make(alt);
  Block mix = a;
  for (size_t i = 0; i < kBlockSize; i += 3) mix[i] = a2[i];
  ASSERT_EQ(ParseBlock(mix).state, BlockState::kTorn);
  EXPECT_EQ(JudgeReadback(5, last, mix, alt), std::nullopt);
  EXPECT_EQ(JudgeReadback(5, last, a2, alt), std::nullopt);  // the scribble whole
  EXPECT_EQ(JudgeReadback(5, last, a, alt), std::nullopt);
  EXPECT_EQ(JudgeReadback(5, last, mix), "torn");  // not scribbled: no excuse
  EXPECT_EQ(JudgeReadback(5, last, a2), "stale");
  // A byte from neither content, or a mix with an older content, is torn.
  Block bad = mix;
  bad[2000] = a[2000] ^ a2[2000] ^ std::byte{0xff};
  if (bad[2000] == a[2000] || bad[2000] == a2[2000]) bad[2000] ^= std::byte{1};
  EXPECT_EQ(JudgeReadback(5, last, bad, alt), "torn");
  Block old = Make({5, 1, 8});
  Block with_old = mix;
  std::copy(old.begin() + 1024, old.begin() + 2048, with_old.begin() + 1024);
  EXPECT_EQ(JudgeReadback(5, last, with_old, alt), "torn");
  EXPECT_EQ(JudgeReadback(5, last, Block(kBlockSize), alt), "lost");
  // Live: the header tells which write's mix it may be.
  EXPECT_TRUE(IsScribbleMix(5, mix));
  EXPECT_TRUE(IsScribbleMix(5, a2));
  EXPECT_FALSE(IsScribbleMix(6, mix));
  EXPECT_FALSE(IsScribbleMix(5, with_old));
  EXPECT_FALSE(IsScribbleMix(5, bad));
}

TEST(BlockTable, TheNextPlainStoreClearsTheScribble) {
  BlockTable t(2);
  ASSERT_TRUE(t.StoreScribbled(1, 3, [](const BlockId& id, const BlockId& alt) {
                 EXPECT_EQ(alt, ScribbleOf(id));
                 return Status::Ok();
               }).ok());
  ASSERT_TRUE(t.LastScribble(1));
  EXPECT_EQ(*t.LastScribble(1), ScribbleOf(*t.Last(1)));
  EXPECT_FALSE(t.LastScribble(0));
  ASSERT_TRUE(t.Store(1, 4, [](const BlockId&) { return Status::Ok(); }).ok());
  EXPECT_FALSE(t.LastScribble(1));
  EXPECT_EQ(t.Last(1)->seq, 2u);
  // A failed scribbled store records nothing.
  EXPECT_FALSE(t.StoreScribbled(1, 3, [](const BlockId&, const BlockId&) { return Status::IoError("x"); }).ok());
  EXPECT_FALSE(t.LastScribble(1));
  EXPECT_EQ(t.Last(1)->writer, 4u);
}

TEST(Scribble, AlternatesAndStopsWhenTheWriteCompletes) {
  Block a = Make({1, 1, 1}), a2 = Make(ScribbleOf({1, 1, 1}));
  Block buf = a;
  int polls = 0;
  uint64_t n = ScribbleWhile(buf, a, a2, [&] { return ++polls <= 3; });
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(buf, a2);  // scribble, content, scribble
  EXPECT_EQ(ScribbleWhile(buf, a, a2, [] { return false; }), 0u);
}

// A mapped store to a page that raises SIGBUS stores nothing and returns
// false; the process goes on.
TEST(Scribble, StoreCatchingSigbusSurvivesABusError) {
  char path[] = "/tmp/wac-sigbus-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);  // file is empty: SIGBUS
  ASSERT_NE(m, MAP_FAILED);
  Block a = Make({1, 1, 1});
  EXPECT_FALSE(StoreCatchingSigbus(static_cast<std::byte*>(m), a.data(), kBlockSize));
  ASSERT_EQ(ftruncate(fd, 4096), 0);
  EXPECT_TRUE(StoreCatchingSigbus(static_cast<std::byte*>(m), a.data(), kBlockSize));
  EXPECT_EQ(std::memcmp(m, a.data(), kBlockSize), 0);
  munmap(m, 4096);
  close(fd);
}

TEST(LatencyHistogram, PercentilesWithinABucket) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1000; i++) h.Add(i * 1000);  // 1 us .. 1 ms
  EXPECT_EQ(h.count(), 1000u);
  const double p99 = static_cast<double>(h.Percentile(0.99));
  EXPECT_GE(p99, 990e3);
  EXPECT_LE(p99, 990e3 * 1.07);
  const double p50 = static_cast<double>(h.Percentile(0.5));
  EXPECT_GE(p50, 500e3);
  EXPECT_LE(p50, 500e3 * 1.07);
  LatencyHistogram other;
  other.Add(5);
  h.Merge(other);
  EXPECT_EQ(h.count(), 1001u);
  EXPECT_LE(h.Percentile(0.0), 5u);
}

TEST(WacOptions, ProfilesAndPoliciesParseOrSayWhatIsWrong) {
  EXPECT_EQ(ParseProfiles("all")->size(), 6u);
  EXPECT_EQ(*ParseProfiles("a,F"), (std::vector<Profile>{Profile::kA, Profile::kF}));
  auto bad = ParseProfiles("A,G");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("bad profile 'G'"), std::string::npos);
  EXPECT_FALSE(ParseProfiles("A,,B"));
  EXPECT_EQ(ParsePolicies("all")->size(), 5u);
  EXPECT_FALSE(ParsePolicies("none,sometimes"));
}

TEST(WacOptions, RunRejectsBadSizesAndDurations) {
  WacConfig c;
  c.file_size = 1000;
  EXPECT_EQ(RunWac(c).error().code(), Code::kInvalidArgument);
  c.file_size = 64 << 10;
  c.duration_s = 0;
  EXPECT_EQ(RunWac(c).error().code(), Code::kInvalidArgument);
  c.duration_s = 0.1;
  c.target = "/nonexistent/stablecache";
  auto r = RunWac(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("is not a directory"), std::string::npos);
}

}  // namespace
}  // namespace stablecache::wac
