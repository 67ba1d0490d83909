// Fail-the-Nth loops over the main operations (issue 8, item 3), and the
// negative control that shows the checker catches a layer that swallows an
// error (item 7, fault half). The machinery is in fail_nth.h.
//
// Each test prints one line "[fail-nth] <scenario> <kind>: <runs> runs,
// <k> injected, ..."; the README's count is the sum of `injected` over:
//   ctest --preset default -R 'FailNth' -V | grep '\[fail-nth\]'
// STABLECACHE_FAIL_NTH_FULL=1 also fails every bio from the Nth on (a
// device that dies) and runs the frame loops under every policy.
#include <cstdlib>

#include <gtest/gtest.h>

#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "fail_nth.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::FailEachBio;
using testing::FailEachFrame;
using testing::LoopReport;
using testing::Model;
using testing::OpOutcome;
using testing::Pattern;
using testing::Rig;
using testing::Scenario;
using testing::Verdict;
using Bytes = std::vector<std::byte>;

constexpr uint64_t kPage = 4096;

bool Full() { return std::getenv("STABLECACHE_FAIL_NTH_FULL") != nullptr; }

// ---- stacks -------------------------------------------------------------

std::shared_ptr<MemoryDevice> Memory(uint64_t size = 1 << 20) { return *MemoryDevice::Create({.size_bytes = size}); }

// fault -> memory: every bio of the cache passes the one injection layer.
Rig Plain() {
  auto fault = std::make_shared<FaultDevice>(Memory());
  return Rig{.top = fault, .inject = {fault}};
}

// A leg with a latent bad block: fault(nth) -> fault(bad block) -> memory.
struct Leg {
  std::shared_ptr<FaultDevice> nth, bad;
  std::shared_ptr<MemoryDevice> mem;
};
Leg MakeLeg() {
  Leg l;
  l.mem = Memory();
  l.bad = std::make_shared<FaultDevice>(l.mem);
  l.nth = std::make_shared<FaultDevice>(l.bad);
  return l;
}
// Garbage on the medium and reads that fail until the block is rewritten.
void PlantBadBlock(Leg& l, uint64_t offset) {
  Bytes junk = Pattern(kPage, 0xbad);
  l.mem->WriteRaw(offset, junk.data(), junk.size());
  l.bad->AddRule({.op = BioOp::kRead, .offset = offset, .len = kPage, .heal_on_write = true});
}

std::string RepairsHappened(const BlockDevice& top) {
  std::vector<LayerStats> stats;
  top.CollectStats(stats);
  if (stats.at(0).repairs == 0) return fmt::format("{} made no repair: the scenario does not test repair", stats[0].name);
  return "";
}

// mirror(leg0, leg1) with bad blocks at the given (leg, block) places.
Rig MirrorWithBadBlocks(std::vector<std::pair<size_t, uint64_t>> bad) {
  auto legs = std::make_shared<std::vector<Leg>>();
  for (int i = 0; i < 2; i++) legs->push_back(MakeLeg());
  auto mirror = *MirrorDevice::Create({(*legs)[0].nth, (*legs)[1].nth});
  Rig rig{.top = mirror, .inject = {(*legs)[0].nth, (*legs)[1].nth}, .data_offset = mirror->data_offset()};
  rig.after_setup = [legs, bad, d = mirror->data_offset()] {
    for (auto [leg, block] : bad) PlantBadBlock((*legs)[leg], d + block * kPage);
  };
  rig.clean_check = [m = mirror.get()] { return RepairsHappened(*m); };
  return rig;
}

// parity over 3 legs with data block `block` bad where it lives.
Rig ParityWithBadBlock(uint64_t block) {
  auto legs = std::make_shared<std::vector<Leg>>();
  for (int i = 0; i < 3; i++) legs->push_back(MakeLeg());
  auto parity = *ParityDevice::Create({(*legs)[0].nth, (*legs)[1].nth, (*legs)[2].nth});
  Rig rig{.top = parity, .inject = {(*legs)[0].nth, (*legs)[1].nth, (*legs)[2].nth}, .data_offset = parity->data_offset()};
  ParityDevice::Place place = parity->DataPlace(block);
  rig.after_setup = [legs, place] { PlantBadBlock((*legs)[place.leg], place.offset); };
  rig.clean_check = [p = parity.get()] { return RepairsHappened(*p); };
  return rig;
}

