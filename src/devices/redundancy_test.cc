// Mirror and parity layers: layout, repair from redundancy, degraded reads,
// scrub findings by block number, and the range lock that orders them.
#include <isa-l/raid.h>

#include <chrono>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "block/range_lock.h"
#include "devices/fault_device.h"
#include "devices/integrity_device.h"
#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;
using Bytes = std::vector<std::byte>;

std::vector<std::shared_ptr<MemoryDevice>> Mems(size_t n, uint64_t size = 1 << 20) {
  std::vector<std::shared_ptr<MemoryDevice>> v;
  for (size_t i = 0; i < n; i++) v.push_back(*MemoryDevice::Create({.size_bytes = size}));
  return v;
}

template <typename T>
std::vector<std::shared_ptr<BlockDevice>> AsLegs(const std::vector<std::shared_ptr<T>>& v) {
  return {v.begin(), v.end()};
}

Bytes ReadAll(BlockDevice& dev, uint64_t off, uint32_t len, Status* st = nullptr) {
  Bytes b(len);
  Status s = ReadSync(dev, off, b.data(), len);
  if (st) *st = s;
  else EXPECT_TRUE(s.ok()) << s.ToString();
  return b;
}

LayerStats Top(const BlockDevice& dev) {
  std::vector<LayerStats> v;
  dev.CollectStats(v);
  return v.at(0);
}

ScrubReport ScrubOf(BlockDevice& dev) {
  ScrubReport r;
  EXPECT_TRUE(dev.Scrub(r).ok());
  return r;
}

// ---- RangeLock --------------------------------------------------------------

TEST(RangeLock, OverlappingRangesWaitAndAreGrantedInArrivalOrder) {
  RangeLock lock;
  std::vector<int> order;
  RangeLock::Ticket a = 0, b = 0, c = 0;
  lock.Acquire(0, 10, [&](RangeLock::Ticket t) { a = t, order.push_back(1); });
  lock.Acquire(5, 15, [&](RangeLock::Ticket t) { b = t, order.push_back(2); });   // overlaps a: waits
  lock.Acquire(20, 30, [&](RangeLock::Ticket t) { order.push_back(3), lock.Release(t); });  // free: runs now
  lock.Acquire(12, 14, [&](RangeLock::Ticket t) { c = t, order.push_back(4); });  // overlaps waiting b: waits
  EXPECT_EQ(order, (std::vector<int>{1, 3}));
  lock.Release(a);
  EXPECT_EQ(order, (std::vector<int>{1, 3, 2}));
  lock.Release(b);
  EXPECT_EQ(order, (std::vector<int>{1, 3, 2, 4}));
  lock.Release(c);
  EXPECT_EQ(lock.HeldCount(), 0u);
}

// ---- mirror -----------------------------------------------------------------

TEST(Mirror, WritesReachEveryLeg) {
  auto mems = Mems(3);
  auto m = *MirrorDevice::Create(AsLegs(mems));
  auto data = Pattern(12288, 1);
  ASSERT_TRUE(WriteSync(*m, 8192, data.data(), data.size()).ok());
  for (auto& mem : mems) {
    Bytes raw(data.size());
    mem->ReadRaw(m->data_offset() + 8192, raw.data(), raw.size());
    EXPECT_EQ(raw, data);
  }
  for (int i = 0; i < 3; i++) EXPECT_EQ(ReadAll(*m, 8192, 12288), data);  // every leg in turn
  EXPECT_TRUE(ScrubOf(*m).clean());
}

TEST(Mirror, ScrubNamesTheDivergedBlocks) {
  auto mems = Mems(2);
  auto m = *MirrorDevice::Create(AsLegs(mems));
  auto data = Pattern(64 << 10, 2);
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), data.size()).ok());
  std::byte evil{0x5a};
  mems[1]->WriteRaw(m->data_offset() + 3 * 4096 + 100, &evil, 1);
  mems[0]->WriteRaw(m->data_offset() + 9 * 4096, &evil, 1);
  ScrubReport r = ScrubOf(*m);
  EXPECT_EQ(r.mirror_divergence, 2u);
  ASSERT_EQ(r.findings.size(), 2u);
  EXPECT_EQ(r.findings[0].block, 3u);
  EXPECT_EQ(r.findings[1].block, 9u);
  EXPECT_EQ(r.findings[0].kind, ScrubFinding::Kind::kMirrorDivergence);
  EXPECT_EQ(r.blocks_checked, m->Info().size_bytes / 4096);
  EXPECT_EQ(Top(*m).mirror_divergence, 2u);
}

