// Adversarial tests of the data epoch (member record v2: base_events,
// faulty_roles) and degraded mode: crashes while a failed leg is being
// recorded, legs that come back, dirty regions next to a missing leg.
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "block/metadata_record.h"
#include "block/stacked_device.h"
#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;
using Bytes = std::vector<std::byte>;

// Holds writes that overlap [offset, offset + len) while armed; Release()
// passes them down. Models a write still in flight when the process dies.
class GateDevice final : public StackedDevice {
 public:
  GateDevice(std::shared_ptr<BlockDevice> lower, uint64_t offset, uint64_t len)
      : StackedDevice(std::move(lower), "gate", Stability::kUnstable), offset_(offset), len_(len) {}
  void Submit(BioPtr bio) override {
    {
      std::lock_guard lk(mu_);
      if (armed_ && bio->op == BioOp::kWrite && bio->offset < offset_ + len_ && bio->offset + bio->Length() > offset_) {
        held_.push_back(std::move(bio));
        return;
      }
    }
    lower_->Submit(std::move(bio));
  }
  void Arm() {
    std::lock_guard lk(mu_);
    armed_ = true;
  }
  size_t held() {
    std::lock_guard lk(mu_);
    return held_.size();
  }
  void Release() {
    std::deque<BioPtr> h;
    {
      std::lock_guard lk(mu_);
      armed_ = false;
      h.swap(held_);
    }
    for (auto& b : h) lower_->Submit(std::move(b));
  }

 private:
  const uint64_t offset_, len_;
  std::mutex mu_;
  bool armed_ = false;
  std::deque<BioPtr> held_;
};

constexpr uint64_t kLeg = 1 << 20;
std::shared_ptr<MemoryDevice> Mem1M() { return *MemoryDevice::Create({.size_bytes = kLeg}); }
Bytes Image(const MemoryDevice& m) {
  Bytes b(kLeg);
  m.ReadRaw(0, b.data(), b.size());
  return b;
}
std::shared_ptr<MemoryDevice> FromImage(const Bytes& img) {
  auto m = Mem1M();
  m->WriteRaw(0, img.data(), img.size());
  return m;
}
template <typename F>
bool WaitFor(F f, int ms = 2000) {
  for (int i = 0; i < ms; i++) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return f();
}

