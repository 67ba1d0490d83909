// The integrity layer's on-disk format: it survives a reopen, refuses a
// medium or spec that disagrees, and is crash-consistent (a crash at any
// instant never turns a block into an integrity error).
#include "devices/integrity_device.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "crash/crash_replayer.h"
#include "devices/fault_device.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "devices/integrity_test_util.h"
#include "stablecache/stack.h"

namespace stablecache {
namespace {

using namespace integrity_test;

std::vector<std::byte> Image(MemoryDevice& m) {
  std::vector<std::byte> img(m.Info().size_bytes);
  m.ReadRaw(0, img.data(), img.size());
  return img;
}

TEST(IntegrityFormat, ReopenKeepsTagsAndDetectsRot) {
  auto mem = Mem();
  {
    auto dev = *IntegrityDevice::Create(mem, {});
    EXPECT_TRUE(dev->formatted_now());
    for (uint64_t b = 0; b < 4; b++) ASSERT_TRUE(WriteSync(*dev, b * kBlock, Pattern(b, 1).data(), kBlock).ok());
    ASSERT_TRUE(FlushSync(*dev).ok());
  }
  auto dev = IntegrityDevice::Create(mem, {});
  ASSERT_TRUE(dev) << dev.error().ToString();
  EXPECT_FALSE((*dev)->formatted_now());
  std::vector<std::byte> got(kBlock);
  for (uint64_t b = 0; b < 4; b++) {
    ASSERT_TRUE(ReadSync(**dev, b * kBlock, got.data(), kBlock).ok());
    EXPECT_EQ(got, Pattern(b, 1));
  }
  uint8_t evil = 0x5a;
  mem->WriteRaw((*dev)->LowerOffset(2) + 100, &evil, 1);
  Status st = ReadSync(**dev, 2 * kBlock, got.data(), kBlock);
  EXPECT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
  EXPECT_NE(st.message().find("block 2"), std::string::npos) << st.message();
}

TEST(IntegrityFormat, BlocksWrittenAtAnotherAddressFail) {
  auto mem = Mem();
  auto dev = *IntegrityDevice::Create(mem, {.guard = GuardType::kCrc32c});
  // Two blocks with identical bytes: the guard is seeded with the block
  // number, so a misdirected copy still fails.
  std::vector<std::byte> same(kBlock, std::byte{7});
  ASSERT_TRUE(WriteSync(*dev, 0, same.data(), kBlock).ok());
  ASSERT_TRUE(WriteSync(*dev, kBlock, Pattern(1, 1).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());
  mem->WriteRaw(dev->LowerOffset(1), same.data(), kBlock);  // block 0's bytes land on block 1
  std::vector<std::byte> got(kBlock);
  EXPECT_EQ(ReadSync(*dev, kBlock, got.data(), kBlock).code(), Code::kIntegrityError);
}

TEST(IntegrityFormat, ASpecThatDisagreesWithTheMediumFailsNamingBoth) {
  auto mem = Mem();
  ASSERT_TRUE(IntegrityDevice::Create(mem, {.guard = GuardType::kCrc16T10Dif}));
  auto wrong = IntegrityDevice::Create(mem, {.guard = GuardType::kCrc32c});
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("guard=crc32c"), std::string::npos) << wrong.error().message();
  EXPECT_NE(wrong.error().message().find("guard=crc16"), std::string::npos) << wrong.error().message();
  // No guard in the spec: the recorded one.
  auto as_is = IntegrityDevice::Create(mem, {});
  ASSERT_TRUE(as_is);
  EXPECT_EQ((*as_is)->geometry().guard, GuardType::kCrc16T10Dif);
  EXPECT_EQ((*as_is)->Info().name, "integrity(crc16)");
}

TEST(IntegrityFormat, ADeviceThatGrewOrShrankIsRefused) {
  auto small = Mem(1 << 20);
  ASSERT_TRUE(IntegrityDevice::Create(small, {}));
  auto img = Image(*small);
  img.resize(2 << 20);  // the same volume on a bigger device
  auto grown = IntegrityDevice::Create(FromImage(img), {});
  ASSERT_FALSE(grown);
  EXPECT_NE(grown.error().message().find("cannot grow"), std::string::npos) << grown.error().message();
  img.resize(512 << 10);
  auto shrunk = IntegrityDevice::Create(FromImage(img), {});
  ASSERT_FALSE(shrunk);
  EXPECT_NE(shrunk.error().message().find("shrank"), std::string::npos) << shrunk.error().message();
}

TEST(IntegrityFormat, AMediumHoldingSomethingElseIsRefused) {
  auto mem = Mem();
  std::vector<std::byte> junk(kBlock, std::byte{0x11});
  mem->WriteRaw(0, junk.data(), kBlock);
  auto dev = IntegrityDevice::Create(mem, {});
  ASSERT_FALSE(dev);
  EXPECT_NE(dev.error().message().find("refusing to format"), std::string::npos) << dev.error().message();

  auto other = Mem();
  MetadataRecord r;
  r.magic = "SCMIRROR";
  r.generation = 1;
  r.uuid = Uuid::Random();
  r.Put<uint64_t>(0, 42);
  ASSERT_TRUE(WriteRecordSlot(*other, 0, r).ok());
  auto foreign = IntegrityDevice::Create(other, {});
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find("mirror superblock"), std::string::npos) << foreign.error().message();
}

TEST(IntegrityFormat, ABlockNeverWrittenReadsZerosWhateverTheDeviceHeld) {
  auto mem = Mem();
  std::vector<std::byte> old(kBlock, std::byte{0x6b});  // a used device: old bytes everywhere but the record
  for (uint64_t b = 2; b < mem->Info().size_bytes / kBlock; b++) mem->WriteRaw(b * kBlock, old.data(), kBlock);
  auto dev = *IntegrityDevice::Create(mem, {});
  std::vector<std::byte> got(2 * kBlock, std::byte{1});
  ASSERT_TRUE(WriteSync(*dev, 6 * kBlock, Pattern(6, 1).data(), kBlock).ok());
  ASSERT_TRUE(ReadSync(*dev, 5 * kBlock, got.data(), 2 * kBlock).ok());
  EXPECT_EQ(std::vector<std::byte>(got.begin(), got.begin() + kBlock), std::vector<std::byte>(kBlock));
  EXPECT_EQ(std::vector<std::byte>(got.begin() + kBlock, got.end()), Pattern(6, 1));
}

TEST(IntegrityFormat, ACorruptTagBlockMakesItsBlocksUnreadableUntilRewritten) {
  auto mem = Mem(4 << 20);
  auto img = [&] {
    auto dev = *IntegrityDevice::Create(mem, {});
    for (uint64_t b : {0ull, 1ull, 300ull})
      EXPECT_TRUE(WriteSync(*dev, b * kBlock, Pattern(b, 1).data(), kBlock).ok());
    EXPECT_TRUE(FlushSync(*dev).ok());
    return dev->geometry();
  }();
  uint8_t evil = 0xff;
  mem->WriteRaw(img.tag_start * kBlock + 40, &evil, 1);  // tag block 0: blocks 0..253
  auto dev = *IntegrityDevice::Create(mem, {});
  std::vector<std::byte> got(kBlock);
  Status st = ReadSync(*dev, 0, got.data(), kBlock);
  EXPECT_EQ(st.code(), Code::kIntegrityError);
  EXPECT_NE(st.message().find("tag block 0"), std::string::npos) << st.message();
  ASSERT_TRUE(ReadSync(*dev, 300 * kBlock, got.data(), kBlock).ok());  // tag block 1 is fine
  EXPECT_EQ(got, Pattern(300, 1));
  ASSERT_TRUE(WriteSync(*dev, kBlock, Pattern(1, 2).data(), kBlock).ok());
  ASSERT_TRUE(ReadSync(*dev, kBlock, got.data(), kBlock).ok());
  EXPECT_EQ(got, Pattern(1, 2));
}

TEST(IntegrityFormat, AFailedWriteIsResolvedBeforeTheBlockIsWrittenAgain) {
  auto mem = Mem();
  auto fault = std::make_shared<FaultDevice>(mem);
  auto dev = *IntegrityDevice::Create(fault, {});
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 1).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());
  FaultRule r;
  r.op = BioOp::kWrite;
  r.offset = dev->LowerOffset(0);
  r.len = kBlock;
  r.count = 1;
  fault->AddRule(r);
  EXPECT_FALSE(WriteSync(*dev, 0, Pattern(0, 2).data(), kBlock).ok());
  std::vector<std::byte> got(kBlock);
  ASSERT_TRUE(ReadSync(*dev, 0, got.data(), kBlock).ok());  // the old bytes, still good
  EXPECT_EQ(got, Pattern(0, 1));
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 3).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());
  ASSERT_TRUE(ReadSync(*dev, 0, got.data(), kBlock).ok());
  EXPECT_EQ(got, Pattern(0, 3));
  auto again = *IntegrityDevice::Create(mem, {});
  ASSERT_TRUE(ReadSync(*again, 0, got.data(), kBlock).ok());
  EXPECT_EQ(got, Pattern(0, 3));
}

