// The stability guarantee, proved deterministically: a memory device in
// late-copy mode holds a write "in DMA" until the test releases it, and a
// writer scribbles on the page meanwhile. Under policy none the violation
// is caught by every layer that can see it; under every other policy there
// is none.
#include <cstring>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "devices/integrity_device.h"
#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "devices/verify_device.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "stablecache/stack.h"
#include "held_writes.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;

// A cache with no flusher over `top`: the test drives every writeback.
struct DrivenFile {
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
};

DrivenFile OpenDriven(StablePolicy policy, std::shared_ptr<BlockDevice> top, bool mappable = false) {
  CacheOptions co;
  co.capacity_bytes = 1 << 20;
  co.writeback_interval_ms = 600000;
  co.policy = policy;
  DrivenFile d;
  d.cache = *Cache::Create(co);
  FileOptions fo;
  fo.mappable = mappable;
  d.file = std::move(*d.cache->Open(std::move(top), fo));
  return d;
}

struct Rig {
  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<IntegrityDevice> integrity;
  std::shared_ptr<VerifyDevice> verify;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
};

Rig MakeRig(StablePolicy policy, bool mappable = false) {
  Rig r;
  r.mem = *MemoryDevice::Create({.size_bytes = 4 << 20, .late_copy = true, .manual_release = true});
  r.mem->HoldOnly(0, 0);  // format and tag writes go through; data writes are held
  testing::PreformatHeld({r.mem.get()}, [](const auto& leaves) {
    return std::make_shared<VerifyDevice>(*IntegrityDevice::Create(leaves[0], {}));
  });
  r.integrity = *IntegrityDevice::Create(r.mem, {});
  r.mem->HoldOnly(r.integrity->LowerOffset(0), UINT64_MAX);
  r.verify = std::make_shared<VerifyDevice>(r.integrity);
  auto d = OpenDriven(policy, r.verify, mappable);
  r.cache = std::move(d.cache);
  r.file = std::move(d.file);
  return r;
}

// Lets the held write of page 0 complete, waits for the writer thread and
// the writeback, and reads the medium through the integrity layer, with the
// layers' counts.
struct MediumView {
  Status st;
  std::vector<std::byte> raw;
  std::vector<LayerStats> layers;
};
MediumView ReleaseAndLook(Rig& r, std::thread& writer) {
  r.mem->ReleaseWrites();
  writer.join();
  MediumView v{Status::Ok(), std::vector<std::byte>(4096), {}};
  EXPECT_TRUE(r.file->SyncRange(0, 4096, kSyncWaitBefore).ok());
  v.st = ReadSync(*r.integrity, 0, v.raw.data(), 4096);
  r.verify->CollectStats(v.layers);
  return v;
}

class StableWrites : public ::testing::TestWithParam<StablePolicy> {};

TEST_P(StableWrites, AWriterScribblingOnAPageUnderWriteback) {
  const StablePolicy policy = GetParam();
  Rig r = MakeRig(policy);
  auto a = Pattern(4096, 1), b = Pattern(4096, 2);
  ASSERT_TRUE(r.file->Write(0, a));
  // 1. Start writeback of page 0; the device holds it in "DMA".
  ASSERT_TRUE(r.file->SyncRange(0, 4096, kSyncWrite).ok());
  r.mem->WaitForPendingWrites(1);
  // 2. A writer rewrites the page while it is under writeback.
  std::atomic<bool> done{false};
  std::thread writer([&] {
    EXPECT_TRUE(r.file->Write(0, b));
    done = true;
  });
  while (!done.load() && r.cache->Stats().stable_waits == 0) std::this_thread::yield();
  // 3. The DMA completes, copying whatever the memory holds now.
  // 4. Look at the medium before a later writeback can cover anything up.
  auto [st, raw, layers] = ReleaseAndLook(r, writer);
  const bool none = r.file->EffectivePolicy() == StablePolicy::kNone;
  if (none) {
    EXPECT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
    EXPECT_EQ(layers.at(1).integrity_errors, 1u);
    EXPECT_GT(layers.at(0).modified_in_flight, 0u);
    EXPECT_EQ(r.verify->ModifiedOffsets().at(0), 0u);  // reported by offset
  } else {
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(raw, a);
    EXPECT_EQ(layers.at(0).modified_in_flight, 0u);
  }
  CacheStats s = r.cache->Stats();
  switch (r.file->EffectivePolicy()) {
    case StablePolicy::kWait: EXPECT_GT(s.stable_waits, 0u); break;
    case StablePolicy::kBounce: EXPECT_EQ(s.bytes_bounced, 4096u); break;
    case StablePolicy::kFork:
      EXPECT_EQ(s.forks, 1u);
      EXPECT_EQ(s.fork_copies_skipped, 1u);  // a full-page overwrite copies nothing
      break;
    default: break;
  }
  // 5. In the end the newest bytes land, with good tags.
  ASSERT_TRUE(r.file->Sync().ok());
  ASSERT_TRUE(ReadSync(*r.integrity, 0, raw.data(), 4096).ok());
  EXPECT_EQ(raw, b);
}