TEST(Mirror, AReadRepairsALegThatIntegrityCaughtCorrupt) {
  auto mems = Mems(2);
  auto i0 = *IntegrityDevice::Create(mems[0], {});
  auto i1 = *IntegrityDevice::Create(mems[1], {});
  auto m = *MirrorDevice::Create({i0, i1});
  auto data = Pattern(8192, 3);
  ASSERT_TRUE(WriteSync(*m, 4096, data.data(), data.size()).ok());
  std::byte evil{0x00};
  const uint64_t d = m->data_offset();
  mems[1]->WriteRaw(i1->LowerOffset((d + 4096) / 4096) + 7, &evil, 1);  // rot on leg 1, behind its integrity layer
  Status leg_st;
  ReadAll(*i1, d + 4096, 4096, &leg_st);
  ASSERT_EQ(leg_st.code(), Code::kIntegrityError);
  for (int i = 0; i < 2; i++) EXPECT_EQ(ReadAll(*m, 4096, 8192), data);  // one of these hits leg 1
  LayerStats s = Top(*m);
  EXPECT_EQ(s.degraded_reads, 1u);
  EXPECT_EQ(s.repairs, 1u);  // only the bad block was rewritten on leg 1
  // The repair landed (it completes under the range lock; a write waits for it).
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), 4096).ok());
  EXPECT_EQ(ReadAll(*i1, d + 4096, 8192), data);
  EXPECT_TRUE(ScrubOf(*m).clean());
}

TEST(Mirror, EveryLegBadIsAnIntegrityErrorNotData) {
  auto mems = Mems(2);
  auto i0 = *IntegrityDevice::Create(mems[0], {});
  auto m = *MirrorDevice::Create({i0, *IntegrityDevice::Create(mems[1], {})});
  auto data = Pattern(4096, 4);
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), 4096).ok());
  std::byte evil{0x01};
  for (auto& mem : mems) mem->WriteRaw(i0->LowerOffset(m->data_offset() / 4096) + 10, &evil, 1);  // same geometry
  Status st;
  ReadAll(*m, 0, 4096, &st);
  EXPECT_EQ(st.code(), Code::kIntegrityError);
  EXPECT_NE(st.message().find("no leg could read"), std::string::npos) << st.message();
  ScrubReport r = ScrubOf(*m);
  EXPECT_EQ(r.unreadable, 1u);  // block 0: no leg holds it
  EXPECT_EQ(r.degraded, 0u);
}

TEST(Mirror, AWriteFailingOnOneLegFailsAndNamesTheLeg) {
  auto mems = Mems(2);
  auto faulty = std::make_shared<FaultDevice>(mems[1]);
  auto m = *MirrorDevice::Create({mems[0], faulty});
  faulty->AddRule({.op = BioOp::kWrite, .offset = m->data_offset(), .error = EIO, .count = 1});
  auto data = Pattern(4096, 5);
  Status st = WriteSync(*m, 0, data.data(), 4096);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_NE(st.message().find("mirror leg 1"), std::string::npos) << st.message();
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), 4096).ok());  // the retry lands on leg 0; leg 1 is missing
  ScrubReport r = ScrubOf(*m);
  EXPECT_EQ(r.mirror_divergence, 0u);
  EXPECT_GT(r.degraded, 0u) << "the scrub does not say the set is degraded";
  m.reset();
  auto again = *MirrorDevice::Create({mems[0], mems[1]});  // leg 1 is rebuilt
  EXPECT_TRUE(again->Describe().legs[1].resynced);
  EXPECT_EQ(ReadAll(*again, 0, 4096), data);
  EXPECT_TRUE(ScrubOf(*again).clean());
}

// ---- parity -----------------------------------------------------------------

