// Adversarial review of the integrity layer (src/devices/integrity_device.*):
// each test is a minimal reproducer of a defect found by trying to break its
// claims (doc/integrity_format.md). Deterministic: inline memory device,
// fault layer, crash replayer with fixed logs.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <future>
#include <random>

#include "crash/crash_replayer.h"
#include "devices/fault_device.h"
#include "devices/integrity_device.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "devices/integrity_test_util.h"

namespace stablecache {
namespace {

using namespace integrity_test;

// A write of a block whose previous write is not yet covered by a flush
// waits for a settle flush, which the commit issues (need_flush). When the
// device below keeps failing flushes, AbortCommit (integrity_device.cc:538)
// fails the commit's own writes and flushes (none: the commit was a bare
// settle flush) and Kicks again; Kick finds the same write blocked by the
// same unsettled block, sets need_flush again and issues another flush:
// forever. The waiting write is never completed (a hang) and the loop
// spins; with an inline lower device it recurses (Kick -> TagsWritten ->
// CommitFlushed/AbortCommit -> Kick) until the stack overflows. Here the
// flush fails 300 times and then heals, so the test ends: the write should
// have failed with the flush's error after a bounded number of attempts.
TEST(IntegrityAdversary, AWriteWaitingForASettleFlushFailsWhenTheFlushFailsInsteadOfSpinning) {
  auto mem = Mem();
  auto fault = std::make_shared<FaultDevice>(mem);
  auto dev = *IntegrityDevice::Create(fault, {});
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 1).data(), kBlock).ok());  // block 0: written, not yet flushed
  FaultRule r;
  r.op = BioOp::kFlush;
  r.count = 300;
  fault->AddRule(r);
  const uint64_t before = fault->seen(BioOp::kFlush);
  Status st = WriteSync(*dev, 0, Pattern(0, 2).data(), kBlock);  // needs a settle flush first
  const uint64_t attempts = fault->seen(BioOp::kFlush) - before;
  EXPECT_LE(attempts, 4u) << "the commit loop re-issued the failing settle flush " << attempts << " times";
  EXPECT_FALSE(st.ok()) << "the flush the write waited for failed every time, yet the write reports success only "
                           "because the fault healed after "
                        << attempts << " flushes";
}

// The same loop with a tag write failing instead: a commit aborted by a
// failed tag write re-dirties its tag block (AbortCommit); the next settle
// commit carries it, its write fails again, AbortCommit Kicks, need_flush is
// still set: another commit, forever (while the tag write keeps failing).
TEST(IntegrityAdversary, AWriteWaitingForASettleCommitFailsWhenItsTagWriteFails) {
  auto mem = Mem(4 << 20);
  auto fault = std::make_shared<FaultDevice>(mem);
  auto dev = *IntegrityDevice::Create(fault, {});
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 1).data(), kBlock).ok());  // block 0 written, unsettled
  FaultRule r;
  r.op = BioOp::kWrite;
  r.offset = (dev->geometry().tag_start + 1) * kBlock;
  r.len = kBlock;  // tag block 1 (data blocks 254..507)
  r.count = 300;
  fault->AddRule(r);
  EXPECT_FALSE(WriteSync(*dev, 300 * kBlock, Pattern(300, 1).data(), kBlock).ok());  // tag block 1 now dirty
  const uint64_t before = fault->seen();
  Status st = WriteSync(*dev, 0, Pattern(0, 2).data(), kBlock);  // needs a settle commit, which writes tag block 1
  const uint64_t ios = fault->seen() - before;
  EXPECT_LE(ios, 10u) << "the commit loop retried " << ios << " times";
  EXPECT_FALSE(st.ok());
}

// kLost has two causes: a corrupt tag block (LoadTags) and a failed write
// whose read back found neither content or could not be read
// (ResolveReadBack, integrity_device.cc:608). CheckBlock's kLost message
// (integrity_device.cc:345) always blames a corrupt tag block, and
// DescribeMedium counts it as "(lost tags)": for the second cause that is a
// lie that sends an operator to look at a tag table that is fine.
TEST(IntegrityAdversary, ABlockLostByAFailedReadBackIsNotBlamedOnACorruptTagBlock) {
  auto mem = Mem();
  auto fault = std::make_shared<FaultDevice>(mem);
  auto dev = *IntegrityDevice::Create(fault, {});
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 1).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());
  FaultRule w;
  w.op = BioOp::kWrite;
  w.offset = dev->LowerOffset(0);
  w.len = kBlock;
  w.count = 1;
  fault->AddRule(w);
  FaultRule rd = w;
  rd.op = BioOp::kRead;  // the read back after the next flush fails once
  fault->AddRule(rd);
  EXPECT_FALSE(WriteSync(*dev, 0, Pattern(0, 2).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());  // settles: reads block 0 back, which fails
  ASSERT_TRUE(FlushSync(*dev).ok());
  ASSERT_EQ(fault->injected(BioOp::kRead), 1u);
  std::vector<std::byte> got(kBlock);
  Status st = ReadSync(*dev, 0, got.data(), kBlock);
  ASSERT_EQ(st.code(), Code::kIntegrityError) << st.ToString();
  // The tag table is intact: reopening finds tag block 0 valid.
  EXPECT_EQ(st.message().find("tag block 0 was corrupt"), std::string::npos) << st.message();
}