// Leg 1 of a mirror fails a write; recording it as faulty on leg 0 is
// still in flight (held). Meanwhile a write to another region goes to leg
// 0 only (leg 1 is missing: neither its data nor its bitmap is written),
// and a flush clears that region's bit on leg 0. The process dies before
// the record lands. Neither write was acknowledged, but at the next
// assembly both legs are current (no record names leg 1), no bitmap says
// the region is dirty, and the legs hold different data there: reads
// rotate over the legs and return different bytes for one block.
// The bitmap may not be cleared on the legs left while a leg's failure is
// not yet recorded: the clear must wait for the record.
TEST(EpochAdversary, AFlushMayNotClearTheBitmapBeforeTheFailedLegIsRecorded) {
  auto m0 = Mem1M(), m1 = Mem1M();
  auto gate = std::make_shared<GateDevice>(m0, 0, 8192);  // leg 0's member record slots
  auto f1 = std::make_shared<FaultDevice>(m1);
  const Bytes old = Pattern(512 << 10, 1), w = Pattern(4096, 2), w2 = Pattern(4096, 3);
  const uint64_t far = 256 << 10;  // another bitmap region (64 KiB regions on 1 MiB legs)
  uint64_t doff = 0;
  Bytes i0, i1;
  {
    auto m = MirrorDevice::Create({gate, f1});
    ASSERT_TRUE(m) << m.error().message();
    doff = (*m)->data_offset();
    ASSERT_TRUE(WriteSync(**m, 0, old.data(), old.size()).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
    ASSERT_EQ((*m)->DirtyRegions(), 0u);
    gate->Arm();
    f1->AddRule({.op = BioOp::kWrite, .offset = doff, .len = 4096, .count = 1});
    std::thread t1([&] { (void)WriteSync(**m, 0, w.data(), w.size()); });
    ASSERT_TRUE(WaitFor([&] { return gate->held() >= 1; })) << "the failure bump was never written";
    std::thread t2([&] { (void)WriteSync(**m, far, w2.data(), w2.size()); });
    ASSERT_TRUE(WaitFor([&] {
      Bytes got(4096);
      m0->ReadRaw(doff + far, got.data(), got.size());
      return got == w2;
    }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the write ends (its regions are released)
    std::thread t3([&] { (void)FlushSync(**m); });
    WaitFor([&] { return (*m)->DirtyRegions() == 0; }, 500);  // the clear may (wrongly) land
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    i0 = Image(*m0);  // the crash: the failure record never landed
    i1 = Image(*m1);
    gate->Release();
    t1.join();
    t2.join();
    t3.join();
  }
  auto c0 = FromImage(i0), c1 = FromImage(i1);
  auto m = MirrorDevice::Create({c0, c1});
  ASSERT_TRUE(m) << m.error().message();
  Bytes a(4096), b(4096);
  ASSERT_TRUE(ReadSync(**m, far, a.data(), 4096).ok());
  ASSERT_TRUE(ReadSync(**m, far, b.data(), 4096).ok());
  EXPECT_EQ(a, b) << "two reads of one block returned different bytes: the legs disagree and no bitmap said so";
  EXPECT_TRUE(a == w2 || a == Bytes(old.begin() + far, old.begin() + far + 4096));
  ScrubReport r;
  ASSERT_TRUE((*m)->Scrub(r).ok());
  EXPECT_TRUE(r.clean()) << "the legs diverge after assembly";
}


// Parity: leg 2 fails a write (recorded faulty), then a degraded write
// lands on the others and the process dies before a flush (dirty region,
// stale leg). A normal assembly refuses (dirty degraded); inspect mode
// opens, and a read of a chunk that lived on leg 2 in the dirty stripe
// must fail, never return a reconstruction from parity that may be stale.
// Also: a block a crash tore (new data on leg 0, parity not yet written)
// is the case this guards; here the degraded write completes, so any
// answer must be the written bytes or an error.
TEST(EpochAdversary, InspectingADirtyParitySetWithAFaultyLegNeverReconstructsFromDirtyParity) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  auto f2 = std::make_shared<FaultDevice>(m2);
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, m1, f2};
  const Bytes a = Pattern(64 << 10, 11), b = Pattern(8192, 12);
  uint64_t doff = 0;
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    doff = (*p)->data_offset();
    ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
    f2->AddRule({.op = BioOp::kWrite, .offset = doff});
    EXPECT_FALSE(WriteSync(**p, 0, b.data(), b.size()).ok());
    ASSERT_TRUE(WriteSync(**p, 0, b.data(), b.size()).ok());  // degraded, acknowledged; no flush: a crash
  }
  f2->ClearRules();
  auto normal = ParityDevice::Create(legs);
  EXPECT_FALSE(normal) << "a dirty parity set with a faulty leg was assembled";
  auto p = ParityDevice::Create(legs, {.inspect = true});
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ((*p)->Describe().legs[2].faulty, true);
  Bytes want = a;
  std::copy(b.begin(), b.end(), want.begin());
  for (uint64_t blk = 0; blk < 16; blk++) {
    Bytes got(4096);
    Status st = ReadSync(**p, blk * 4096, got.data(), 4096);
    if (st.ok()) {
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + blk * 4096)) << "block " << blk << " wrong bytes";
    }
  }
}

// A mirror leg whose flush fails (its volatile cache may have lost the
// writes it acknowledged) must not stay current: md fails a member on a
// failed flush, and WriteIntent already drops a leg that fails a *bitmap*
// flush. DISABLED: FanoutDevice::FlushAll only reports a leg's data-flush
// error; the leg is not marked behind (state stays "current"), so it is
// still read and, after a retried flush succeeds, its possibly lost writes
// are served as good. Not fixed here: commit 4f670da chose "flush failures
// are reported, not absorbed" and the fail-nth invariants depend on it;
// the lead should decide. Showing the actual loss needs a leg with a
// volatile cache (MemoryDevice writes are durable at once).
TEST(EpochAdversary, DISABLED_AMirrorLegThatFailsAFlushIsNotReadAsCurrent) {
  auto m0 = Mem1M(), m1 = Mem1M();
  auto f1 = std::make_shared<FaultDevice>(m1);
  auto m = MirrorDevice::Create({m0, f1});
  ASSERT_TRUE(m) << m.error().message();
  const Bytes w = Pattern(4096, 5);
  ASSERT_TRUE(WriteSync(**m, 0, w.data(), w.size()).ok());
  f1->AddRule({.op = BioOp::kFlush, .count = 1});
  EXPECT_FALSE(FlushSync(**m).ok());
  const SetDescription d = (*m)->Describe();
  EXPECT_EQ(d.legs[1].state.rfind("behind", 0), 0u) << "leg 1 failed a flush and is still " << d.legs[1].state;
}