// The same scribble from a mapping (page_mkclean, then page_mkwrite): under
// none the store lands in the page the device is still copying; under wait
// it waits for the copy; under bounce, fork and auto (both bounce on a
// mappable file) it lands at once and the device copies a private copy.
TEST_P(StableWrites, AMappedStoreToAPageUnderWriteback) {
  Rig r = MakeRig(GetParam(), /*mappable=*/true);
  auto a = Pattern(4096, 1), b = Pattern(4096, 2);
  ASSERT_TRUE(r.file->Write(0, a));
  auto m = r.file->Map(0, 4096, MapAccess::kReadWrite);
  ASSERT_TRUE(m) << m.error().ToString();
  ASSERT_EQ(0, std::memcmp((*m)->data(), a.data(), 4096));
  ASSERT_TRUE(r.file->SyncRange(0, 4096, kSyncWrite).ok());
  r.mem->WaitForPendingWrites(1);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    std::memcpy((*m)->data(), b.data(), 4096);
    done = true;
  });
  const StablePolicy policy = r.file->EffectivePolicy();
  if (policy == StablePolicy::kWait) {
    while (r.cache->Stats().stable_waits == 0) std::this_thread::yield();
    EXPECT_FALSE(done.load()) << "a mapped store landed on a page under writeback";
  } else {
    while (!done.load()) std::this_thread::yield();  // never waits for the device
  }
  auto [st, raw, layers] = ReleaseAndLook(r, writer);
  if (policy == StablePolicy::kNone) {
    EXPECT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
    EXPECT_GT(layers.at(0).modified_in_flight, 0u);
  } else {
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(raw, a);
    EXPECT_EQ(layers.at(0).modified_in_flight, 0u);
  }
  if (policy == StablePolicy::kBounce) {
    EXPECT_EQ(r.cache->Stats().bytes_bounced, 4096u);
  }
  EXPECT_NE(policy, StablePolicy::kFork) << "a mappable file cannot fork";
  // The store dirtied the page: the next Sync writes it, with good tags.
  ASSERT_TRUE(r.file->Sync().ok());
  ASSERT_TRUE(ReadSync(*r.integrity, 0, raw.data(), 4096).ok());
  EXPECT_EQ(raw, b);
  ASSERT_TRUE((*m)->Unmap().ok());
}

// A direct write of `a` at `offset` with `stability`, whose caller
// scribbles `b` over its buffer while the device holds the write "in DMA".
// Then the block read back through the integrity layer, and the layers'
// counts.
struct ScribbledDirectWrite {
  Result<size_t> written = size_t{0};
  Status read;
  std::vector<std::byte> raw;
  std::vector<LayerStats> layers;
};
ScribbledDirectWrite ScribbleDuringADirectWrite(Rig& r, uint64_t offset, Stability stability,
                                                const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  ScribbledDirectWrite out;
  EXPECT_TRUE(r.file->Truncate(16384).ok());  // a write past EOF would complete inside SubmitDirect
  alignas(4096) std::byte buf[4096];
  std::memcpy(buf, a.data(), 4096);
  std::promise<Result<size_t>> done;
  Status submitted = r.file->SubmitDirect({DirectOp::kWrite, offset, {buf}, stability},
                                          [&](Result<size_t> n) { done.set_value(std::move(n)); });
  EXPECT_TRUE(submitted.ok()) << submitted.ToString();
  if (!submitted.ok()) return out;
  r.mem->WaitForPendingWrites(1);
  std::memcpy(buf, b.data(), 4096);  // the scribble, while the device holds the write
  r.mem->ReleaseWrites();
  out.written = done.get_future().get();
  out.raw.resize(4096);
  out.read = ReadSync(*r.integrity, offset, out.raw.data(), 4096);
  r.verify->CollectStats(out.layers);
  return out;
}

