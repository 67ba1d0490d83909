// Mirror and parity sets on the medium: member records, events, assembly
// (blank, stale, swapped legs; conflicting specs), the write-intent bitmap
// (a crash mid-stripe), and the runtime write hole.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "block/metadata_record.h"
#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

namespace fs = std::filesystem;
using testing::Pattern;
using Bytes = std::vector<std::byte>;

// A temp directory for leg images, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / fmt::format("stablecache-members-{}-{}", getpid(), counter++);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const char* name) const { return (path / name).string(); }
  static inline int counter = 0;
};

std::shared_ptr<FanoutDevice> Open(const std::string& spec, std::vector<std::string>* warnings = nullptr,
                                   std::vector<std::string>* progress = nullptr) {
  BuildOptions o;
  o.warnings = warnings;
  if (progress)
    o.resync_progress = [progress](std::string_view what, uint64_t done, uint64_t total) {
      progress->push_back(fmt::format("{} {}/{}", what, done, total));
    };
  auto dev = BuildStack(spec, o);
  EXPECT_TRUE(dev) << spec << ": " << dev.error().message();
  if (!dev) return nullptr;
  return std::dynamic_pointer_cast<FanoutDevice>(*dev);
}

std::string OpenError(const std::string& spec) {
  auto dev = BuildStack(spec);
  EXPECT_FALSE(dev) << spec << " opened";
  return dev ? "" : dev.error().message();
}

Bytes Read(BlockDevice& dev, uint64_t off, uint32_t len, Status* st = nullptr) {
  Bytes b(len);
  Status s = ReadSync(dev, off, b.data(), len);
  if (st) *st = s;
  else EXPECT_TRUE(s.ok()) << s.ToString();
  return b;
}

Bytes FileBytes(const std::string& path, uint64_t off, size_t len) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(off));
  Bytes b(len);
  f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(len));
  return b;
}

bool Contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }
bool AnyContains(const std::vector<std::string>& v, const std::string& what) {
  for (const auto& s : v)
    if (Contains(s, what)) return true;
  return false;
}

ScrubReport ScrubOf(BlockDevice& dev) {
  ScrubReport r;
  EXPECT_TRUE(dev.Scrub(r).ok());
  return r;
}

// ---- assembly ----------------------------------------------------------------

TEST(MemberSet, BlankLegsAreFormattedWithOneSetAndTheirRoles) {
  TempDir dir;
  const std::string spec = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", dir / "a", dir / "b");
  auto m = Open(spec);
  ASSERT_TRUE(m);
  SetDescription d = m->Describe();
  EXPECT_TRUE(d.formatted);
  EXPECT_EQ(d.events, 1u);
  ASSERT_EQ(d.legs.size(), 2u);
  EXPECT_EQ(m->Info().size_bytes, d.data_size_per_leg);
  EXPECT_EQ(m->Info().size_bytes + m->data_offset(), 2u << 20);
  m.reset();
  for (const char* leg : {"a", "b"}) {
    auto rec = DecodeRecord(FileBytes(dir / leg, 0, 4096), "SCMIRROR");
    auto rec_b = DecodeRecord(FileBytes(dir / leg, 4096, 4096), "SCMIRROR");
    EXPECT_TRUE(rec.state == RecordState::kValid || rec_b.state == RecordState::kValid) << leg;
    EXPECT_EQ((rec.state == RecordState::kValid ? rec : rec_b).record.version, 2u) << leg;
  }
  auto again = Open(spec);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->Describe().formatted);
  EXPECT_EQ(again->Describe().events, 3u);  // every assembly bumps twice: before and after its resync
  EXPECT_EQ(again->Describe().base_events, 2u);
  EXPECT_TRUE(again->Describe().faulty_roles.empty());
  EXPECT_EQ(again->Describe().uuid, d.uuid);
}