// ---- operations ------------------------------------------------------------

// Writes `pages` pages of a pattern; setup runs clean, so any failure is fatal.
std::function<void(File&, Model&)> Fill(uint64_t bytes, uint32_t seed = 1) {
  return [bytes, seed](File& f, Model& m) {
    Bytes d = Pattern(bytes, seed);
    auto r = f.Write(0, d);
    ASSERT_TRUE(r) << r.error().ToString();
    m.Write(0, d);
  };
}

Status DoWrite(File& f, Model& m, uint64_t off, uint64_t len, uint32_t seed) {
  Bytes d = Pattern(len, seed);
  auto r = f.Write(off, d);
  if (r) m.Write(off, d);
  else m.MaybeWrite(off, d);
  return r ? Status::Ok() : r.error();
}

Status DoTruncate(File& f, Model& m, uint64_t size) {
  Status st = f.Truncate(size);
  if (st.ok()) m.Truncate(size);
  else m.MaybeTruncate(size);
  return st;
}

// Reads [off, off+len) and checks what an OK read returned against the model.
OpOutcome DoRead(File& f, const Model& m, uint64_t off, uint64_t len) {
  Bytes buf(len);
  auto r = f.Read(off, buf);
  if (!r) return {r.error(), ""};
  for (size_t i = 0; i < *r; i++)
    if (buf[i] != m.bytes()[off + i])
      return {Status::Ok(), fmt::format("byte {} = {:#04x}, written {:#04x}", off + i, unsigned(buf[i]),
                                        unsigned(m.bytes()[off + i]))};
  return {};
}

OpOutcome Then(OpOutcome a, const std::function<OpOutcome()>& next) {
  if (!a.status.ok() || !a.wrong_data.empty()) return a;
  return next();
}

std::vector<Scenario> Scenarios() {
  std::vector<Scenario> v;
  v.push_back({.name = "write_subpage",
               .build = Plain,
               .setup = Fill(4 * kPage),
               .op = [](File& f, Model& m) { return OpOutcome{DoWrite(f, m, 5000, 100, 2)}; }});
  v.push_back({.name = "write_multipage",
               .build = Plain,
               .setup = Fill(12 * kPage),
               .op = [](File& f, Model& m) { return OpOutcome{DoWrite(f, m, 2048, 9 * kPage, 3)}; }});
  // The old last page is partial and not cached: the extension reads it,
  // zeroes its tail and the holes after it reach the device at Sync. The
  // bytes past the reopen size are stale on the device.
  v.push_back({.name = "write_extending",
               .build = Plain,
               .setup = Fill(12 * kPage),
               .reopen_size = 2 * kPage + 1000,
               .op = [](File& f, Model& m) { return OpOutcome{DoWrite(f, m, 6 * kPage + 100, 5000, 4)}; }});
  v.push_back({.name = "read_readahead",
               .build = Plain,
               .setup = Fill(40 * kPage),
               .op = [](File& f, Model& m) {
                 return Then(DoRead(f, m, 0, kPage), [&] { return DoRead(f, m, kPage, 39 * kPage); });
               }});
  v.push_back({.name = "sync",
               .build = Plain,
               .setup = Fill(16 * kPage),
               .op = [](File& f, Model& m) {
                 for (uint64_t p : {0, 1, 2, 3, 4, 9, 12})
                   if (Status st = DoWrite(f, m, p * kPage, kPage, 10 + p); !st.ok()) return OpOutcome{st};
                 return OpOutcome{f.Sync()};
               }});
  v.push_back({.name = "sync_range",
               .build = Plain,
               .setup = Fill(16 * kPage),
               .op = [](File& f, Model& m) {
                 for (uint64_t p : {0, 1, 2, 3, 4, 9, 10, 11})
                   if (Status st = DoWrite(f, m, p * kPage, kPage, 20 + p); !st.ok()) return OpOutcome{st};
                 Status st = f.SyncRange(0, 4 * kPage, kSyncWaitBefore | kSyncWrite | kSyncWaitAfter);
                 st.Update(f.SyncRange(9 * kPage, 3 * kPage, kSyncWrite));  // started, not waited for
                 st.Update(f.SyncRange(0, 0, kSyncWaitBefore));
                 return OpOutcome{st};
               }});
  // Down to a partial page: read it, zero its tail, write it.
  v.push_back({.name = "truncate_down",
               .build = Plain,
               .setup = Fill(8 * kPage),
               .op = [](File& f, Model& m) { return OpOutcome{DoTruncate(f, m, 3 * kPage + 100)}; }});
  v.push_back({.name = "truncate_up",
               .build = Plain,
               .setup = Fill(8 * kPage),
               .reopen_size = 3 * kPage + 100,
               .op = [](File& f, Model& m) { return OpOutcome{DoTruncate(f, m, 7 * kPage + 5)}; }});
  v.push_back({.name = "mirror_repair_read",
               .build = [] { return MirrorWithBadBlocks({{0, 5}}); },
               .setup = Fill(16 * kPage),
               .op = [](File& f, Model& m) { return DoRead(f, m, 0, 16 * kPage); },
               .writes_may_be_repairs = true});
  v.push_back({.name = "parity_repair_read",
               .build = [] { return ParityWithBadBlock(5); },
               .setup = Fill(16 * kPage),
               .op = [](File& f, Model& m) { return DoRead(f, m, 0, 16 * kPage); },
               .writes_may_be_repairs = true});
  // Read-modify-write through parity: the stripe's other chunks are read.
  v.push_back({.name = "parity_write_subpage",
               .build = [] {
                 Rig r = ParityWithBadBlock(5);
                 r.clean_check = nullptr;  // a write need not repair
                 return r;
               },
               .setup = Fill(16 * kPage),
               .op = [](File& f, Model& m) { return OpOutcome{DoWrite(f, m, 4 * kPage + 10, 2 * kPage, 5)}; },
               .writes_may_be_repairs = true});
  v.push_back({.name = "mirror_write",
               .build = [] {
                 Rig r = MirrorWithBadBlocks({});
                 r.clean_check = nullptr;
                 return r;
               },
               .setup = Fill(8 * kPage),
               .op = [](File& f, Model& m) { return OpOutcome{DoWrite(f, m, 3000, 3 * kPage, 6)}; }});
  return v;
}