// The first scenario, at the device: a synced block, then a newer
// unsynced version written by background writeback, then a crash at every
// point of the log (and several fates for the unflushed writes). Every
// block must read as its last flushed version or a later one: never an
// integrity error, never anything else.
TEST(IntegrityCrash, EveryCrashStateReadsFlushedOrLaterContent) {
  constexpr uint64_t kBlocks = 24;
  auto mem = Mem(1 << 20);
  auto log = std::make_shared<LogWritesDevice>(mem);
  const std::vector<std::byte> initial(mem->Info().size_bytes);
  auto dev = *IntegrityDevice::Create(log, {});
  std::vector<std::vector<uint32_t>> versions(kBlocks);  // written, in order (version 0 = zeros)
  for (auto& v : versions) v.push_back(0);
  std::map<uint64_t, std::vector<size_t>> flushed_at;  // log position -> per block index of its flushed version
  std::mt19937 rng(7);
  for (int round = 0; round < 40; round++) {
    const int writes = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < writes; i++) {
      const uint64_t b = rng() % kBlocks;
      const uint64_t n = 1 + rng() % std::min<uint64_t>(3, kBlocks - b);
      std::vector<std::byte> buf;
      for (uint64_t j = b; j < b + n; j++) {
        const uint32_t ver = static_cast<uint32_t>(round * 10 + i + 1);
        versions[j].push_back(ver);
        auto p = Pattern(j, ver);
        buf.insert(buf.end(), p.begin(), p.end());
      }
      ASSERT_TRUE(WriteSync(*dev, b * kBlock, buf.data(), static_cast<uint32_t>(buf.size())).ok());
    }
    if (rng() % 3 == 0) {
      ASSERT_TRUE(FlushSync(*dev).ok());
      std::vector<size_t> idx(kBlocks);
      for (uint64_t b = 0; b < kBlocks; b++) idx[b] = versions[b].size() - 1;
      flushed_at[log->Mark("flushed")] = idx;
    }
  }
  CrashReplayer replayer(log->Snapshot(), initial);
  auto points = replayer.PlanCrashPoints({Unflushed::kDropAll, Unflushed::kApplyAll}, 400, 11);
  for (uint64_t p = 0; p <= replayer.log().size(); p += 7)
    for (Unflushed u : {Unflushed::kDropAll, Unflushed::kApplyAll}) points.push_back({p, u, 0, "stride"});
  std::sort(points.begin(), points.end(), [](auto& a, auto& b) { return a.position < b.position; });
  size_t states = 0;
  std::vector<std::byte> got(kBlock);
  for (const CrashPoint& p : points) {
    CrashState s = replayer.Build(p);
    auto reopened = IntegrityDevice::Create(FromImage(s.images[0]), {});
    ASSERT_TRUE(reopened) << s.Describe() << ": " << reopened.error().ToString();
    auto it = flushed_at.lower_bound(p.position);  // marks at index >= p are after the crash
    const std::vector<size_t>* flushed = it == flushed_at.begin() ? nullptr : &std::prev(it)->second;
    for (uint64_t b = 0; b < kBlocks; b++) {
      Status st = ReadSync(**reopened, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << s.Describe() << " block " << b << ": " << st.ToString();
      bool zero = got == std::vector<std::byte>(kBlock);
      uint32_t ver = 0;
      if (!zero) std::memcpy(&ver, got.data() + 8, 4);
      auto& vs = versions[b];
      const size_t from = flushed ? (*flushed)[b] : 0;
      bool allowed = false;
      for (size_t k = from; k < vs.size() && !allowed; k++)
        allowed = vs[k] == ver && (ver == 0 ? zero : got == Pattern(b, ver));
      ASSERT_TRUE(allowed) << s.Describe() << " block " << b << " holds version " << ver
                           << (zero ? " (zeros)" : "");
    }
    // And the reopened volume takes writes again.
    ASSERT_TRUE(WriteSync(**reopened, 0, Pattern(0, 999).data(), kBlock).ok()) << s.Describe();
    states++;
  }
  EXPECT_GE(states, 400u);
}

}  // namespace
}  // namespace stablecache
