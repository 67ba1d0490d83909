#include "stack/stack_spec.h"

#include <gtest/gtest.h>

#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {

TEST(StackSpec, ParsesLayersValuesOptionsAndLegs) {
  auto s = ParseStackSpec("verify,integrity(guard=crc32c),mirror(file:/a,[fault,memory:1M])");
  ASSERT_TRUE(s) << s.error().ToString();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].name, "verify");
  EXPECT_EQ((*s)[1].options.at(0).first, "guard");
  EXPECT_EQ((*s)[1].options.at(0).second, "crc32c");
  const auto& m = (*s)[2];
  ASSERT_EQ(m.legs.size(), 2u);
  EXPECT_EQ(m.legs[0][0].name, "file");
  EXPECT_EQ(m.legs[0][0].value, "/a");
  ASSERT_EQ(m.legs[1].size(), 2u);
  EXPECT_EQ(m.legs[1][1].value, "1M");
}

TEST(StackSpec, ErrorsNameThePosition) {
  for (const char* bad : {"", ",memory:1M", "memory:", "mirror(file:/a", "integrity(guard=)", "mirror([memory:1M)"}) {
    auto s = ParseStackSpec(bad);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code(), Code::kInvalidArgument);
    if (*bad) {
      EXPECT_NE(s.error().message().find("position"), std::string::npos) << s.error().message();
    }
  }
}

TEST(BuildStack, BuildsMemoryAndFaultLayers) {
  auto dev = BuildStack("fault(op=write,offset=0,len=4096,error=EIO,count=1),memory:1M");
  ASSERT_TRUE(dev) << dev.error().ToString();
  EXPECT_EQ((*dev)->Info().size_bytes, 1u << 20);
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(WriteSync(**dev, 0, buf.data(), 4096).code(), Code::kIoError);  // injected once
  EXPECT_TRUE(WriteSync(**dev, 0, buf.data(), 4096).ok());
}

TEST(BuildStack, BadSpecsGetClearErrors) {
  struct Case {
    const char* spec;
    const char* says;
  } cases[] = {
      {"bogus", "unknown layer"},
      {"memory:1M,fault", "leaf or fan-out device must be the last"},
      {"fault", "needs a device below"},
      {"memory:12Q", "unknown suffix"},
      {"memory", "needs a size"},
      {"memory:1000", "multiple of 4096"},
      {"fault(colour=red),memory:1M", "unknown option 'colour'"},
      {"fault(error=EWHAT),memory:1M", "unknown error"},
      {"file", "needs a path"},
      {"file:/nonexistent-dir/x", "No such file"},
      {"memory:1M(file:/x)", "takes no"},
  };
  for (const auto& c : cases) {
    auto dev = BuildStack(c.spec);
    ASSERT_FALSE(dev) << c.spec;
    EXPECT_NE(dev.error().message().find(c.says), std::string::npos)
        << c.spec << " -> " << dev.error().message();
  }
}

TEST(BuildStack, FileLeafCreatesItsFileWithASize) {
  testing::TempFile f;
  auto dev = BuildStack("file:" + f.path() + "(size=1M,direct=off)");
  ASSERT_TRUE(dev) << dev.error().ToString();
  EXPECT_EQ((*dev)->Info().size_bytes, 1u << 20);
  auto bare = BuildStack("file", BuildOptions{f.path(), 2 << 20});
  ASSERT_TRUE(bare) << bare.error().ToString();
  EXPECT_EQ((*bare)->Info().size_bytes, 2u << 20);
}

TEST(ParseSize, Suffixes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 64u << 10);
  EXPECT_EQ(*ParseSize("3M"), 3u << 20);
  EXPECT_EQ(*ParseSize("2G"), 2ull << 30);
  EXPECT_FALSE(ParseSize("x"));
  EXPECT_FALSE(ParseSize("99999999999999999999"));
  EXPECT_FALSE(ParseSize("20000000T"));
}

}  // namespace stablecache