const Scenario& Named(const std::string& name) {
  static const std::vector<Scenario> all = Scenarios();
  for (const auto& s : all)
    if (s.name == name) return s;
  throw std::runtime_error("no scenario " + name);
}

void Expect(const LoopReport& rep, const std::string& what) {
  fmt::print("[fail-nth] {} {}\n", what, rep.Summary());
  for (const auto& line : rep.failures) ADD_FAILURE() << line;
}

class FailNth : public ::testing::TestWithParam<std::string> {};

TEST_P(FailNth, EachBioOfTheOperationInTurn) {
  const Scenario& sc = Named(GetParam());
  LoopReport rep = FailEachBio(sc, StablePolicy::kAuto);
  EXPECT_GT(rep.runs, 1u);
  Expect(rep, sc.name + " bio");
  if (Full()) {
    for (auto policy : {StablePolicy::kWait, StablePolicy::kBounce})
      Expect(FailEachBio(sc, policy), fmt::format("{} bio/{}", sc.name, PolicyName(policy)));
    Expect(FailEachBio(sc, StablePolicy::kAuto, -1), sc.name + " bio-and-after");
  }
}

TEST_P(FailNth, EachFrameAllocationOfTheOperationInTurn) {
  const Scenario& sc = Named(GetParam());
  // bounce: writeback takes I/O frames too.
  LoopReport rep = FailEachFrame(sc, StablePolicy::kBounce);
  EXPECT_GT(rep.runs, 1u);
  Expect(rep, sc.name + " frame");
  if (Full())
    for (auto policy : {StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kFork})
      Expect(FailEachFrame(sc, policy), fmt::format("{} frame/{}", sc.name, PolicyName(policy)));
}