// A direct writer scribbling on its own buffer while the write is "in DMA".
// Unstable (the default): the integrity layer bounces the buffer once, at
// submission, so the medium and its tags hold the bytes submitted and the
// scribble is no violation. Under none the cache vouches for the buffer, so
// nothing is bounced and every layer that can see it catches it.
TEST_P(StableWrites, ADirectWriterScribblingOnAnUnstableBuffer) {
  Rig r = MakeRig(GetParam());
  auto a = Pattern(4096, 1), b = Pattern(4096, 2);
  auto [n, st, raw, layers] = ScribbleDuringADirectWrite(r, 0, Stability::kUnstable, a, b);
  ASSERT_TRUE(n) << n.error().ToString();
  EXPECT_EQ(*n, 4096u);
  if (r.file->EffectivePolicy() == StablePolicy::kNone) {
    EXPECT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
    EXPECT_GT(layers.at(0).modified_in_flight, 0u);
    EXPECT_EQ(layers.at(1).bytes_bounced, 0u);
  } else {
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(raw, a);
    EXPECT_EQ(layers.at(0).modified_in_flight, 0u);  // allowed: it promised nothing
    EXPECT_EQ(layers.at(1).bytes_bounced, 4096u);  // once, by integrity
  }
}

// Declared-stable goes zero-copy, so a caller that breaks its promise is
// caught: verify reports the blocks it changed, by offset, and integrity
// refuses the block.
TEST_P(StableWrites, ADirectWriterBreakingItsDeclaredStablePromise) {
  Rig r = MakeRig(GetParam());
  auto a = Pattern(4096, 1), b = Pattern(4096, 2);
  auto [n, st, raw, layers] = ScribbleDuringADirectWrite(r, 8192, Stability::kDeclaredStable, a, b);
  ASSERT_TRUE(n);
  EXPECT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
  EXPECT_EQ(layers.at(1).bytes_bounced, 0u);  // zero-copy
  EXPECT_EQ(layers.at(0).modified_in_flight, 8u);  // every 512-byte block changed
  ASSERT_FALSE(layers.at(0).modified_offsets.empty());
  EXPECT_EQ(layers.at(0).modified_offsets.at(0), 8192u);  // reported by offset
}

// A declared-stable buffer kept stable costs nothing and lands intact.
TEST_P(StableWrites, ADeclaredStableDirectWriteIsNotCopied) {
  Rig r = MakeRig(GetParam());
  auto a = Pattern(8192, 3);
  alignas(4096) static std::byte aligned[8192];
  std::memcpy(aligned, a.data(), 8192);
  std::thread release([&] {
    r.mem->WaitForPendingWrites(1);
    r.mem->ReleaseWrites();
  });
  auto n = r.file->DirectWrite(0, {aligned, 8192}, Stability::kDeclaredStable);
  release.join();
  ASSERT_TRUE(n) << n.error().ToString();
  std::vector<std::byte> raw(8192);
  ASSERT_TRUE(ReadSync(*r.integrity, 0, raw.data(), 8192).ok());
  EXPECT_EQ(raw, a);
  std::vector<LayerStats> layers;
  r.verify->CollectStats(layers);
  EXPECT_EQ(layers.at(1).bytes_bounced, 0u);
  EXPECT_EQ(layers.at(0).modified_in_flight, 0u);
}

INSTANTIATE_TEST_SUITE_P(Policies, StableWrites,
                         ::testing::Values(StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce,
                                           StablePolicy::kFork, StablePolicy::kAuto),
                         [](const auto& p) { return std::string(PolicyName(p.param)); });

// The same scribble, seen by the redundant layers: each leg takes the bytes
// at its own time, so under none the legs of a mirror diverge and parity
// (computed at submission) stops matching the data the legs took later.
struct RedundantRig {
  std::vector<std::shared_ptr<MemoryDevice>> legs;
  std::shared_ptr<BlockDevice> top;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
};