TEST(MemberSet, ABlankLegIsDetectedNeverReadAndResynced) {
  TempDir dir;
  const std::string spec = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", dir / "a", dir / "b");
  auto m = Open(spec);
  ASSERT_TRUE(m);
  auto data = Pattern(256 << 10, 1);
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(FlushSync(*m).ok());
  const uint64_t d = m->data_offset();
  m.reset();
  fs::remove(dir / "b");  // the leg image is gone; size= recreates it blank
  std::vector<std::string> warnings, progress;
  m = Open(spec, &warnings, &progress);
  ASSERT_TRUE(m);
  SetDescription desc = m->Describe();
  ASSERT_EQ(desc.legs.size(), 2u);
  EXPECT_EQ(desc.legs[1].found, "blank (never formatted)");
  EXPECT_TRUE(desc.legs[1].resynced);
  EXPECT_TRUE(AnyContains(desc.notes, "blank")) << fmt::format("{}", fmt::join(desc.notes, "; "));
  EXPECT_TRUE(AnyContains(warnings, "blank"));
  EXPECT_FALSE(progress.empty());
  for (int i = 0; i < 4; i++) EXPECT_EQ(Read(*m, 0, data.size()), data) << "read " << i;  // both legs in turn
  EXPECT_TRUE(ScrubOf(*m).clean());
  m.reset();
  EXPECT_EQ(FileBytes(dir / "b", d, data.size()), data);  // the new leg holds the data
}

TEST(MemberSet, AStaleLegIsDetectedByItsEventsAndResynced) {
  TempDir dir;
  const std::string spec = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", dir / "a", dir / "b");
  auto m = Open(spec);
  ASSERT_TRUE(m);
  auto old_data = Pattern(64 << 10, 2);
  ASSERT_TRUE(WriteSync(*m, 0, old_data.data(), old_data.size()).ok());
  ASSERT_TRUE(FlushSync(*m).ok());
  m.reset();
  fs::copy_file(dir / "b", dir / "b.old");
  m = Open(spec);
  auto new_data = Pattern(64 << 10, 3);
  ASSERT_TRUE(WriteSync(*m, 0, new_data.data(), new_data.size()).ok());
  ASSERT_TRUE(FlushSync(*m).ok());
  m.reset();
  fs::copy_file(dir / "b.old", dir / "b", fs::copy_options::overwrite_existing);  // an older copy comes back
  m = Open(spec);
  ASSERT_TRUE(m);
  SetDescription desc = m->Describe();
  EXPECT_TRUE(desc.legs[1].resynced);
  EXPECT_LT(desc.legs[1].events, desc.legs[0].events);
  EXPECT_TRUE(AnyContains(desc.notes, "stale")) << fmt::format("{}", fmt::join(desc.notes, "; "));
  for (int i = 0; i < 4; i++) EXPECT_EQ(Read(*m, 0, new_data.size()), new_data) << "read " << i;
  EXPECT_TRUE(ScrubOf(*m).clean());
}

TEST(MemberSet, SwappedParityLegsArePlacedByTheirRole) {
  TempDir dir;
  auto spec = [&](const char* x, const char* y, const char* z) {
    return fmt::format("parity(file:{}(size=1M),file:{}(size=1M),file:{}(size=1M))", dir / x, dir / y, dir / z);
  };
  auto p = Open(spec("a", "b", "c"));
  ASSERT_TRUE(p);
  auto data = Pattern(p->Info().size_bytes, 4);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(FlushSync(*p).ok());
  p.reset();
  std::vector<std::string> warnings;
  p = Open(spec("c", "a", "b"), &warnings);
  ASSERT_TRUE(p);
  EXPECT_EQ(Read(*p, 0, data.size()), data);
  EXPECT_TRUE(ScrubOf(*p).clean());
  SetDescription desc = p->Describe();
  EXPECT_EQ(desc.legs[0].spec_position, 1u);  // a holds role 0
  EXPECT_EQ(desc.legs[2].spec_position, 0u);  // c holds role 2
  EXPECT_TRUE(AnyContains(desc.notes, "placed by its recorded role"));
  EXPECT_TRUE(AnyContains(warnings, "placed by its recorded role"));
  for (const auto& l : desc.legs) EXPECT_FALSE(l.resynced);
}

