// The fault layer's fail-the-Nth machinery: skip, counters, drop, latent
// sector errors healed by a write, and the stack-spec spelling.
#include <gtest/gtest.h>

#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "stablecache/stack.h"

namespace stablecache {
namespace {

std::shared_ptr<FaultDevice> OverMemory() {
  auto mem = MemoryDevice::Create({.size_bytes = 1 << 20});
  EXPECT_TRUE(mem);
  return std::make_shared<FaultDevice>(*mem);
}

TEST(FaultDevice, FailsOnlyTheNthMatchingBioAndCountsWhatItSees) {
  auto fault = OverMemory();
  fault->AddRule({.op = BioOp::kWrite, .skip = 2, .count = 1});  // the 3rd write
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(ReadSync(*fault, 0, buf.data(), 4096).ok());  // not a write: not counted by the rule
  EXPECT_TRUE(WriteSync(*fault, 0, buf.data(), 4096).ok());
  EXPECT_TRUE(WriteSync(*fault, 4096, buf.data(), 4096).ok());
  EXPECT_FALSE(WriteSync(*fault, 8192, buf.data(), 4096).ok());
  EXPECT_TRUE(WriteSync(*fault, 8192, buf.data(), 4096).ok());
  EXPECT_TRUE(FlushSync(*fault).ok());
  EXPECT_EQ(fault->seen(), 6u);
  EXPECT_EQ(fault->seen(BioOp::kWrite), 4u);
  EXPECT_EQ(fault->seen(BioOp::kRead), 1u);
  EXPECT_EQ(fault->seen(BioOp::kFlush), 1u);
  EXPECT_EQ(fault->injected(), 1u);
  EXPECT_EQ(fault->injected(BioOp::kWrite), 1u);
}

TEST(FaultDevice, ASkippingRuleLetsLaterRulesFire) {
  auto fault = OverMemory();
  fault->AddRule({.skip = 5, .count = 1});
  fault->AddRule({.op = BioOp::kRead, .offset = 0, .len = 4096, .count = 1});
  std::vector<std::byte> buf(4096);
  EXPECT_FALSE(ReadSync(*fault, 0, buf.data(), 4096).ok());  // the second rule, while the first skips
  EXPECT_EQ(fault->injected(), 1u);
}

TEST(FaultDevice, DropAcknowledgesAWriteThatNeverLands) {
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  fault->AddRule({.op = BioOp::kWrite, .count = 1, .action = FaultAction::kDrop});
  std::vector<std::byte> buf(4096, std::byte{7}), back(4096);
  EXPECT_TRUE(WriteSync(*fault, 0, buf.data(), 4096).ok());  // the lie
  mem->ReadRaw(0, back.data(), 4096);
  EXPECT_EQ(back[0], std::byte{0});
  EXPECT_EQ(fault->injected(BioOp::kWrite), 1u);
}

TEST(FaultDevice, ALatentSectorErrorIsHealedByAWriteOverIt) {
  auto fault = OverMemory();
  fault->AddRule({.op = BioOp::kRead, .offset = 8192, .len = 4096, .heal_on_write = true});
  std::vector<std::byte> buf(4096);
  EXPECT_FALSE(ReadSync(*fault, 8192, buf.data(), 4096).ok());
  EXPECT_FALSE(ReadSync(*fault, 8192, buf.data(), 4096).ok());  // forever, until rewritten
  EXPECT_TRUE(WriteSync(*fault, 4096, buf.data(), 4096).ok());   // next to it: no effect
  EXPECT_FALSE(ReadSync(*fault, 8192, buf.data(), 4096).ok());
  EXPECT_TRUE(WriteSync(*fault, 8192, buf.data(), 4096).ok());
  EXPECT_TRUE(ReadSync(*fault, 8192, buf.data(), 4096).ok());
}

TEST(FaultDevice, StackSpecFailsTheNth) {
  auto dev = BuildStack("fault(op=write,nth=2),memory:1M");
  ASSERT_TRUE(dev) << dev.error().ToString();
  auto* fault = dynamic_cast<FaultDevice*>(dev->get());
  ASSERT_NE(fault, nullptr);
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(WriteSync(**dev, 0, buf.data(), 4096).ok());
  EXPECT_FALSE(WriteSync(**dev, 0, buf.data(), 4096).ok());
  EXPECT_TRUE(WriteSync(**dev, 0, buf.data(), 4096).ok());  // count defaults to 1 with nth
  EXPECT_EQ(fault->seen(BioOp::kWrite), 3u);
}

TEST(FaultDevice, StackSpecRejectsBadNthOptions) {
  for (const char* spec : {"fault(nth=0),memory:1M", "fault(nth=2,skip=1),memory:1M", "fault(action=lie),memory:1M",
                           "fault(skip=x),memory:1M"}) {
    auto dev = BuildStack(spec);
    EXPECT_FALSE(dev) << spec;
    if (!dev) {
      EXPECT_EQ(dev.error().code(), Code::kInvalidArgument) << spec;
    }
  }
  auto drop = BuildStack("fault(op=write,skip=1,count=forever,action=drop),memory:1M");
  EXPECT_TRUE(drop) << drop.error().ToString();
}

}  // namespace
}  // namespace stablecache
