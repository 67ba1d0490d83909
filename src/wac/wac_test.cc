// The pieces wac judges with: the self-describing block, the read-back
// verdicts, the latency histogram and the option lists.
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