TEST(MemberSet, ASpecThatConflictsWithTheMediumFailsNamingBoth) {
  TempDir dir;
  auto leg = [&](const char* name) { return fmt::format("file:{}(size=1M)", dir / name); };
  ASSERT_TRUE(Open(fmt::format("mirror({},{})", leg("a"), leg("b"))));
  ASSERT_TRUE(Open(fmt::format("mirror({},{})", leg("c"), leg("d"))));
  // Three legs on a two-leg set.
  std::string e = OpenError(fmt::format("mirror({},{},{})", leg("a"), leg("b"), leg("e")));
  EXPECT_TRUE(Contains(e, "the spec lists 3 legs")) << e;
  EXPECT_TRUE(Contains(e, "set of 2 legs")) << e;
  // Legs of two different sets.
  e = OpenError(fmt::format("mirror({},{})", leg("a"), leg("c")));
  EXPECT_TRUE(Contains(e, "two different mirror sets")) << e;
  EXPECT_TRUE(Contains(e, dir / "a") && Contains(e, dir / "c")) << e;
  // Parity over mirror legs.
  e = OpenError(fmt::format("parity({},{},{})", leg("a"), leg("b"), leg("f")));
  EXPECT_TRUE(Contains(e, "holds a mirror member record")) << e;
  EXPECT_TRUE(Contains(e, "asks for a parity leg")) << e;
  // A leg with data but no record is never overwritten.
  {
    std::ofstream f(dir / "g", std::ios::binary);
    auto junk = Pattern(1 << 20, 5);
    f.write(reinterpret_cast<const char*>(junk.data()), static_cast<std::streamsize>(junk.size()));
  }
  e = OpenError(fmt::format("mirror({},file:{})", leg("h"), dir / "g"));
  EXPECT_TRUE(Contains(e, "refusing to overwrite")) << e;
  EXPECT_TRUE(Contains(e, dir / "g")) << e;
  // The same leg named twice: two legs claim one role.
  e = OpenError(fmt::format("mirror({},{})", leg("a"), leg("a")));
  EXPECT_TRUE(Contains(e, "both claim role 0")) << e;
}

// ---- write-intent bitmap -------------------------------------------------------

TEST(WriteIntentBitmap, ARegionIsSetBeforeItsWriteAndClearedAfterAFlush) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  for (int i = 0; i < 2; i++) mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
  auto m = *MirrorDevice::Create({mems[0], mems[1]});
  EXPECT_EQ(m->DirtyRegions(), 0u);
  auto data = Pattern(4096, 6);
  ASSERT_TRUE(WriteSync(*m, 0, data.data(), 4096).ok());
  EXPECT_EQ(m->DirtyRegions(), 1u);
  Bytes bitmap(1);
  mems[1]->ReadRaw(8192, bitmap.data(), 1);  // the bitmap block follows the two record slots
  EXPECT_EQ(bitmap[0], std::byte{1});
  ASSERT_TRUE(FlushSync(*m).ok());
  EXPECT_EQ(m->DirtyRegions(), 0u);
  mems[1]->ReadRaw(8192, bitmap.data(), 1);
  EXPECT_EQ(bitmap[0], std::byte{0});
}

// A crash while a stripe is written: one leg's write never lands (a fault
// layer drops it). On reopen the bitmap names the region and its parity is
// recomputed from the data, so the scrub is clean.
TEST(WriteIntentBitmap, ACrashMidStripeIsResyncedAtTheNextAssembly) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  for (int i = 0; i < 3; i++) mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
  auto drop = std::make_shared<FaultDevice>(mems[0]);
  {
    auto p = *ParityDevice::Create({drop, mems[1], mems[2]});
    auto data = Pattern(8 * 4096, 7);
    drop->AddRule({.op = BioOp::kWrite, .offset = p->data_offset(), .action = FaultAction::kDrop});
    ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
    ScrubReport before = ScrubOf(*p);
    EXPECT_GT(before.parity_mismatch, 0u) << "the dropped writes must leave stripes inconsistent";
    // The process dies here: no flush, nothing cleared.
  }
  auto p = *ParityDevice::Create({mems[0], mems[1], mems[2]});
  EXPECT_GE(p->Describe().dirty_regions_resynced, 1u);
  EXPECT_TRUE(ScrubOf(*p).clean());
}

TEST(WriteIntentBitmap, ACrashedMirrorsLegsAgreeAgainAfterAssembly) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  for (int i = 0; i < 2; i++) mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
  auto drop = std::make_shared<FaultDevice>(mems[1]);
  {
    auto m = *MirrorDevice::Create({mems[0], drop});
    drop->AddRule({.op = BioOp::kWrite, .offset = m->data_offset(), .action = FaultAction::kDrop});
    auto data = Pattern(16 * 4096, 8);
    ASSERT_TRUE(WriteSync(*m, 64 << 10, data.data(), data.size()).ok());
    EXPECT_GT(ScrubOf(*m).mirror_divergence, 0u);
  }
  auto m = *MirrorDevice::Create({mems[0], mems[1]});
  EXPECT_GE(m->Describe().dirty_regions_resynced, 1u);
  EXPECT_TRUE(ScrubOf(*m).clean());
}