// Format zeroes the tag table but not the data area: on a device that held
// anything before (its first 8 KiB blank), every block reads as an
// integrity error right after the format, and the message says the device
// was "reused without formatting" although Create has just formatted it
// (formatted_now() is true).
TEST(IntegrityAdversary, AFreshlyFormattedVolumeOnAUsedDeviceDoesNotBlameAMissingFormat) {
  auto mem = Mem();
  std::vector<std::byte> old(kBlock, std::byte{0x6b});
  for (uint64_t b = 2; b < mem->Info().size_bytes / kBlock; b++) mem->WriteRaw(b * kBlock, old.data(), kBlock);
  auto dev = *IntegrityDevice::Create(mem, {});
  ASSERT_TRUE(dev->formatted_now());
  std::vector<std::byte> got(kBlock);
  Status st = ReadSync(*dev, 5 * kBlock, got.data(), kBlock);
  // Either a fresh volume reads zeros (format v1 could zero, or treat the
  // old bytes as "never written" content), or the message must not claim
  // that formatting was skipped.
  if (!st.ok()) {
    EXPECT_EQ(st.message().find("reused without formatting"), std::string::npos) << st.message();
  }
}

// The crash model (crash/crash_replayer.h) keeps every failed write
// unflushed for ever: at a crash it may land, whole or torn, over anything.
// The layer instead trusts its read back (ResolveReadBack,
// integrity_device.cc:598): after a flush it reads the failed write's block,
// sees the old content and collapses the entry to {old} (count 1). When the
// failed write then lands at the crash, as the model allows, the block holds
// the new content and its durable entry rejects it: a false integrity error
// after a crash. Either the layer keeps accepting a failed write's content
// (its guard stays on record until a later write of the block is settled
// and even then the model lets the failed one land over it), or the model is
// too pessimistic (a failed write that completed before a flush was
// submitted has a fate decided by then) and crash_replayer.h must say so.
TEST(IntegrityAdversary, AFailedDataWriteThatLandsAtTheCrashIsNotAnIntegrityError) {
  auto mem = Mem();
  auto fault = std::make_shared<FaultDevice>(mem);
  auto log = std::make_shared<LogWritesDevice>(fault);  // logs the failed write as failed
  const std::vector<std::byte> initial(mem->Info().size_bytes);
  auto dev = *IntegrityDevice::Create(log, {});
  ASSERT_TRUE(WriteSync(*dev, 0, Pattern(0, 1).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());
  FaultRule r;
  r.op = BioOp::kWrite;
  r.offset = dev->LowerOffset(0);
  r.len = kBlock;
  r.count = 1;
  fault->AddRule(r);
  EXPECT_FALSE(WriteSync(*dev, 0, Pattern(0, 2).data(), kBlock).ok());
  ASSERT_TRUE(FlushSync(*dev).ok());  // block 0 read back: version 1; entry collapses to {v1}
  ASSERT_TRUE(WriteSync(*dev, kBlock, Pattern(1, 1).data(), kBlock).ok());  // writes tag block 0 with it
  ASSERT_TRUE(FlushSync(*dev).ok());
  CrashReplayer replayer(log->Snapshot(), initial);
  CrashState s = replayer.Build({replayer.log().size(), Unflushed::kApplyAll, 0, "end"});
  // The model settles a failed write at the next successful flush (as not
  // written: crash_replayer.h); the read back saw the same.
  ASSERT_EQ(s.unflushed_writes, 0u) << s.Describe();
  auto reopened = IntegrityDevice::Create(FromImage(s.images[0]), {});
  ASSERT_TRUE(reopened) << reopened.error().ToString();
  std::vector<std::byte> got(kBlock);
  Status st = ReadSync(**reopened, 0, got.data(), kBlock);
  EXPECT_TRUE(st.ok()) << s.Describe() << ": " << st.ToString();
}

// Commits chain by recursion: CommitFlushed (integrity_device.cc:531) and
// AbortCommit call Kick, which submits the next commit's tag writes; with a
// device below that completes inline, TagsWritten -> flush ->
// CommitFlushed -> Kick runs inside the previous Kick, and so on for as long
// as there is work. Writes queued on one block (each needs its own commit
// and settle flush) while the device below was briefly asynchronous are then
// drained by one ever-deeper call chain on the thread that completed the
// first one: the stack grows linearly with the queue (a few KiB per write)
// until it overflows. Measured here from the completion callbacks.
TEST(IntegrityAdversary, QueuedWritesToOneBlockDoNotRecurseOneStackFramePerCommit) {
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .manual_release = true});
  mem->HoldOnly(0, 0);  // format inline
  auto dev = *IntegrityDevice::Create(mem, {});
  mem->HoldOnly(dev->LowerOffset(0), kBlock);  // hold the first data write of block 0
  constexpr int kWrites = 200;
  std::vector<std::vector<std::byte>> bufs;
  for (int i = 0; i < kWrites; i++) bufs.push_back(Pattern(0, i + 1));
  std::mutex m;
  std::condition_variable cv;
  int left = kWrites;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (int i = 0; i < kWrites; i++) {
    auto bio = Bio::Make(BioOp::kWrite, 0, Stability::kStable);
    bio->AddSegment(bufs[i].data(), kBlock);
    bio->on_complete = [&](BioPtr, Status st) {
      int here = 0;
      auto a = reinterpret_cast<uintptr_t>(&here);
      std::lock_guard lk(m);
      EXPECT_TRUE(st.ok()) << st.ToString();
      lo = std::min(lo, a);
      hi = std::max(hi, a);
      if (--left == 0) cv.notify_all();
    };
    dev->Submit(std::move(bio));
  }
  mem->WaitForPendingWrites(1);
  mem->HoldOnly(0, 0);  // from now on the device below completes inline
  mem->ReleaseWrites();
  {
    std::unique_lock lk(m);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(10), [&] { return left == 0; }));
  }
  EXPECT_LT(hi - lo, 64u << 10) << "the completions of " << kWrites << " queued writes ran " << (hi - lo)
                                << " bytes of stack apart: one nested commit per write";
}

}  // namespace
}  // namespace stablecache