// A 3-leg mirror: leg 2 fails a write, later leg 1 fails another; leg 0
// takes everything. Reopened with the legs listed in another order, both
// failed legs are stale (rebuilt from leg 0), and every read returns the
// acknowledged data.
TEST(EpochAdversary, AMirrorWhoseTwoLegsFailedAtDifferentTimesReopensFromTheSurvivorInAnyOrder) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  auto f1 = std::make_shared<FaultDevice>(m1), f2 = std::make_shared<FaultDevice>(m2);
  const Bytes a = Pattern(128 << 10, 41), b = Pattern(4096, 42), c = Pattern(4096, 43);
  Bytes want = a;
  {
    auto m = MirrorDevice::Create({m0, f1, f2});
    ASSERT_TRUE(m) << m.error().message();
    const uint64_t doff = (*m)->data_offset();
    ASSERT_TRUE(WriteSync(**m, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
    f2->AddRule({.op = BioOp::kWrite, .offset = doff});
    EXPECT_FALSE(WriteSync(**m, 0, b.data(), 4096).ok());
    ASSERT_TRUE(WriteSync(**m, 0, b.data(), 4096).ok());
    f1->AddRule({.op = BioOp::kWrite, .offset = doff});
    EXPECT_FALSE(WriteSync(**m, 65536, c.data(), 4096).ok());
    ASSERT_TRUE(WriteSync(**m, 65536, c.data(), 4096).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
  }
  std::copy(b.begin(), b.end(), want.begin());
  std::copy(c.begin(), c.end(), want.begin() + 65536);
  f1->ClearRules();
  f2->ClearRules();
  auto m = MirrorDevice::Create({f2, m0, f1});
  ASSERT_TRUE(m) << m.error().message();
  const SetDescription d = (*m)->Describe();
  EXPECT_TRUE(d.legs[1].resynced && d.legs[2].resynced && !d.legs[0].resynced);
  for (int i = 0; i < 3; i++) {
    Bytes got(a.size());
    ASSERT_TRUE(ReadSync(**m, 0, got.data(), got.size()).ok());
    EXPECT_EQ(got, want) << "read " << i;
  }
}


// A v1 set (no base events) upgraded at assembly; the process dies after
// leg 0 took the phase-1 v2 record and before leg 1 did (its record write
// fails). The v1 legs hold events = the new base: current, the set opens
// with every leg current and the data intact.
TEST(EpochAdversary, AV1UpgradeCrashingInPhaseOneStillOpensWithEveryLegCurrent) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  auto f1 = std::make_shared<FaultDevice>(m1);
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, f1, m2};
  const Bytes a = Pattern(64 << 10, 51);
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  for (auto& m : {m0, m1, m2})
    for (uint64_t slot = 0; slot < 2; slot++) {
      Bytes blk(4096);
      m->ReadRaw(slot * 4096, blk.data(), 4096);
      auto d = DecodeRecord(blk, "SCPARITY");
      if (d.state != RecordState::kValid) continue;
      d.record.version = 1;
      d.record.payload.resize(64);
      Bytes enc = EncodeRecord(d.record);
      m->WriteRaw(slot * 4096, enc.data(), enc.size());
    }
  f1->AddRule({.op = BioOp::kWrite, .offset = 0, .len = 8192, .count = 1});
  EXPECT_FALSE(ParityDevice::Create(legs));
  f1->ClearRules();
  auto p = ParityDevice::Create(legs);
  ASSERT_TRUE(p) << "a crash mid-upgrade made the set unopenable: " << p.error().message();
  const SetDescription d = (*p)->Describe();
  EXPECT_FALSE(d.legs[0].resynced || d.legs[1].resynced || d.legs[2].resynced);
  Bytes got(a.size());
  ASSERT_TRUE(ReadSync(**p, 0, got.data(), got.size()).ok());
  EXPECT_EQ(got, a);
}

}  // namespace
}  // namespace stablecache