// ---- runtime write hole ----------------------------------------------------------

// The schedule: a write whose parity-leg write fails leaves new data
// beside old parity; a degraded read of another block of that stripe must
// return an error naming the stripe (or the acknowledged data), never their
// XOR, and must not write anything back over the good copy. The parity leg
// that failed is behind and never read again: the read needs it, so it fails.
TEST(ParityWriteHole, ADegradedReadOfAStripeWithStaleParityFailsNamingIt) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  std::vector<std::shared_ptr<FaultDevice>> faults;
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (int i = 0; i < 3; i++) {
    mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
    faults.push_back(std::make_shared<FaultDevice>(mems.back()));
    legs.push_back(faults.back());
  }
  auto p = *ParityDevice::Create(legs);
  auto acked = Pattern(8192, 9);  // stripe 0: blocks 0 and 1
  ASSERT_TRUE(WriteSync(*p, 0, acked.data(), acked.size()).ok());
  const auto par = p->ParityPlace(0);
  const auto b1 = p->DataPlace(1);
  faults[par.leg]->AddRule({.op = BioOp::kWrite, .offset = par.offset, .len = 4096, .count = 1});
  auto fresh = Pattern(4096, 10);
  EXPECT_FALSE(WriteSync(*p, 0, fresh.data(), 4096).ok());  // block 0 lands, its parity does not
  EXPECT_EQ(p->Describe().legs[par.leg].state.rfind("behind", 0), 0u) << p->Describe().legs[par.leg].state;
  faults[b1.leg]->AddRule({.op = BioOp::kRead, .offset = b1.offset, .len = 4096});
  Status st;
  Bytes got = Read(*p, 4096, 4096, &st);
  if (st.ok()) EXPECT_EQ(got, Bytes(acked.begin() + 4096, acked.end())) << "garbage returned as OK";
  else EXPECT_TRUE(Contains(st.message(), "stripe 0")) << st.message();
  EXPECT_FALSE(st.ok());
  Bytes raw(4096);
  mems[b1.leg]->ReadRaw(b1.offset, raw.data(), 4096);
  EXPECT_EQ(raw, Bytes(acked.begin() + 4096, acked.end())) << "garbage written back over the good copy";
  // The parity leg stays missing even once it could be written again: the
  // stripe is served from its data legs, and the scrub says it is degraded.
  faults[b1.leg]->ClearRules();
  ASSERT_TRUE(WriteSync(*p, 0, fresh.data(), 4096).ok());
  EXPECT_EQ(Read(*p, 0, 8192), [&] {
    Bytes want = fresh;
    want.insert(want.end(), acked.begin() + 4096, acked.end());
    return want;
  }());
  EXPECT_FALSE(ScrubOf(*p).clean());
}

TEST(ParityWriteHole, ADegradedWriteIntoAStaleStripeFailsInsteadOfRebuildingFromIt) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  std::vector<std::shared_ptr<FaultDevice>> faults;
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (int i = 0; i < 3; i++) {
    mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
    faults.push_back(std::make_shared<FaultDevice>(mems.back()));
    legs.push_back(faults.back());
  }
  auto p = *ParityDevice::Create(legs);
  auto acked = Pattern(8192, 11);
  ASSERT_TRUE(WriteSync(*p, 0, acked.data(), acked.size()).ok());
  const auto par = p->ParityPlace(0);
  const auto b1 = p->DataPlace(1);
  faults[par.leg]->AddRule({.op = BioOp::kWrite, .offset = par.offset, .len = 4096, .count = 1});
  auto fresh = Pattern(4096, 12);
  EXPECT_FALSE(WriteSync(*p, 0, fresh.data(), 4096).ok());
  faults[b1.leg]->AddRule({.op = BioOp::kRead, .offset = b1.offset, .len = 4096});
  Status st = WriteSync(*p, 0, fresh.data(), 4096);  // needs block 1, which only stale parity could rebuild
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "stripe 0")) << st.message();
  Bytes raw(4096);
  mems[b1.leg]->ReadRaw(b1.offset, raw.data(), 4096);
  EXPECT_EQ(raw, Bytes(acked.begin() + 4096, acked.end()));
}