TEST(Parity, LayoutRotatesParityAndKeepsXorZero) {
  auto mems = Mems(4, 64 << 10);
  auto p = *ParityDevice::Create(AsLegs(mems));
  const uint64_t d = p->data_offset();
  EXPECT_EQ(p->Info().size_bytes, 3u * ((64 << 10) - d));
  EXPECT_EQ(p->ParityPlace(0).leg, 3u);
  EXPECT_EQ(p->ParityPlace(1).leg, 2u);
  EXPECT_EQ(p->DataPlace(0).leg, 0u);  // left-symmetric: data starts after parity
  EXPECT_EQ(p->DataPlace(3).leg, 3u);  // stripe 1, first data chunk
  auto data = Pattern(p->Info().size_bytes, 6);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  for (uint64_t s = 0; s < 13; s++) {
    std::vector<Bytes> chunks(4, Bytes(4096));
    std::vector<void*> vec;
    for (size_t l = 0; l < 4; l++) {
      mems[l]->ReadRaw(d + s * 4096, chunks[l].data(), 4096);
      vec.push_back(chunks[l].data());
    }
    EXPECT_EQ(xor_check(4, 4096, vec.data()), 0) << "stripe " << s;
    Bytes want(data.begin() + (s * 3 + 1) * 4096, data.begin() + (s * 3 + 2) * 4096);
    EXPECT_EQ(chunks[p->DataPlace(s * 3 + 1).leg], want) << "stripe " << s;
  }
  EXPECT_EQ(ReadAll(*p, 0, data.size()), data);
}

TEST(Parity, PartialStripeWritesMatchAModel) {
  auto p = *ParityDevice::Create(AsLegs(Mems(3, 256 << 10)));
  Bytes model(p->Info().size_bytes);
  std::mt19937 rng(7);
  for (int i = 0; i < 300; i++) {
    uint64_t blocks = model.size() / 4096;
    uint64_t b = rng() % blocks, n = 1 + rng() % std::min<uint64_t>(9, blocks - b);
    auto data = Pattern(n * 4096, i);
    ASSERT_TRUE(WriteSync(*p, b * 4096, data.data(), data.size()).ok());
    std::copy(data.begin(), data.end(), model.begin() + b * 4096);
  }
  EXPECT_EQ(ReadAll(*p, 0, model.size()), model);
  EXPECT_TRUE(ScrubOf(*p).clean());
}

TEST(Parity, ConcurrentWritersToSharedStripesLeaveParityConsistent) {
  auto p = *ParityDevice::Create(AsLegs(Mems(3, 64 << 10)));
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 2000; i++) {
        auto data = Pattern(4096, rng());
        EXPECT_TRUE(WriteSync(*p, (rng() % 8) * 4096, data.data(), 4096).ok());  // 4 stripes, hammered
      }
    });
  for (auto& t : ts) t.join();
  ScrubReport r = ScrubOf(*p);
  EXPECT_EQ(r.parity_mismatch, 0u);
}

TEST(Parity, ADegradedReadRebuildsFromTheOtherLegsAndRepairs) {
  auto mems = Mems(3);
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (auto& m : mems) legs.push_back(*IntegrityDevice::Create(m, {.guard = GuardType::kCrc32c}));
  auto p = *ParityDevice::Create(legs);
  auto data = Pattern(32 << 10, 8);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  auto where = p->DataPlace(5);
  std::byte evil{0x42};
  mems[where.leg]->WriteRaw(static_cast<IntegrityDevice&>(*legs[where.leg]).LowerOffset(where.offset / 4096) + 99,
                           &evil, 1);
  EXPECT_EQ(ReadAll(*p, 0, data.size()), data);
  LayerStats s = Top(*p);
  EXPECT_EQ(s.degraded_reads, 1u);
  EXPECT_GE(s.repairs, 1u);  // every block of the failed leg bio is rebuilt and rewritten
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), 4096).ok());  // orders after the repair (stripe 0 lock)
  Status st;
  ReadAll(*legs[where.leg], where.offset, 4096, &st);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(ScrubOf(*p).clean());
}