RedundantRig MakeRedundantRig(StablePolicy policy, bool parity) {
  RedundantRig r;
  // The set's member records and bitmap are written at once; only data
  // writes (past the set's data offset) are held.
  for (int i = 0; i < (parity ? 3 : 2); i++) {
    r.legs.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .manual_release = true}));
    r.legs.back()->HoldOnly(0, 0);
  }
  std::vector<std::shared_ptr<BlockDevice>> legs(r.legs.begin(), r.legs.end());
  std::vector<MemoryDevice*> held;
  for (auto& l : r.legs) held.push_back(l.get());
  testing::PreformatHeld(held, [parity](const auto& leaves) -> std::shared_ptr<BlockDevice> {
    if (parity) return *ParityDevice::Create(leaves);
    return *MirrorDevice::Create(leaves);
  });
  uint64_t data_offset;
  if (parity) {
    auto p = *ParityDevice::Create(legs);
    data_offset = p->data_offset();
    r.top = p;
  } else {
    auto m = *MirrorDevice::Create(legs);
    data_offset = m->data_offset();
    r.top = m;
  }
  for (auto& l : r.legs) l->HoldOnly(data_offset, UINT64_MAX);
  auto d = OpenDriven(policy, r.top);
  r.cache = std::move(d.cache);
  r.file = std::move(d.file);
  return r;
}

class RedundantStableWrites : public ::testing::TestWithParam<std::tuple<StablePolicy, bool>> {};

TEST_P(RedundantStableWrites, AScribbleUnderWritebackAndTheScrub) {
  auto [policy, parity] = GetParam();
  RedundantRig r = MakeRedundantRig(policy, parity);
  auto a = Pattern(4096, 1), b = Pattern(4096, 2);
  ASSERT_TRUE(r.file->Write(0, a));
  ASSERT_TRUE(r.file->SyncRange(0, 4096, kSyncWrite).ok());
  // Parity holds a data chunk and a parity chunk; a mirror one copy per leg.
  for (auto& l : r.legs) {
    if (parity && l == r.legs[1]) continue;  // stripe 0 lives on legs 0 (data) and 2 (parity)
    l->WaitForPendingWrites(1);
  }
  if (!parity) {  // leg 0 takes its copy first
    r.legs[0]->ReleaseWrites();
    r.legs[0]->WaitForPendingAtMost(0);
  }
  std::atomic<bool> done{false};
  std::thread writer([&] {
    EXPECT_TRUE(r.file->Write(0, b));
    done = true;
  });
  while (!done.load() && r.cache->Stats().stable_waits == 0) std::this_thread::yield();
  for (auto& l : r.legs) l->ReleaseWrites();
  writer.join();
  ASSERT_TRUE(r.file->SyncRange(0, 4096, kSyncWaitBefore).ok());
  ScrubReport rep;
  ASSERT_TRUE(r.top->Scrub(rep).ok());
  if (r.file->EffectivePolicy() == StablePolicy::kNone) {
    EXPECT_EQ(parity ? rep.parity_mismatch : rep.mirror_divergence, 1u);
    ASSERT_FALSE(rep.findings.empty());
    EXPECT_EQ(rep.findings[0].block, 0u);  // block 0 (stripe 0)
  } else {
    EXPECT_TRUE(rep.clean()) << rep.findings.size() << " findings";
  }
  ASSERT_TRUE(r.file->Sync().ok());
  ScrubReport after;
  ASSERT_TRUE(r.top->Scrub(after).ok());
  EXPECT_TRUE(after.clean());  // the next writeback covers it up: only the scrub in between saw it
  std::vector<std::byte> raw(4096);
  ASSERT_TRUE(ReadSync(*r.top, 0, raw.data(), 4096).ok());
  EXPECT_EQ(raw, b);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RedundantStableWrites,
    ::testing::Combine(::testing::Values(StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce,
                                         StablePolicy::kFork, StablePolicy::kAuto),
                       ::testing::Bool()),
    [](const auto& p) {
      return std::string(PolicyName(std::get<0>(p.param))) + (std::get<1>(p.param) ? "_parity" : "_mirror");
    });

TEST(StableWrites, AutoChoosesForkWhenTheStackNeedsStability) {
  Rig r = MakeRig(StablePolicy::kAuto);
  EXPECT_EQ(r.file->EffectivePolicy(), StablePolicy::kFork);
}