// A leg that failed a write is behind: its events stay behind on the medium,
// reads never return its old copy, and the next assembly rebuilds it.
TEST(MemberSet, ALegThatFailedAWriteIsNeverReadAndIsStaleOnReopen) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  for (int i = 0; i < 2; i++) mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
  auto fault = std::make_shared<FaultDevice>(mems[1]);
  auto m = *MirrorDevice::Create({mems[0], fault});
  auto a = Pattern(4096, 13), b = Pattern(4096, 14);
  ASSERT_TRUE(WriteSync(*m, 0, a.data(), 4096).ok());
  fault->AddRule({.op = BioOp::kWrite, .offset = m->data_offset(), .len = 4096, .count = 1});
  EXPECT_FALSE(WriteSync(*m, 0, b.data(), 4096).ok());
  for (int i = 0; i < 4; i++) EXPECT_EQ(Read(*m, 0, 4096), b) << "read " << i << " returned leg 1's old copy";
  EXPECT_EQ(m->Describe().legs[1].state.rfind("behind", 0), 0u) << m->Describe().legs[1].state;
  const uint64_t events = m->Describe().events;
  m.reset();
  auto again = *MirrorDevice::Create({mems[0], mems[1]});
  SetDescription d = again->Describe();
  EXPECT_TRUE(d.legs[1].resynced);
  EXPECT_LT(d.legs[1].events, events);
  EXPECT_TRUE(ScrubOf(*again).clean());
}

// ---- data epoch: base events and faulty roles -------------------------------------

std::shared_ptr<MemoryDevice> Mem1M() { return *MemoryDevice::Create({.size_bytes = 1 << 20}); }
Bytes Image(const MemoryDevice& m) {
  Bytes b(1 << 20);
  m.ReadRaw(0, b.data(), b.size());
  return b;
}