TEST(Parity, APartialWriteRebuildsAChunkItCannotRead) {
  auto mems = Mems(3);
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (auto& m : mems) legs.push_back(*IntegrityDevice::Create(m, {}));
  auto p = *ParityDevice::Create(legs);
  auto data = Pattern(8192, 12);  // stripe 0: blocks 0 and 1
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  auto rotten = p->DataPlace(1);
  std::byte evil{0x66};
  mems[rotten.leg]->WriteRaw(static_cast<IntegrityDevice&>(*legs[rotten.leg]).LowerOffset(rotten.offset / 4096) + 5,
                             &evil, 1);
  // Rewriting block 0 needs block 1 to compute parity: rebuilt, written back.
  auto fresh = Pattern(4096, 13);
  ASSERT_TRUE(WriteSync(*p, 0, fresh.data(), 4096).ok());
  LayerStats s = Top(*p);
  EXPECT_EQ(s.degraded_reads, 1u);
  EXPECT_EQ(s.repairs, 1u);
  Bytes back = ReadAll(*legs[rotten.leg], rotten.offset, 4096);  // readable again
  EXPECT_EQ(back, Bytes(data.begin() + 4096, data.end()));
  EXPECT_EQ(ReadAll(*p, 0, 4096), fresh);
  EXPECT_TRUE(ScrubOf(*p).clean());
}

TEST(Parity, ALegThatCannotReadIsRebuiltOnEveryRead) {
  auto mems = Mems(3);
  auto dead = std::make_shared<FaultDevice>(mems[1]);
  auto p = *ParityDevice::Create({mems[0], dead, mems[2]});
  auto data = Pattern(64 << 10, 9);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  dead->AddRule({.op = BioOp::kRead, .error = EIO, .count = -1});
  EXPECT_EQ(ReadAll(*p, 0, data.size()), data);
  EXPECT_EQ(ReadAll(*p, 4096, 8192), Bytes(data.begin() + 4096, data.begin() + 12288));
  EXPECT_EQ(Top(*p).degraded_reads, 2u);
}

TEST(Parity, TwoFailuresInAStripeFailTheRead) {
  auto mems = Mems(3);
  auto p = *ParityDevice::Create({mems[0], std::make_shared<FaultDevice>(mems[1]), mems[2]});
  auto data = Pattern(8192, 10);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  auto f0 = std::make_shared<FaultDevice>(mems[0]);
  auto f1 = std::make_shared<FaultDevice>(mems[1]);
  auto broken = *ParityDevice::Create({f0, f1, mems[2]});
  f0->AddRule({.op = BioOp::kRead});
  f1->AddRule({.op = BioOp::kRead});
  Status st;
  ReadAll(*broken, 0, 4096, &st);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_NE(st.message().find("cannot be rebuilt"), std::string::npos) << st.message();
}

TEST(Parity, ScrubNamesTheMismatchedStripes) {
  auto mems = Mems(3, 64 << 10);
  auto p = *ParityDevice::Create(AsLegs(mems));
  auto data = Pattern(p->Info().size_bytes, 11);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  std::byte evil{0x99};
  auto par = p->ParityPlace(6);
  mems[par.leg]->WriteRaw(par.offset + 1, &evil, 1);
  ScrubReport r = ScrubOf(*p);
  EXPECT_EQ(r.parity_mismatch, 1u);
  ASSERT_EQ(r.findings.size(), 1u);
  EXPECT_EQ(r.findings[0].block, 6u);
  EXPECT_EQ(r.findings[0].kind, ScrubFinding::Kind::kParityMismatch);
  EXPECT_EQ(Top(*p).parity_mismatch, 1u);
}

// ---- repair racing writes ----------------------------------------------------