TEST(BounceOnce, ThreeLayersNeedingStabilityCopyEachByteOnce) {
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto i1 = *IntegrityDevice::Create(mem, {});
  auto i2 = *IntegrityDevice::Create(i1, {.guard = GuardType::kCrc32c});
  auto i3 = *IntegrityDevice::Create(i2, {});
  auto data = Pattern(64 << 10, 3);
  auto bounced = [&] {
    std::vector<LayerStats> v;
    i3->CollectStats(v);
    uint64_t n = 0;
    for (auto& l : v) n += l.bytes_bounced;
    return std::pair{n, v};
  };
  ASSERT_TRUE(WriteSync(*i3, 0, data.data(), data.size(), Stability::kUnstable).ok());
  auto [total, layers] = bounced();
  EXPECT_EQ(total, data.size());  // bytes_bounced == bytes_written
  EXPECT_EQ(layers.at(0).bytes_bounced, data.size());  // by the top layer, once
  ASSERT_TRUE(WriteSync(*i3, 0, data.data(), data.size(), Stability::kStable).ok());
  EXPECT_EQ(bounced().first, data.size());  // stable bios: nothing more
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(ReadSync(*i3, 0, back.data(), back.size()).ok());
  EXPECT_EQ(back, data);
}

TEST(BounceOnce, AnUnstableBufferScribbledDuringTheWriteStillLandsIntact) {
  // Direct-I/O style: the caller's buffer changes while the write is in
  // flight. Integrity bounced it at submission, so the medium gets the
  // submitted bytes and the tags match.
  auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20, .late_copy = true, .manual_release = true});
  mem->HoldOnly(0, 0);
  auto integ = *IntegrityDevice::Create(mem, {});
  mem->HoldOnly(integ->LowerOffset(0), UINT64_MAX);
  auto buf = Pattern(4096, 4);
  const auto original = buf;
  std::atomic<bool> done{false};
  auto bio = Bio::Make(BioOp::kWrite, 0, Stability::kUnstable);
  bio->AddSegment(buf.data(), 4096);
  bio->on_complete = [&](BioPtr, Status st) {
    EXPECT_TRUE(st.ok());
    done = true;
    done.notify_all();
  };
  integ->Submit(std::move(bio));
  mem->WaitForPendingWrites(1);
  std::fill(buf.begin(), buf.end(), std::byte{0x77});
  mem->ReleaseWrites();
  done.wait(false);
  std::vector<std::byte> back(4096);
  ASSERT_TRUE(ReadSync(*integ, 0, back.data(), 4096).ok());
  EXPECT_EQ(back, original);
}

TEST(Integrity, TagsSurviveAFlushAndAReopen) {
  auto mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
  auto data = Pattern(8192, 5);
  {
    auto integ = *IntegrityDevice::Create(mem, {.guard = GuardType::kCrc32c});
    ASSERT_TRUE(WriteSync(*integ, 4096, data.data(), data.size()).ok());
    ASSERT_TRUE(FlushSync(*integ).ok());
  }
  // Corrupt one byte on the medium behind the layer's back.
  std::byte evil{0xff};
  auto again = *IntegrityDevice::Create(mem, {.guard = GuardType::kCrc32c});
  mem->WriteRaw(again->LowerOffset(2) + 17, &evil, 1);
  std::vector<std::byte> back(4096);
  EXPECT_TRUE(ReadSync(*again, 4096, back.data(), 4096).ok());
  Status st = ReadSync(*again, 8192, back.data(), 4096);
  EXPECT_EQ(st.code(), Code::kIntegrityError);
  EXPECT_NE(st.message().find("block 2 (offset 8192)"), std::string::npos) << st.message();
}

TEST(Integrity, SpecOptionsAndErrors) {
  ASSERT_TRUE(BuildStack("verify,integrity(guard=crc32c,require=stable),delay(us=10),memory:1M"));
  auto bad = BuildStack("integrity(guard=md5),memory:1M");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("guard must be crc16 or crc32c"), std::string::npos);
  auto tiny = BuildStack("integrity,memory:4K");
  ASSERT_FALSE(tiny);
  EXPECT_NE(tiny.error().message().find("no room"), std::string::npos) << tiny.error().message();
}

}  // namespace
}  // namespace stablecache