// A leg whose image is copied back from an earlier clean stop (events below
// the newest record's base) missed the writes in between: it is stale,
// rebuilt at assembly, never read as current, and in inspect mode (not
// rebuilt) never read at all.
TEST(DataEpoch, ALegRestoredFromAnEarlierCleanStopIsRebuiltNeverRead) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, m1, m2};
  const Bytes a = Pattern(256 << 10, 21), b = Pattern(256 << 10, 22);
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  const Bytes old2 = Image(*m2);  // leg 2 at an earlier clean stop
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_TRUE(WriteSync(**p, 0, b.data(), b.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  m2->WriteRaw(0, old2.data(), old2.size());
  {  // inspect: nothing written, the stale leg never read
    const Bytes i0 = Image(*m0), i1 = Image(*m1), i2 = Image(*m2);
    auto p = ParityDevice::Create(legs, {.inspect = true});
    ASSERT_TRUE(p) << p.error().message();
    EXPECT_EQ(Read(**p, 0, b.size()), b) << "inspect mode read the restored (stale) leg as current";
    EXPECT_EQ((*p)->Describe().legs[2].state.rfind("stale", 0), 0u) << (*p)->Describe().legs[2].state;
    p->reset();
    EXPECT_TRUE(Image(*m0) == i0 && Image(*m1) == i1 && Image(*m2) == i2) << "inspect wrote to a leg";
  }
  auto p = ParityDevice::Create(legs);
  ASSERT_TRUE(p) << p.error().message();
  SetDescription d = (*p)->Describe();
  EXPECT_TRUE(d.legs[2].resynced);
  EXPECT_FALSE(d.legs[0].resynced || d.legs[1].resynced);
  EXPECT_TRUE(AnyContains(d.notes, "base events")) << "the note says why the leg is stale";
  EXPECT_EQ(Read(**p, 0, b.size()), b);
  EXPECT_TRUE(ScrubOf(**p).clean());
}

// Assembly's phase 2 (events E+2, base E+1) is written to the current legs
// first, then to the rebuilt one. A crash between two legs' record writes
// (modelled by failing one leg's phase-2 record write) leaves a set that
// opens: a current leg that missed the bump is still current; the rebuilt
// leg that missed it is below the new base and rebuilt again.
TEST(DataEpoch, ACrashMidPhaseTwoLeavesTheSetOpenable) {
  for (size_t crashed : {size_t{1}, size_t{2}}) {  // a current leg; the leg being rebuilt
    SCOPED_TRACE(fmt::format("phase-2 record write of leg {} fails", crashed));
    auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
    auto f = std::make_shared<FaultDevice>(crashed == 1 ? m1 : m2);
    const std::vector<std::shared_ptr<BlockDevice>> legs{m0, crashed == 1 ? std::shared_ptr<BlockDevice>(f) : m1,
                                                         crashed == 2 ? std::shared_ptr<BlockDevice>(f) : m2};
    const Bytes a = Pattern(128 << 10, 23), b = Pattern(128 << 10, 24);
    {
      auto p = ParityDevice::Create(legs);
      ASSERT_TRUE(p) << p.error().message();
      ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
      ASSERT_TRUE(FlushSync(**p).ok());
    }
    const Bytes old2 = Image(*m2);
    {
      auto p = ParityDevice::Create(legs);
      ASSERT_TRUE(p) << p.error().message();
      ASSERT_TRUE(WriteSync(**p, 0, b.data(), b.size()).ok());
      ASSERT_TRUE(FlushSync(**p).ok());
    }
    m2->WriteRaw(0, old2.data(), old2.size());  // leg 2 stale: assembly rebuilds it
    // Leg 1 writes its record in phase 1 and phase 2; leg 2 (stale) only in phase 2.
    f->AddRule({.op = BioOp::kWrite, .offset = 0, .len = 8192, .skip = crashed == 1 ? 1 : 0, .count = 1});
    EXPECT_FALSE(ParityDevice::Create(legs));
    EXPECT_EQ(f->injected(), 1u);
    f->ClearRules();
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << "a crash mid-phase-2 made the set unopenable: " << p.error().message();
    SetDescription d = (*p)->Describe();
    EXPECT_FALSE(d.legs[1].resynced) << "leg 1 only missed a bump, yet was rebuilt";
    EXPECT_TRUE(d.legs[2].resynced) << "leg 2's rebuild was not finished on the medium, yet it counted as current";
    EXPECT_EQ(Read(**p, 0, b.size()), b);
    EXPECT_TRUE(ScrubOf(**p).clean());
  }
}

// A leg fails a write; recording it as faulty reaches leg 0 and not leg 1
// (the process dies mid-bump, modelled by failing leg 1's record write).
// The write fails, and so does every later write and flush (the medium may
// not say that leg 2 is missing). On reopen leg 0's record names role 2
// faulty: leg 2 is rebuilt although its events equal leg 1's (its data,
// scribbled over here, is never read), and leg 1 (which took every write)
// stays current. A mirror, so the dirty region does not stop assembly.
TEST(DataEpoch, ACrashMidFailureBumpLeavesTheFailedLegStale) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  auto f1 = std::make_shared<FaultDevice>(m1), f2 = std::make_shared<FaultDevice>(m2);
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, f1, f2};
  const Bytes a = Pattern(64 << 10, 25), again = Pattern(4096, 26);
  uint64_t doff = 0;
  {
    auto m = MirrorDevice::Create(legs);
    ASSERT_TRUE(m) << m.error().message();
    doff = (*m)->data_offset();
    ASSERT_TRUE(WriteSync(**m, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
    f2->AddRule({.op = BioOp::kWrite, .offset = doff});                       // leg 2's data area dies
    f1->AddRule({.op = BioOp::kWrite, .offset = 0, .len = 8192, .count = 1});  // leg 1 misses the bump
    Status st = WriteSync(**m, 0, again.data(), 4096);
    EXPECT_FALSE(st.ok());
    EXPECT_TRUE(Contains(st.message(), "recording")) << st.message();
    st = WriteSync(**m, 8192, again.data(), 4096);  // would skip leg 2, which the medium may not record as missing
    EXPECT_FALSE(st.ok());
    EXPECT_TRUE(Contains(st.message(), "recording it on the other legs failed")) << st.message();
    EXPECT_FALSE(FlushSync(**m).ok());
  }
  f1->ClearRules();
  f2->ClearRules();
  const Bytes junk = Pattern(64 << 10, 28);
  m2->WriteRaw(doff, junk.data(), junk.size());
  auto m = MirrorDevice::Create(legs);
  ASSERT_TRUE(m) << m.error().message();
  SetDescription d = (*m)->Describe();
  EXPECT_TRUE(d.legs[2].resynced) << "leg 2 failed a write, yet was taken as current";
  EXPECT_TRUE(d.legs[2].faulty);
  EXPECT_EQ(d.legs[2].events, d.legs[1].events);
  EXPECT_FALSE(d.legs[1].resynced);
  Bytes want = a;
  std::copy(again.begin(), again.end(), want.begin());  // the failed write reached legs 0 and 1
  for (int i = 0; i < 3; i++) {  // reads rotate over the legs
    Bytes got = Read(**m, 0, a.size());
    EXPECT_TRUE(std::equal(got.begin() + 4096, got.end(), a.begin() + 4096)) << "read " << i;
    EXPECT_TRUE(got == a || got == want) << "read " << i;
  }
  EXPECT_TRUE(ScrubOf(**m).clean());
}

// A v1 member record (before base events and faulty roles) still opens:
// it reads as base = events, no faulty roles, and is rewritten as v2.
TEST(DataEpoch, AVersion1RecordStillOpens) {
  auto m0 = Mem1M(), m1 = Mem1M(), m2 = Mem1M();
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, m1, m2};
  const Bytes a = Pattern(64 << 10, 27);
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  for (auto& m : {m0, m1, m2}) {  // rewrite the newest record as v1: 64-byte payload
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
  }
  auto p = ParityDevice::Create(legs);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(Read(**p, 0, a.size()), a);
  EXPECT_FALSE((*p)->Describe().legs[0].resynced || (*p)->Describe().legs[1].resynced ||
               (*p)->Describe().legs[2].resynced);
  p->reset();
  for (auto& m : {m0, m1, m2}) {
    Bytes blk(8192);
    m->ReadRaw(0, blk.data(), blk.size());
    auto s0 = DecodeRecord(std::span(blk).first(4096), "SCPARITY"), s1 = DecodeRecord(std::span(blk).last(4096), "SCPARITY");
    const auto& newest = s0.record.generation > s1.record.generation ? s0 : s1;
    EXPECT_EQ(newest.record.version, 2u);
  }
}