// Writers, readers and a thread rotting one leg run together. Reads must
// never return anything but the newest content, and an asynchronous repair
// must never land over a newer write (the range and stripe locks order
// them). Per-block test locks keep a read and a write of one block apart,
// as the integrity layer requires.
void RepairRace(std::shared_ptr<FanoutDevice> top, std::shared_ptr<MemoryDevice> rotting_leg, uint64_t leg_blocks) {
  const uint64_t blocks = 32;
  std::vector<std::mutex> locks(blocks);
  std::vector<uint32_t> latest(blocks, 0);
  for (uint64_t b = 0; b < blocks; b++) {
    auto d = Pattern(4096, 1000 + b);
    ASSERT_TRUE(WriteSync(*top, b * 4096, d.data(), 4096).ok());
    latest[b] = 1000 + b;
  }
  std::atomic<bool> stop{false};
  std::atomic<int> bad_reads{0};
  std::thread rot([&] {
    std::mt19937 rng(1);
    while (!stop) {
      std::byte evil{static_cast<unsigned char>(rng())};
      rotting_leg->WriteRaw(top->data_offset() + (rng() % leg_blocks) * 4096 + rng() % 4096, &evil, 1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      Bytes buf(4096);
      for (int i = 0; i < 1500; i++) {
        uint64_t b = rng() % blocks;
        std::lock_guard lk(locks[b]);
        if (rng() % 2) {
          uint32_t seed = static_cast<uint32_t>(rng());
          auto d = Pattern(4096, seed);
          ASSERT_TRUE(WriteSync(*top, b * 4096, d.data(), 4096).ok());
          latest[b] = seed;
        } else {
          Status st = ReadSync(*top, b * 4096, buf.data(), 4096);
          if (!st.ok() || buf != Pattern(4096, latest[b])) bad_reads++;
        }
      }
    });
  for (auto& t : ts) t.join();
  stop = true;
  rot.join();
  EXPECT_EQ(bad_reads.load(), 0);
  // Rewrite every block once: the newest content everywhere, then check it.
  for (uint64_t b = 0; b < blocks; b++) {
    auto d = Pattern(4096, 7000 + b);
    ASSERT_TRUE(WriteSync(*top, b * 4096, d.data(), 4096).ok());
  }
  Bytes buf(4096);
  for (int pass = 0; pass < 3; pass++)
    for (uint64_t b = 0; b < blocks; b++) {
      ASSERT_TRUE(ReadSync(*top, b * 4096, buf.data(), 4096).ok());
      EXPECT_EQ(buf, Pattern(4096, 7000 + b)) << "block " << b;
    }
}

TEST(Mirror, RepairsNeverLandOverNewerWrites) {
  auto mems = Mems(2, 256 << 10);
  auto m = *MirrorDevice::Create({*IntegrityDevice::Create(mems[0], {}), *IntegrityDevice::Create(mems[1], {})});
  RepairRace(m, mems[1], 32);
  EXPECT_GT(Top(*m).repairs, 0u);
}

TEST(Parity, RebuildsNeverLandOverNewerWrites) {
  auto mems = Mems(3, 256 << 10);
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (auto& mem : mems) legs.push_back(*IntegrityDevice::Create(mem, {.guard = GuardType::kCrc32c}));
  auto p = *ParityDevice::Create(legs);
  RepairRace(p, mems[2], 16);
  EXPECT_GT(Top(*p).degraded_reads, 0u);
}

// ---- specs ------------------------------------------------------------------

TEST(RedundancySpecs, BuildAndReportErrors) {
  auto ok = BuildStack("verify,integrity,mirror(memory:1M,[integrity,memory:1M])");
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ((*ok)->StackRequiredStability(), Stability::kDeclaredStable);
  ASSERT_TRUE(BuildStack("parity(memory:1M,memory:1M,memory:1M,require=stable)"));
  struct Case {
    const char* spec;
    const char* says;
  } cases[] = {
      {"mirror(memory:1M)", "at least 2 legs"},
      {"parity(memory:1M,memory:1M)", "at least 3 legs"},
      {"mirror", "needs its legs"},
      {"mirror(memory:1M,memory:1M),memory:1M", "leaf or fan-out device must be the last layer"},
      {"mirror(memory:1M,memory:1M,copies=3)", "unknown option 'copies'"},
      {"mirror(memory:1M,[integrity])", "needs a device below it"},
  };
  for (const auto& c : cases) {
    auto r = BuildStack(c.spec);
    ASSERT_FALSE(r) << c.spec;
    EXPECT_NE(r.error().message().find(c.says), std::string::npos) << c.spec << ": " << r.error().message();
  }
}

}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {

// Scrub with repair (md's "repair"): a stripe whose parity was overwritten
// gets parity recomputed from its data; a chunk one leg lost is rebuilt
// from the rest of its stripe. Afterwards the set scrubs clean.
TEST(ParityScrub, RepairRecomputesParityAndRebuildsALostChunk) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (int i = 0; i < 3; i++) {
    mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
    legs.push_back(*IntegrityDevice::Create(mems.back(), {.guard = GuardType::kCrc32c}));
  }
  auto p = *ParityDevice::Create(legs);
  std::vector<std::byte> data(16 * 4096);
  for (size_t i = 0; i < data.size(); i++) data[i] = std::byte(i * 7 + 1);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), static_cast<uint32_t>(data.size())).ok());
  ASSERT_TRUE(FlushSync(*p).ok());
  // Stripe 1: its parity chunk rewritten (through the leg: valid tags, wrong parity).
  auto par = p->ParityPlace(1);
  std::vector<std::byte> junk(4096, std::byte{0x3c});
  ASSERT_TRUE(WriteSync(*legs[par.leg], par.offset, junk.data(), 4096).ok());
  // Stripe 3: one data chunk rotten on the medium (its leg's integrity catches it).
  auto lost = p->DataPlace(3 * 2 + 1);
  auto& li = static_cast<IntegrityDevice&>(*legs[lost.leg]);
  mems[lost.leg]->WriteRaw(li.LowerOffset(lost.offset / 4096) + 9, junk.data(), 1);
  ScrubReport before;
  ASSERT_TRUE(p->Scrub(before).ok());
  EXPECT_EQ(before.parity_mismatch, 1u);
  EXPECT_EQ(before.degraded, 1u);
  ScrubReport fix;
  fix.repair = true;
  ASSERT_TRUE(p->Scrub(fix).ok());
  EXPECT_EQ(fix.repaired, 2u);
  ScrubReport after;
  ASSERT_TRUE(p->Scrub(after).ok());
  EXPECT_TRUE(after.clean()) << after.findings.size();
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(ReadSync(*legs[lost.leg], lost.offset, back.data(), 4096).ok());  // the leg's copy itself is good again
  ASSERT_TRUE(ReadSync(*p, 0, back.data(), static_cast<uint32_t>(back.size())).ok());
  EXPECT_EQ(back, data);
}

}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {

// ---- degraded mode: a leg that died at run time ---------------------------------

// A 4-leg parity set under random partial-stripe writes and reads, checked
// against a model. Leg 2 dies (every I/O fails); the first write that
// touches it fails (the page cache retries it), and from then on the set
// serves every read and write from the other legs, rebuilding leg 2's
// chunks, and flushes cleanly. After a clean stop a blank replacement for
// leg 2 is rebuilt and the set holds the model's data. Then two legs die:
// writes fail naming both legs.
TEST(ParityDegraded, ASetKeepsServingReadsAndWritesAfterOneLegDies) {
  auto mems = Mems(4);
  std::vector<std::shared_ptr<FaultDevice>> faults;
  for (auto& m : mems) faults.push_back(std::make_shared<FaultDevice>(m));
  auto p = *ParityDevice::Create(AsLegs(faults));
  const uint64_t blocks = 96;
  Bytes model(blocks * 4096);
  std::mt19937 rng(7);
  auto write = [&](uint64_t b, uint64_t count, uint32_t seed) {
    Bytes data = Pattern(count * 4096, seed);
    Status st = WriteSync(*p, b * 4096, data.data(), data.size());
    if (st.ok()) std::copy(data.begin(), data.end(), model.begin() + b * 4096);
    return st;
  };
  auto random_ops = [&](int n, uint32_t seed0) {
    for (int i = 0; i < n; i++) {
      const uint64_t b = rng() % blocks, count = 1 + rng() % std::min<uint64_t>(7, blocks - b);
      if (rng() % 3) {
        Status st = write(b, count, seed0 + i);
        ASSERT_TRUE(st.ok()) << "write " << i << ": " << st.ToString();
      } else {
        ASSERT_EQ(ReadAll(*p, b * 4096, count * 4096), Bytes(model.begin() + b * 4096, model.begin() + (b + count) * 4096))
            << "read " << i;
      }
    }
  };
  ASSERT_TRUE(write(0, blocks, 1).ok());
  random_ops(100, 1000);
  faults[2]->AddRule({.offset = p->data_offset()});  // leg 2's data area dies: every read and write there fails
  Status st = write(0, 3, 50);  // stripe 0 has a chunk on every leg
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(p->Describe().legs[2].state.rfind("behind", 0) == 0) << p->Describe().legs[2].state;
  ASSERT_TRUE(write(0, 3, 50).ok()) << "the retried write failed although only the missing leg is dead";
  random_ops(300, 2000);
  if (HasFailure()) return;
  const uint64_t seen = faults[2]->seen();
  ASSERT_EQ(ReadAll(*p, 0, blocks * 4096), model);
  ASSERT_TRUE(FlushSync(*p).ok());
  EXPECT_EQ(faults[2]->seen(), seen) << "the missing leg was read, written or flushed";
  EXPECT_EQ(p->DirtyRegions(), 0u) << "a clean stop leaves no dirty region";
  EXPECT_EQ(p->StaleStripes(), 0u);
  p.reset();
  // Leg 2 replaced by a blank disk: rebuilt, the model's data intact.
  faults[2] = std::make_shared<FaultDevice>(*MemoryDevice::Create({.size_bytes = 1 << 20}));
  auto again = ParityDevice::Create(AsLegs(faults));
  ASSERT_TRUE(again) << again.error().message();
  p = *again;
  EXPECT_TRUE(p->Describe().legs[2].resynced);
  EXPECT_EQ(ReadAll(*p, 0, blocks * 4096), model);
  EXPECT_TRUE(ScrubOf(*p).clean());
  // Two legs die: writes fail naming both legs; reads of chunks on the
  // living legs still work, the others fail naming their stripe.
  faults[0]->AddRule({.op = BioOp::kWrite, .offset = p->data_offset()});
  faults[2]->AddRule({.op = BioOp::kWrite, .offset = p->data_offset()});
  EXPECT_FALSE(write(0, 3, 60).ok());
  st = write(0, 3, 61);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("legs 0 and 2 are behind"), std::string::npos) << st.message();
  for (uint64_t b = 3; b < 12; b++) {  // stripes the failed writes did not touch
    Status rst;
    Bytes got = ReadAll(*p, b * 4096, 4096, &rst);
    if (rst.ok()) EXPECT_EQ(got, Bytes(model.begin() + b * 4096, model.begin() + (b + 1) * 4096)) << "block " << b;
    else EXPECT_NE(rst.message().find("stripe"), std::string::npos) << rst.message();
  }
}