INSTANTIATE_TEST_SUITE_P(Ops, FailNth,
                         ::testing::Values("write_subpage", "write_multipage", "write_extending", "read_readahead",
                                           "sync", "sync_range", "truncate_down", "truncate_up",
                                           "mirror_repair_read", "parity_repair_read", "parity_write_subpage",
                                           "mirror_write"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// ---- scenarios that need the lead's fixes -------------------------------------

// Defect 3: the old last page is cached and clean when the file grows, so
// its zero tail lives only in the cache; the stale device bytes past the
// old end come back in a fresh cache.
TEST(FailNthScenario, ExtendingOverACachedCleanTailPage) {
  Scenario sc{.name = "write_extending_cached_tail",
              .build = Plain,
              .setup = Fill(12 * kPage),
              .reopen_size = 2 * kPage + 1000,
              .op = [](File& f, Model& m) {
                return Then(DoRead(f, m, 0, 2 * kPage + 1000),
                            [&] { return OpOutcome{DoWrite(f, m, 6 * kPage + 100, 5000, 4)}; });
              }};
  Expect(FailEachBio(sc, StablePolicy::kAuto), sc.name + " bio");
}

// Defect 8: a Truncate whose partial-page fill fails has already shrunk
// the size, and leaves the pages past the new end in place: grown back
// after healing, the file shows the cut bytes instead of zeros.
TEST(FailNthScenario, TruncateDownThenBackUp) {
  Scenario sc = Named("truncate_down");
  sc.name = "truncate_down_and_up";
  sc.after_heal = [](File& f, Model& m) { return DoTruncate(f, m, 8 * kPage); };
  Expect(FailEachBio(sc, StablePolicy::kAuto), sc.name + " bio");
  Expect(FailEachFrame(sc, StablePolicy::kBounce), sc.name + " frame");
}

// Defect 4: growing the file exposes more holes than the dirty limit, so
// the Sync that writes them out is throttled; a writeback error meanwhile
// stops it, and today no later Sync writes the remaining holes: a fresh
// cache reads the stale device bytes instead of zeros.
TEST(FailNthScenario, GrowingPastTheDirtyLimit) {
  Scenario sc{.name = "truncate_up_many_holes",
              .build = Plain,
              .setup = Fill(200 * kPage),
              .reopen_size = kPage + 100,
              .op = [](File& f, Model& m) { return OpOutcome{DoTruncate(f, m, 200 * kPage)}; },
              .tune = [](CacheOptions& o) {
                o.capacity_bytes = 64 * kPage;
                o.dirty_background_ratio = 0.1;
                o.dirty_ratio = 0.4;
              }};
  Expect(FailEachBio(sc, StablePolicy::kAuto), sc.name + " bio");
}

// Defect 10: every block has a good copy (block 10 bad on leg 1, block 12
// on leg 0), so every read must succeed and repair both.
TEST(FailNthScenario, MirrorRepairsPerBlock) {
  Scenario sc{.name = "mirror_repair_two_legs",
              .build = [] { return MirrorWithBadBlocks({{1, 10}, {0, 12}}); },
              .setup = Fill(16 * kPage),
              .op = [](File& f, Model& m) { return DoRead(f, m, 0, 16 * kPage); },
              .writes_may_be_repairs = true};
  Expect(FailEachBio(sc, StablePolicy::kAuto), sc.name + " bio");
}

// ---- negative control ------------------------------------------------------------

// A layer that acknowledges a write it never made (dm-flakey drop_writes)
// swallows the error a real device would report. The checker must call
// every such run "lost data"; if it did not, the loops above prove nothing.
TEST(FailNthNegativeControl, ADroppedWriteIsReportedAsLostData) {
  for (const char* name : {"write_subpage", "write_multipage", "sync", "mirror_write"}) {
    const Scenario& sc = Named(name);
    // Every write of these operations carries bytes the device lacks.
    LoopReport rep = FailEachBio(sc, StablePolicy::kAuto, 1, FaultAction::kDrop, BioOp::kWrite);
    fmt::print("[fail-nth] negative control {}: {}\n", name, rep.Summary());
    EXPECT_GE(rep.runs, 1u) << name;
    // A write dropped on one mirror leg is found by the scrub, not by a read.
    // Runs whose Nth bio lies past the data writes (the rule skips the
    // mirror's metadata writes) drop nothing.
    EXPECT_GE(rep.injected, 1u) << name;
    EXPECT_EQ(rep.verdicts[Verdict::kLostData] + rep.verdicts[Verdict::kDiverged], rep.injected)
        << name << ": the checker missed a swallowed write";
  }
}

}  // namespace
}  // namespace stablecache