// ---- per-block rebuild -------------------------------------------------------------

TEST(ParityPerBlock, AMultiBlockReadRebuildsOnlyTheBlockThatFailed) {
  std::vector<std::shared_ptr<MemoryDevice>> mems;
  std::vector<std::shared_ptr<FaultDevice>> faults;
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (int i = 0; i < 3; i++) {
    mems.push_back(*MemoryDevice::Create({.size_bytes = 1 << 20}));
    faults.push_back(std::make_shared<FaultDevice>(mems.back()));
    legs.push_back(faults.back());
  }
  auto p = *ParityDevice::Create(legs);
  auto data = Pattern(64 << 10, 15);
  ASSERT_TRUE(WriteSync(*p, 0, data.data(), data.size()).ok());
  const auto bad = p->DataPlace(6);
  faults[bad.leg]->AddRule({.op = BioOp::kRead, .offset = bad.offset, .len = 4096, .heal_on_write = true});
  EXPECT_EQ(Read(*p, 0, data.size()), data);
  std::vector<LayerStats> stats;
  p->CollectStats(stats);
  EXPECT_EQ(stats[0].repairs, 1u);  // not every block of the leg's run
  EXPECT_EQ(stats[0].degraded_reads, 1u);
}

// ---- stack builder ---------------------------------------------------------------

TEST(RedundancyWarnings, IntegrityAboveAMirrorIsReportedOnce) {
  std::vector<std::string> warnings;
  BuildOptions o;
  o.warnings = &warnings;
  ASSERT_TRUE(BuildStack("integrity,mirror(memory:1M,memory:1M)", o));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(Contains(warnings[0], "mirror([integrity,file:/a],[integrity,file:/b])")) << warnings[0];
  warnings.clear();
  ASSERT_TRUE(BuildStack("mirror([integrity,memory:1M],[integrity,memory:1M])", o));
  EXPECT_TRUE(warnings.empty());
}

}  // namespace
}  // namespace stablecache