// A mirror leg that failed a write is missing: it is never read again (not
// even for blocks it holds), never written, and later writes succeed on
// the others. Its raw bytes are scribbled on to prove no read uses them.
TEST(MirrorDegraded, ALegThatFailedAWriteIsNeverReadOrWrittenAgain) {
  auto mems = Mems(3);
  auto f1 = std::make_shared<FaultDevice>(mems[1]);
  auto m = *MirrorDevice::Create({mems[0], f1, mems[2]});
  const Bytes a = Pattern(64 << 10, 31), b = Pattern(4096, 32), c = Pattern(4096, 33);
  ASSERT_TRUE(WriteSync(*m, 0, a.data(), a.size()).ok());
  f1->AddRule({.op = BioOp::kWrite, .offset = m->data_offset(), .len = 4096, .count = 1});
  EXPECT_FALSE(WriteSync(*m, 0, b.data(), 4096).ok());
  const Bytes junk = Pattern(64 << 10, 34);
  mems[1]->WriteRaw(m->data_offset(), junk.data(), junk.size());
  const uint64_t seen = f1->seen();
  ASSERT_TRUE(WriteSync(*m, 8192, c.data(), 4096).ok()) << "a write failed although only the missing leg is behind";
  Bytes want = a;
  std::copy(c.begin(), c.end(), want.begin() + 8192);
  for (int i = 0; i < 6; i++) {  // reads rotate over the legs
    Bytes got = ReadAll(*m, 4096, want.size() - 4096);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + 4096)) << "read " << i << " used the missing leg";
  }
  ASSERT_TRUE(FlushSync(*m).ok());
  EXPECT_EQ(f1->seen(), seen) << "the missing leg was read, written or flushed";
  MediumReport rep;
  m->DescribeMedium(rep);
  bool faulty_listed = false;
  for (auto& [k, v] : rep.at(0).fields)
    if (k == "faulty roles") faulty_listed = v == "1";
  EXPECT_TRUE(faulty_listed) << "info does not list role 1 as faulty";
}

}  // namespace
}  // namespace stablecache
