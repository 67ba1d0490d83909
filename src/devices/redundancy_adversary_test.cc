// Adversarial reproducers for the mirror and parity membership and recovery
// (member records, events, write-intent bitmap, resync). Each test states
// the claim it attacks; a failing test is a defect, not a flaky test: all
// of them are deterministic (faults injected by FaultDevice, "crashes"
// modelled by failing the next metadata write, which leaves the medium as a
// power cut at that point would).
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

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

constexpr uint64_t kLeg = 1 << 20;
constexpr uint64_t kBitmapAt = 8192;  // doc/mirror_parity_format.md

std::shared_ptr<MemoryDevice> Mem() { return *MemoryDevice::Create({.size_bytes = kLeg}); }

Bytes Raw(const MemoryDevice& m, uint64_t off, size_t len) {
  Bytes b(len);
  m.ReadRaw(off, b.data(), len);
  return b;
}

// ---- mirror: a stale leg is rebuilt from itself ------------------------------

// Claim: a stale leg is never read from until it is current, and is resynced
// from the current legs. Here the first current leg (the rebuild source)
// cannot read one block; the third leg is stale (an older image restored).
// The block must come from the other current leg (leg 1), or assembly must
// fail: never from the stale leg's own old copy.
TEST(MirrorAdversary, RebuildingAStaleLegNeverTakesABlockFromTheStaleLegItself) {
  auto m0 = Mem(), m1 = Mem(), m2 = Mem();
  auto f0 = std::make_shared<FaultDevice>(m0);
  const std::vector<std::shared_ptr<BlockDevice>> legs{f0, m1, m2};
  const Bytes a = Pattern(4096, 1), b = Pattern(4096, 2);
  uint64_t doff = 0;
  {
    auto m = MirrorDevice::Create(legs);
    ASSERT_TRUE(m) << m.error().message();
    doff = (*m)->data_offset();
    ASSERT_TRUE(WriteSync(**m, 0, a.data(), 4096).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
  }
  const Bytes old_leg2 = Raw(*m2, 0, kLeg);  // leg 2 as it was: events 1, block 0 = a
  {
    auto m = MirrorDevice::Create(legs);
    ASSERT_TRUE(m) << m.error().message();
    ASSERT_TRUE(WriteSync(**m, 0, b.data(), 4096).ok());  // acknowledged on every leg
    ASSERT_TRUE(FlushSync(**m).ok());
  }
  m2->WriteRaw(0, old_leg2.data(), old_leg2.size());             // the older copy of leg 2 is back: stale
  f0->AddRule({.op = BioOp::kRead, .offset = doff, .len = 4096});  // leg 0 (the source) cannot read block 0
  auto m = MirrorDevice::Create(legs);
  if (!m) return;  // refusing is acceptable; rebuilding it from stale data is not
  EXPECT_TRUE(Raw(*m2, doff, 4096) == b) << "leg 2 was rebuilt with its own stale copy of block 0 (leg 1 holds the current one)";
  for (int i = 0; i < 3; i++) {  // reads rotate over the legs
    Bytes got(4096);
    Status st = ReadSync(**m, 0, got.data(), 4096);
    EXPECT_TRUE(!st.ok() || got == b) << "read " << i << " returned the block as it was before an acknowledged write";
  }
}

// The same fallback in the dirty-region resync overwrites a CURRENT leg:
// leg 1 is stale (older image), region 0 is dirty (a crash mid-write), and
// the source (leg 0) cannot read block 0. The resync takes leg 1's stale
// copy and writes it over leg 2, the only leg left with the acknowledged one.
TEST(MirrorAdversary, DirtyRegionResyncNeverCopiesAStaleLegOverACurrentOne) {
  auto m0 = Mem(), m1 = Mem(), m2 = Mem();
  auto f0 = std::make_shared<FaultDevice>(m0);
  const std::vector<std::shared_ptr<BlockDevice>> legs{f0, m1, m2};
  const Bytes a = Pattern(4096, 11), b = Pattern(4096, 12);
  uint64_t doff = 0;
  {
    auto m = MirrorDevice::Create(legs);
    ASSERT_TRUE(m) << m.error().message();
    doff = (*m)->data_offset();
    ASSERT_TRUE(WriteSync(**m, 0, a.data(), 4096).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
  }
  const Bytes old_leg1 = Raw(*m1, 0, kLeg);
  {
    auto m = MirrorDevice::Create(legs);
    ASSERT_TRUE(m) << m.error().message();
    ASSERT_TRUE(WriteSync(**m, 0, b.data(), 4096).ok());
    ASSERT_TRUE(FlushSync(**m).ok());
  }
  m1->WriteRaw(0, old_leg1.data(), old_leg1.size());  // leg 1: older image, stale
  const std::byte bit0{1};
  m0->WriteRaw(kBitmapAt, &bit0, 1);  // region 0 dirty (a crash mid-write elsewhere in it)
  f0->AddRule({.op = BioOp::kRead, .offset = doff, .len = 4096});
  auto m = MirrorDevice::Create(legs);
  if (!m) return;
  EXPECT_TRUE(Raw(*m2, doff, 4096) == b) << "the resync copied stale leg 1's block 0 over current leg 2";
}

// ---- parity: a crash between two legs' events bumps ---------------------------

// Claim: after a crash nothing acknowledged is lost and the set assembles.
// Assembly bumps the events leg by leg; a crash (here: a failed record write,
// which leaves the same medium) after leg 0 took E+1 and before legs 1 and 2
// did leaves two legs "stale" although nothing was written since. A 3-leg
// parity set then refuses to assemble for good.
// KNOWN OPEN (issue 9 closing note): disabled until the member record
// carries a data epoch (md's clean/dirty events) and a clean state.
TEST(ParityAdversary, ACrashBetweenLegsEventsBumpsLeavesTheSetOpenable) {
  auto m0 = Mem(), m1 = Mem(), m2 = Mem();
  auto f1 = std::make_shared<FaultDevice>(m1);
  const std::vector<std::shared_ptr<BlockDevice>> legs{m0, f1, m2};
  const Bytes data = Pattern(64 << 10, 3);
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_TRUE(WriteSync(**p, 0, data.data(), data.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  f1->AddRule({.op = BioOp::kWrite, .offset = 0, .len = 8192, .count = 1});  // "crash" at leg 1's record write
  EXPECT_FALSE(ParityDevice::Create(legs));
  f1->ClearRules();
  auto p = ParityDevice::Create(legs);
  ASSERT_TRUE(p) << "an interrupted assembly made the set unopenable: " << p.error().message();
  Bytes got(data.size());
  ASSERT_TRUE(ReadSync(**p, 0, got.data(), got.size()).ok());
  EXPECT_EQ(got, data);
}

// ---- parity: stripes assembly could not resync lose their mark ----------------

// Claim: no RAID-5 write hole; a stripe whose parity may be stale is never
// used for reconstruction. A crash mid-write left stripe 0 with new data on
// leg 0 and old parity, its bit set; at the next assembly leg 1 cannot read
// its chunk of stripe 0, so the resync cannot recompute parity and the
// stripe is kept stale. But Assemble writes an all-clear bitmap first and the
// stripe is pinned again only after: a crash between the two (modelled by
// failing that pin's bitmap write on every leg) leaves the stripe unmarked,
// and the next open rebuilds leg 1's block from the stale parity.
TEST(ParityAdversary, AStripeAssemblyCouldNotResyncStaysMarkedAcrossACrash) {
  auto m0 = Mem(), m1 = Mem(), m2 = Mem();
  auto f0 = std::make_shared<FaultDevice>(m0), f1 = std::make_shared<FaultDevice>(m1),
       f2 = std::make_shared<FaultDevice>(m2);
  const std::vector<std::shared_ptr<BlockDevice>> legs{f0, f1, f2};
  const Bytes a = Pattern(8192, 4);  // stripe 0: block 0 on leg 0, block 1 on leg 1, parity on leg 2
  const Bytes a1(a.begin() + 4096, a.end());
  uint64_t doff = 0;
  {
    auto p = ParityDevice::Create(legs);
    ASSERT_TRUE(p) << p.error().message();
    doff = (*p)->data_offset();
    ASSERT_EQ((*p)->DataPlace(0).leg, 0u);
    ASSERT_EQ((*p)->DataPlace(1).leg, 1u);
    ASSERT_TRUE(WriteSync(**p, 0, a.data(), a.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  // A crash mid-write of block 0: its bit is set, its data reached leg 0, its parity did not.
  const Bytes torn = Pattern(4096, 5);
  m0->WriteRaw(doff, torn.data(), torn.size());
  const std::byte bit0{1};
  m0->WriteRaw(kBitmapAt, &bit0, 1);
  f1->AddRule({.op = BioOp::kRead, .offset = doff, .len = 4096});  // leg 1 cannot read block 1
  // Assembly #2: the bitmap clear (1st bitmap write on each leg) lands, the
  // pin of stripe 0 (2nd and later) does not: the medium of a crash right after the clear.
  for (auto& f : {f0, f1, f2})
    f->AddRule({.op = BioOp::kWrite, .offset = kBitmapAt, .len = 4096, .skip = 1});
  EXPECT_FALSE(ParityDevice::Create(legs));
  for (auto& f : {f0, f1, f2}) f->ClearRules();
  f1->AddRule({.op = BioOp::kRead, .offset = doff, .len = 4096});  // still unreadable
  auto p = ParityDevice::Create(legs);
  ASSERT_TRUE(p) << p.error().message();
  Bytes got(4096);
  Status st = ReadSync(**p, 4096, got.data(), 4096);
  EXPECT_TRUE(!st.ok() || got == a1)
      << "block 1 was rebuilt from stripe 0's stale parity: it reads back as neither its data nor an error";
}

// ---- parity: a failed leg cannot be replaced --------------------------------

// Claim: a blank leg is recognised and resynced. Leg 2 dies at run time
// (every data write fails), a write fails on it, the set is flushed and
// stopped cleanly (no crash), and the dead leg is replaced with a new blank
// disk. The stripe the failed write left "parity may be stale" is pinned in
// the bitmap for good, so assembly takes the clean-stopped set for a crashed
// one ("dirty degraded") and refuses: a RAID-5 whose disk failed can never
// get a replacement.
// KNOWN OPEN (issue 9 closing note): disabled until the member record
// carries a data epoch (md's clean/dirty events) and a clean state.
TEST(ParityAdversary, ALegThatDiedAtRunTimeCanBeReplacedWithABlankOne) {
  auto m0 = Mem(), m1 = Mem(), m2 = Mem();
  auto f2 = std::make_shared<FaultDevice>(m2);
  const Bytes data = Pattern(64 << 10, 6);
  {
    auto p = ParityDevice::Create({m0, m1, f2});
    ASSERT_TRUE(p) << p.error().message();
    const uint64_t doff = (*p)->data_offset();
    ASSERT_TRUE(WriteSync(**p, 0, data.data(), data.size()).ok());
    ASSERT_TRUE(FlushSync(**p).ok());
    f2->AddRule({.op = BioOp::kWrite, .offset = doff});  // leg 2's data area dies
    const Bytes again = Pattern(4096, 7);
    EXPECT_FALSE(WriteSync(**p, 0, again.data(), 4096).ok());  // stripe 0: parity on leg 2
    ASSERT_TRUE(FlushSync(**p).ok());
  }
  auto p = ParityDevice::Create({m0, m1, Mem()});
  ASSERT_TRUE(p) << "a failed leg cannot be replaced after a clean stop: " << p.error().message();
  Bytes got(data.size() - 4096);
  ASSERT_TRUE(ReadSync(**p, 4096, got.data(), got.size()).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 4096));
}

// ---- CLI: info modifies the medium --------------------------------------------

struct Dir {
  fs::path path = fs::temp_directory_path() / fmt::format("stablecache-advredund-{}", getpid());
  Dir() { fs::create_directories(path); }
  ~Dir() { fs::remove_all(path); }
  std::string operator/(const char* n) const { return (path / n).string(); }
};

std::string FileText(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int RunCli(const std::string& args) {
  const std::string cmd = std::string(STABLECACHE_CLI) + " " + args + " >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// `stablecache info` describes the medium; it must not change it. It opens
// the stack like an application, so assembly bumps the events on every leg
// (and would rebuild a stale leg) on every `info`.
TEST(CliAdversary, InfoLeavesEveryLegByteForByteUnchanged) {
  Dir dir;
  const std::string spec = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", dir / "a", dir / "b");
  {
    auto dev = BuildStack(spec);
    ASSERT_TRUE(dev) << dev.error().message();
  }
  const std::string a = FileText(dir / "a"), b = FileText(dir / "b");
  EXPECT_EQ(RunCli("info '" + spec + "'"), 0);
  EXPECT_TRUE(FileText(dir / "a") == a) << "info rewrote leg a (events bump)";
  EXPECT_TRUE(FileText(dir / "b") == b) << "info rewrote leg b (events bump)";
}

// With a leg file deleted, `info` recreates it (file:...(size=) creates a
// missing file even with BuildOptions::format false), takes it for a blank
// replacement and rebuilds it whole: `info` writes a full leg.
TEST(CliAdversary, InfoOnASetWithAMissingLegDoesNotRecreateAndRebuildIt) {
  Dir dir;
  const std::string spec = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", dir / "a", dir / "b");
  {
    auto dev = BuildStack(spec);
    ASSERT_TRUE(dev) << dev.error().message();
  }
  fs::remove(dir / "b");
  RunCli("info '" + spec + "'");
  EXPECT_FALSE(fs::exists(dir / "b")) << "info created the missing leg file (and rebuilt it)";
}

}  // namespace
}  // namespace stablecache
