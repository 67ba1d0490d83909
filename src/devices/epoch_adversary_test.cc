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

}  // namespace
}  // namespace stablecache
