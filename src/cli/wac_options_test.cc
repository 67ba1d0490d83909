#include "cli/wac_options.h"

#include <gtest/gtest.h>

namespace stablecache::cli {
namespace {

TEST(WacOptions, DefaultsAreDesignSection4s) {
  auto o = ParseWacOptions({});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->profiles.size(), 6u);
  ASSERT_EQ(o->policies.size(), 1u);
  EXPECT_EQ(o->policies[0], StablePolicy::kAuto);
  EXPECT_EQ(o->threads, 64u);
  EXPECT_EQ(o->file_size, 64u << 10);
  EXPECT_EQ(o->duration_s, 5);
  EXPECT_EQ(o->stack, "verify,integrity,file");
  EXPECT_EQ(o->target, "stack");
  EXPECT_FALSE(o->json);
  EXPECT_TRUE(o->live_check);
}

TEST(WacOptions, ParsesEveryOption) {
  auto o = ParseWacOptions({"--profile", "A,c", "--threads", "8", "--file-size", "1M", "--duration", "0.5",
                            "--policy", "none,fork", "--stack", "memory:16M", "--json", "--no-live-check"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->profiles, (std::vector{wac::Profile::kA, wac::Profile::kC}));
  EXPECT_EQ(o->policies, (std::vector{StablePolicy::kNone, StablePolicy::kFork}));
  EXPECT_EQ(o->threads, 8u);
  EXPECT_EQ(o->file_size, 1u << 20);
  EXPECT_EQ(o->duration_s, 0.5);
  EXPECT_EQ(o->stack, "memory:16M");
  EXPECT_TRUE(o->json);
  EXPECT_FALSE(o->live_check);
}

TEST(WacOptions, AKernelTargetRunsEachProfileOnce) {
  auto o = ParseWacOptions({"--target", "/tmp", "--policy", "all", "--stack", "not a spec"});
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_TRUE(o->policy_ignored);
  EXPECT_EQ(o->policies, std::vector{StablePolicy::kAuto});
}

TEST(WacOptions, ErrorsNameTheOption) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"--duration", "abc"}, "--duration: 'abc' is not a number"},
      {{"--threads", "0"}, "--threads: 0 is out of range"},
      {{"--file-size", "6000"}, "multiple of 4096"},
      {{"--profile", "Z"}, "--profile: bad profile 'Z'"},
      {{"--policy", "never"}, "--policy"},
      {{"--stack", "mirror("}, "--stack: stack spec"},
      {{"--target", ""}, "--target"},
      {{"--bogus"}, "bogus"},
  };
  for (const Case& c : cases) {
    auto o = ParseWacOptions(c.args);
    ASSERT_FALSE(o) << c.args[0];
    EXPECT_EQ(o.error().code(), Code::kInvalidArgument);
    EXPECT_NE(o.error().message().find(c.says), std::string::npos) << o.error().message();
  }
}

TEST(WacOptions, HelpIsNotAnError) {
  auto o = ParseWacOptions({"--help"});
  ASSERT_TRUE(o);
  EXPECT_TRUE(o->help);
}

}  // namespace
}  // namespace stablecache::cli

namespace stablecache::cli {
namespace {

// Found by fuzz_wac_options: CLI11 converts a flag's value with std::stoll,
// whose out_of_range escaped the parser and aborted the program.
TEST(WacOptions, AFlagGivenAHugeValueIsAUsageError) {
  auto o = ParseWacOptions({"--no-live-check=-777777777777777777777777777"});
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().code(), Code::kInvalidArgument);
  EXPECT_NE(o.error().message().find("flag"), std::string::npos) << o.error().message();
}

}  // namespace
}  // namespace stablecache::cli
