// Adversarial review of the File's size on the medium (09e9021, the
// SCFILE01 record, doc/file_format.md). Each TEST asserts a behaviour that
// must hold: acknowledged sizes survive crashes, nothing unwritten is ever
// returned as data, bad media and bad arguments are refused clearly.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "block/metadata_record.h"
#include "block/stacked_device.h"
#include "cache/size_record.h"
#include "crash/crash_replayer.h"
#include "devices/fault_device.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

using namespace std::chrono_literals;
using testing::Pattern;
using testing::TempFile;
using Bytes = std::vector<std::byte>;

constexpr uint64_t kDev = 1 << 20;
constexpr uint64_t kSlotA = kDev - 8192;

std::shared_ptr<Cache> NewCache(uint32_t interval_ms = 3600 * 1000) {
  return *Cache::Create({.capacity_bytes = 1 << 20, .io_reserve_frames = 16, .writeback_interval_ms = interval_ms});
}

std::shared_ptr<MemoryDevice> NewMemory(uint64_t size = kDev) { return *MemoryDevice::Create({.size_bytes = size}); }

Bytes Raw(MemoryDevice& m, uint64_t off, size_t len) {
  Bytes v(len);
  m.ReadRaw(off, v.data(), len);
  return v;
}

// A fresh memory device holding a copy of `m`'s medium now (a crash).
std::shared_ptr<MemoryDevice> CopyOf(MemoryDevice& m) {
  auto c = NewMemory(m.Info().size_bytes);
  Bytes image = Raw(m, 0, m.Info().size_bytes);
  c->WriteRaw(0, image.data(), image.size());
  return c;
}

// The file size the medium's record holds (UINT64_MAX: none readable).
uint64_t MediumSize(MemoryDevice& m) {
  DecodedRecord a = DecodeRecord(Raw(m, m.Info().size_bytes - 8192, 4096), kFileSizeMagic);
  DecodedRecord b = DecodeRecord(Raw(m, m.Info().size_bytes - 4096, 4096), kFileSizeMagic);
  const DecodedRecord* best = nullptr;
  for (auto* d : {&a, &b})
    if (d->state == RecordState::kValid && (!best || d->record.generation > best->record.generation)) best = d;
  return best ? best->record.Get<uint64_t>(0) : UINT64_MAX;
}

Bytes ReadAll(File& f) {
  Bytes out(*f.Size());
  EXPECT_EQ(*f.Read(0, out), out.size());
  return out;
}

// A layer that holds flushes while armed, until the test lets them go.
class FlushGate final : public StackedDevice {
 public:
  explicit FlushGate(std::shared_ptr<BlockDevice> lower) : StackedDevice(std::move(lower), "flushgate", Stability::kUnstable) {}
  void Submit(BioPtr bio) override {
    {
      std::lock_guard lk(mu_);
      if (bio->op == BioOp::kFlush && hold_) {
        held_.push_back(std::move(bio));
        cv_.notify_all();
        return;
      }
    }
    lower_->Submit(std::move(bio));
  }
  void Hold(bool on) {
    std::deque<BioPtr> go;
    {
      std::lock_guard lk(mu_);
      hold_ = on;
      if (!on) go.swap(held_);
    }
    for (auto& b : go) lower_->Submit(std::move(b));
  }
  bool WaitHeld(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return !held_.empty(); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<BioPtr> held_;
  bool hold_ = false;
};

// ---------------------------------------------------------------------------
// A Sync during which some write failed writes no record (data_ok is
// false). It relies on the errseq to fail: but another call on the same
// handle (here SyncRange with kSyncWaitAfter) may report that error first,
// and the Sync then returned OK although the size it acknowledged never
// reached the medium: after a crash the file is shorter than a Sync said.
TEST(FileSizeAdversary, ASyncThatLeftTheSizeUnrecordedNeverReturnsOk) {
  auto mem = NewMemory();
  auto gate = std::make_shared<FlushGate>(mem);
  auto fault = std::make_shared<FaultDevice>(gate);
  auto cache = NewCache();
  auto f = std::move(*cache->Open(fault));
  const Bytes data = Pattern(8192, 1);
  ASSERT_TRUE(f->Write(0, data));
  gate->Hold(true);
  auto sync = std::async(std::launch::async, [&] { return f->Sync(); });
  ASSERT_TRUE(gate->WaitHeld()) << "the Sync's flush never came";
  // Meanwhile, through the same handle: a rewrite of page 0 whose write
  // fails, reported by SyncRange.
  ASSERT_TRUE(f->Write(0, Pattern(100, 2)));
  fault->AddRule({.op = BioOp::kWrite, .offset = 0, .len = 4096, .count = 1});
  EXPECT_FALSE(f->SyncRange(0, 4096, kSyncWrite | kSyncWaitAfter).ok());
  ASSERT_EQ(fault->injected(), 1u);
  gate->Hold(false);
  Status st = sync.get();
  EXPECT_TRUE(!st.ok() || MediumSize(*mem) == data.size())
      << "Sync returned OK but the medium holds a file of " << MediumSize(*mem) << " bytes, not " << data.size();
  (void)f->Close();
}

// ---------------------------------------------------------------------------
// A failed Close leaves its size to the flusher (PersistSizeOfClosedSpace).
// The flusher picks such spaces first and syncs them later; a handle
// opened in between may extend the file (holes, never written). The
// flusher then recorded the extended size over blocks that still hold the
// bytes of a file truncated long ago: after a crash they read as data.
TEST(FileSizeAdversary, TheFlusherNeverRecordsASizeOverHolesOfAReopenedFile) {
  auto cache = NewCache(/*interval_ms=*/10);
  struct Stack {
    std::shared_ptr<MemoryDevice> mem;
    std::shared_ptr<FlushGate> gate;
    std::shared_ptr<FaultDevice> top;
  };
  Stack s1, s2;
  for (Stack* s : {&s1, &s2}) {
    s->mem = NewMemory();
    s->gate = std::make_shared<FlushGate>(s->mem);
    s->top = std::make_shared<FaultDevice>(s->gate);
  }
  // The flusher visits spaces in device-pointer order: the first one's
  // flush is held while the second one waits its turn in the same pass.
  Stack& blocker = s1.top.get() < s2.top.get() ? s1 : s2;
  Stack& victim = s1.top.get() < s2.top.get() ? s2 : s1;
  const FaultRule record_fails{.op = BioOp::kWrite, .offset = kSlotA, .len = 8192};
  {
    auto f = std::move(*cache->Open(victim.top));
    ASSERT_TRUE(f->Write(0, Pattern(3 * 4096, 3)));  // "old" bytes, truncated away below
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_TRUE(f->Truncate(0).ok());
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_EQ(MediumSize(*victim.mem), 0u);
    ASSERT_TRUE(f->Write(0, Pattern(4096, 4)));
    victim.top->AddRule(record_fails);
    ASSERT_FALSE(f->Close().ok());  // the data is out; its size is left to the flusher
  }
  {
    auto f = std::move(*cache->Open(blocker.top));
    ASSERT_TRUE(f->Write(0, Pattern(4096, 5)));
    blocker.top->AddRule(record_fails);
    ASSERT_FALSE(f->Close().ok());
  }
  // Let the flusher retry the victim's record (still failing) a few times:
  // CI under ASan hit that by chance; now every run takes that path.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  blocker.gate->Hold(true);
  ASSERT_TRUE(blocker.gate->WaitHeld()) << "the flusher never retried the blocker's size";
  // The victim was picked in the same pass. Heal it, reopen, extend.
  victim.top->ClearRules();
  auto h = std::move(*cache->Open(victim.top));
  ASSERT_EQ(*h->Size(), 4096u);
  ASSERT_TRUE(h->Truncate(3 * 4096).ok());  // pages 1 and 2: holes, zero
  blocker.gate->Hold(false);
  auto deadline = std::chrono::steady_clock::now() + 1s;
  while (MediumSize(*victim.mem) == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  // A crash now.
  auto crashed = CopyOf(*victim.mem);
  {
    auto g = NewCache()->Open(crashed);
    ASSERT_TRUE(g) << g.error().ToString();
    const Bytes got = ReadAll(**g);
    for (size_t i = 4096; i < got.size(); i++)
      ASSERT_EQ(got[i], std::byte{0}) << "byte " << i << " of a file of " << got.size()
                                      << " bytes holds data truncated away before it was extended";
  }
  blocker.top->ClearRules();
  // A flusher pass before the Hold may have retried the victim's record
  // while its rule still failed it. That background error is reported once,
  // to this handle (errseq: an open after an unseen error sees it), so Close
  // may return it; either way Close records the size it covers.
  Status closed = h->Close();
  EXPECT_EQ(MediumSize(*victim.mem), 3 * 4096u) << closed.ToString();
}

// ---------------------------------------------------------------------------
// Crash at every point of extend/sync/truncate/(sync)/extend/sync: the size
// is one the medium was allowed to hold, and every byte below it is what a
// Sync acknowledged or was written later, never bytes from before a
// truncate that reached the medium, and the gap a truncate-and-extend left
// reads as zero once its size is on the medium.
struct Step {
  enum Kind { kWrite, kTruncate, kSync } kind;
  uint64_t offset = 0;  // kWrite: where; kTruncate: new size
  uint64_t len = 0;
  uint32_t seed = 0;
};

// Runs `steps` on a logged device, then rebuilds the medium at every point
// of the log (unflushed writes dropped, applied, or reordered and torn) and
// checks it: the size is one a Sync recorded (sizes differ per Sync in the
// sequences below, so the size names the Sync), and every byte below it is
// what that Sync acknowledged, or a value the file held there later
// (written after the Sync, or the zeros of a truncate and re-extension).
void CrashSweep(const std::vector<Step>& steps, uint32_t flusher_interval_ms) {
  auto mem = NewMemory();
  auto log = std::make_shared<LogWritesDevice>(mem);
  std::vector<Bytes> after_step;            // the model file after each step
  std::vector<size_t> sync_step{SIZE_MAX};  // step index of each Sync; the format first
  std::vector<Bytes> synced{Bytes{}};
  Bytes model;
  {
    auto cache = NewCache(flusher_interval_ms);
    auto f = std::move(*cache->Open(log));
    for (const Step& s : steps) {
      switch (s.kind) {
        case Step::kWrite: {
          const Bytes d = Pattern(s.len, s.seed);
          ASSERT_TRUE(f->Write(s.offset, d));
          if (model.size() < s.offset + s.len) model.resize(s.offset + s.len);
          std::copy(d.begin(), d.end(), model.begin() + s.offset);
          break;
        }
        case Step::kTruncate:
          ASSERT_TRUE(f->Truncate(s.offset).ok());
          model.resize(s.offset);
          break;
        case Step::kSync:
          ASSERT_TRUE(f->Sync().ok());
          sync_step.push_back(after_step.size());
          synced.push_back(model);
          break;
      }
      after_step.push_back(model);
      if (flusher_interval_ms < 100) std::this_thread::sleep_for(3ms * flusher_interval_ms);
    }
    ASSERT_TRUE(f->Close().ok());
  }
  CrashReplayer replayer(log->Snapshot(), Bytes(kDev));
  const uint64_t n = replayer.log().size();
  size_t checked = 0;
  for (uint64_t pos = 0; pos <= n; pos++) {
    for (Unflushed u : {Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear}) {
      for (uint64_t seed = 0; seed < (u == Unflushed::kDropReorderTear ? 3u : 1u); seed++) {
        CrashState st = replayer.Build(CrashPoint{pos, u, seed, "sweep"});
        SCOPED_TRACE(st.Describe());
        auto medium = NewMemory();
        medium->WriteRaw(0, st.images[0].data(), st.images[0].size());
        auto g = NewCache()->Open(medium);
        if (!g && MediumSize(*medium) == UINT64_MAX && Raw(*medium, kSlotA, 8192) == Bytes(8192))
          continue;  // not formatted yet
        ASSERT_TRUE(g) << g.error().ToString();
        const Bytes got = ReadAll(**g);
        size_t k = synced.size();
        for (size_t j = synced.size(); j-- > 0;)
          if (synced[j].size() == got.size()) {
            k = j;
            break;
          }
        ASSERT_LT(k, synced.size()) << "size " << got.size() << " was never synced";
        for (size_t i = 0; i < got.size(); i++) {
          if (got[i] == synced[k][i]) continue;
          bool later = false;
          for (size_t j = sync_step[k] == SIZE_MAX ? 0 : sync_step[k] + 1; j < after_step.size() && !later; j++)
            later = i < after_step[j].size() && after_step[j][i] == got[i];
          ASSERT_TRUE(later) << "byte " << i << " of a file of " << got.size() << " bytes (Sync " << k
                             << ") is neither what that Sync acknowledged nor written later";
        }
        checked++;
      }
    }
  }
  EXPECT_GT(checked, n);
}

constexpr uint64_t kP = 4096;

TEST(FileSizeAdversary, CrashAnywhereInExtendSyncTruncateSyncExtendSync) {
  CrashSweep({{Step::kWrite, 0, 5 * kP + 100, 11},
              {Step::kSync},
              {Step::kTruncate, 6000},
              {Step::kSync},
              {Step::kWrite, 3 * kP + 1000, 2 * kP, 12},
              {Step::kSync}},
             3600 * 1000);
}

TEST(FileSizeAdversary, CrashAnywhereInExtendSyncTruncateExtendSyncWithBackgroundWriteback) {
  CrashSweep({{Step::kWrite, 0, 5 * kP + 100, 13},
              {Step::kSync},
              {Step::kTruncate, 6000},
              {Step::kWrite, 3 * kP + 1000, 2 * kP, 14},
              {Step::kWrite, 100, 50, 15},
              {Step::kSync},
              {Step::kTruncate, 2 * kP},
              {Step::kTruncate, 7 * kP},
              {Step::kSync}},
             5);
}

// A truncate down and an extension, synced: the gap reads zero after a
// crash, whatever the blocks held before.
TEST(FileSizeAdversary, TheGapOfATruncateAndExtendReadsZeroAfterReopen) {
  auto mem = NewMemory();
  {
    auto f = std::move(*NewCache()->Open(mem));
    ASSERT_TRUE(f->Write(0, Pattern(6 * kP, 16)));
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_TRUE(f->Truncate(1000).ok());
    ASSERT_TRUE(f->Write(5 * kP, Pattern(100, 17)));
    ASSERT_TRUE(f->Sync().ok());
    auto crashed = CopyOf(*mem);  // no Close
    auto g = NewCache()->Open(crashed);
    ASSERT_TRUE(g) << g.error().ToString();
    const Bytes got = ReadAll(**g);
    ASSERT_EQ(got.size(), 5 * kP + 100);
    EXPECT_EQ(Bytes(got.begin() + 1000, got.begin() + 5 * kP), Bytes(5 * kP - 1000));
    (void)f->Close();
  }
}

// ---------------------------------------------------------------------------
// A Sync racing a truncate and re-extension: the Sync's flush may have
// written the old bytes only, so its record must not cover the new ones.
TEST(FileSizeAdversary, ASyncRacingATruncateAndReExtensionRecordsNoSizeOverUnflushedBytes) {
  auto mem = NewMemory();
  auto gate = std::make_shared<FlushGate>(mem);
  auto cache = NewCache();
  auto f = std::move(*cache->Open(gate));
  ASSERT_TRUE(f->Write(0, Pattern(4 * kP, 18)));
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(f->Write(4 * kP, Pattern(kP, 19)));  // 5 pages
  gate->Hold(true);
  auto sync = std::async(std::launch::async, [&] { return f->Sync(); });
  ASSERT_TRUE(gate->WaitHeld());
  ASSERT_TRUE(f->Truncate(kP).ok());
  ASSERT_TRUE(f->Truncate(5 * kP).ok());  // pages 1..4 zero now, in memory only
  gate->Hold(false);
  ASSERT_TRUE(sync.get().ok());
  auto g = NewCache()->Open(CopyOf(*mem));
  ASSERT_TRUE(g);
  const Bytes got = ReadAll(**g);
  EXPECT_LE(got.size(), kP) << "the racing Sync recorded a size over bytes its flush did not cover";
  (void)f->Close();
}

// ---------------------------------------------------------------------------
// Bad media.

// A bit flipped anywhere in either slot: Open gives the other slot's size
// (one a Sync acknowledged) or refuses; never another number.
TEST(FileSizeAdversary, ABitFlipInEitherSlotFallsBackToTheOtherOrRefuses) {
  auto mem = NewMemory();
  {
    auto f = std::move(*NewCache()->Open(mem));
    ASSERT_TRUE(f->Write(0, Pattern(5000, 20)));
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_TRUE(f->Write(5000, Pattern(4000, 21)));
    ASSERT_TRUE(f->Close().ok());
  }
  const Bytes image = Raw(*mem, 0, kDev);
  for (uint64_t slot : {kSlotA, kSlotA + 4096}) {
    for (size_t byte = 0; byte < 4096; byte += (byte < 96 ? 1 : 251)) {
      auto m = NewMemory();
      m->WriteRaw(0, image.data(), image.size());
      Bytes b = Raw(*m, slot + byte, 1);
      b[0] ^= std::byte(1u << (byte % 8));
      m->WriteRaw(slot + byte, b.data(), 1);
      auto cache = *Cache::Create({.capacity_bytes = 64 << 10, .io_reserve_frames = 4});
      auto g = cache->Open(m);
      if (!g) continue;  // refused: fine
      const uint64_t size = *(*g)->Size();
      EXPECT_TRUE(size == 5000 || size == 9000) << "slot " << slot << " byte " << byte << ": size " << size;
    }
  }
  // Both slots corrupt: refused, naming it.
  auto m = NewMemory();
  m->WriteRaw(0, image.data(), image.size());
  for (uint64_t slot : {kSlotA, kSlotA + 4096}) {
    Bytes b = Raw(*m, slot + 70, 1);
    b[0] ^= std::byte{4};
    m->WriteRaw(slot + 70, b.data(), 1);
  }
  auto g = NewCache()->Open(m);
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().message().find("corrupt"), std::string::npos) << g.error().ToString();
}

TEST(FileSizeAdversary, DevicesTooSmallForAPageAndTheRecordAreRefusedClearly) {
  for (uint64_t size : {uint64_t{4096}, uint64_t{8192}}) {
    auto m = NewMemory(size);
    auto f = NewCache()->Open(m);
    ASSERT_FALSE(f) << size;
    EXPECT_EQ(f.error().code(), Code::kNoSpace);
    EXPECT_NE(f.error().message().find("file size record"), std::string::npos) << f.error().ToString();
    EXPECT_EQ(Raw(*m, 0, size), Bytes(size)) << "a refused device was written";
  }
  auto m = NewMemory(12288);
  auto f = NewCache()->Open(m);
  ASSERT_TRUE(f) << f.error().ToString();
  ASSERT_TRUE((*f)->Write(0, Pattern(4096, 22)));
  EXPECT_FALSE((*f)->Write(4096, Pattern(1, 23)));
  ASSERT_TRUE((*f)->Close().ok());
  auto g = NewCache()->Open(m);
  ASSERT_TRUE(g);
  EXPECT_EQ(*(*g)->Size(), 4096u);
}

// A layer that reports a size of its own choosing (not a multiple of
// 4 KiB, in 512-byte blocks), over a larger device.
class UnalignedView final : public StackedDevice {
 public:
  UnalignedView(std::shared_ptr<BlockDevice> lower, uint64_t size)
      : StackedDevice(std::move(lower), "unaligned", Stability::kUnstable) {
    info_.size_bytes = size;
    info_.logical_block_size = 512;
  }
  void Submit(BioPtr bio) override { lower_->Submit(std::move(bio)); }
};

// A device whose size is not a multiple of 4 KiB: the record sits below the
// rounded-down end, and a reopen finds it; one of 12 KiB less 512 bytes has
// no room for a page and the record.
TEST(FileSizeAdversary, AnUnalignedDeviceSizeKeepsItsRecord) {
  auto mem = NewMemory(kDev + 4096);
  {
    auto f = std::move(*NewCache()->Open(std::make_shared<UnalignedView>(mem, kDev + 1536)));
    ASSERT_TRUE(f->Write(kDev - 8192 - 10, Pattern(10, 24)));
    EXPECT_FALSE(f->Write(kDev - 8192 - 10, Pattern(11, 24)));
    ASSERT_TRUE(f->Close().ok());
  }
  EXPECT_EQ(Raw(*mem, kDev, 4096), Bytes(4096)) << "something was written past the rounded-down end";
  auto g = NewCache()->Open(std::make_shared<UnalignedView>(mem, kDev + 1536));
  ASSERT_TRUE(g) << g.error().ToString();
  EXPECT_EQ(*(*g)->Size(), kDev - 8192);
  // The same medium seen 4 KiB larger: the record is not at its end.
  auto grown = NewCache()->Open(std::make_shared<UnalignedView>(mem, kDev + 4096 + 512));
  ASSERT_FALSE(grown) << "a device whose size changed opened as a new file";
  auto h = NewCache()->Open(std::make_shared<UnalignedView>(NewMemory(16384), 12288 - 512));
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code(), Code::kNoSpace) << h.error().ToString();
}

// The same medium seen 8 KiB or more larger (a file leaf reopened with a
// bigger size=, which grows the file): the end is blank, and Open formats
// a new empty file there without a word; the old record, now inside the
// file area, is never looked at, and the file's data is gone from view
// (doc/file_format.md "Limits" says so).
// DISABLED: fails: Open succeeds with size 0 instead of finding the 9000
// bytes or refusing. The fix is not local: the record must be found again
// (a copy at a fixed place, e.g. in block 0 of a layer, or the old device
// size kept where a grown device still has it) or growth refused by the
// leaf.
TEST(FileSizeAdversary, AGrownDeviceIsNotOpenedAsANewEmptyFile) {
  auto mem = NewMemory(2 * kDev);
  {
    auto f = std::move(*NewCache()->Open(std::make_shared<UnalignedView>(mem, kDev)));
    ASSERT_TRUE(f->Write(0, Pattern(9000, 30)));
    ASSERT_TRUE(f->Close().ok());
  }
  auto g = NewCache()->Open(std::make_shared<UnalignedView>(mem, 2 * kDev));
  if (g) {
    EXPECT_EQ(*(*g)->Size(), 9000u) << "a grown device opened as a new file";
  }
}

// Writes past the limit name it; an initial size past it, on a device
// that already holds a file, is a conflict, not a new format.
TEST(FileSizeAdversary, AnInitialSizePastTheLimitOnAnExistingFileIsAConflict) {
  auto m = NewMemory();
  ASSERT_TRUE((*NewCache()->Open(m, {.initial_size = 100}))->Close().ok());
  auto f = NewCache()->Open(m, {.initial_size = kDev});
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("holds a file of 100 bytes"), std::string::npos) << f.error().ToString();
  auto g = NewCache()->Open(m);
  ASSERT_TRUE(g);
  EXPECT_EQ(*(*g)->Size(), 100u);
  auto w = (*g)->Write(kSlotA - 1, Pattern(2, 25));
  ASSERT_FALSE(w);
  EXPECT_NE(w.error().message().find(std::to_string(kSlotA)), std::string::npos) << w.error().ToString();
  EXPECT_EQ(MediumSize(*m), 100u);
}

// ---------------------------------------------------------------------------
// Handles and caches.

// Two handles: one extends, the other syncs; a crash after that Sync keeps
// the extension. A handle dropped without Close, then reopened, too.
TEST(FileSizeAdversary, AnotherHandlesSyncCoversTheExtensionAndADroppedHandleKeepsIt) {
  auto mem = NewMemory();
  auto cache = NewCache();
  auto a = std::move(*cache->Open(mem));
  auto b = std::move(*cache->Open(mem));
  ASSERT_TRUE(a->Write(0, Pattern(7000, 26)));
  ASSERT_TRUE(b->Sync().ok());
  {
    auto g = NewCache()->Open(CopyOf(*mem));
    ASSERT_TRUE(g);
    EXPECT_EQ(*(*g)->Size(), 7000u);
  }
  ASSERT_TRUE(b->Write(7000, Pattern(3000, 27)));
  a.reset();  // dropped: syncs, size recorded
  b.reset();
  EXPECT_EQ(MediumSize(*mem), 10000u);
  auto c = cache->Open(mem, {.initial_size = 10000});
  ASSERT_TRUE(c) << c.error().ToString();
}

// Two caches on one device keep two generations counters and two sizes:
// each overwrites the other's record and the last Sync wins, whatever the
// other acknowledged. A second cache's Open should be refused (the device
// is open elsewhere); nothing on BlockDevice says so today.
// DISABLED: fails: cache B's Open succeeds, and after A's Sync of 9000
// bytes and B's Sync of a 10-byte truncate, the medium holds 10 bytes:
// A's acknowledged data is cut off. The fix needs a claim on the device
// (an exclusive open in BlockDevice or the stack), not local to the cache.
TEST(FileSizeAdversary, DISABLED_ASecondCacheOnAnOpenDeviceIsRefused) {
  auto mem = NewMemory();
  auto ca = NewCache(), cb = NewCache();
  auto a = std::move(*ca->Open(mem));
  auto b = cb->Open(mem);
  EXPECT_FALSE(b) << "a second cache opened a device another cache has open";
  if (!b) return;
  ASSERT_TRUE(a->Write(0, Pattern(9000, 28)));
  ASSERT_TRUE(a->Sync().ok());
  ASSERT_TRUE((*b)->Truncate(10).ok());
  ASSERT_TRUE((*b)->Sync().ok());
  EXPECT_EQ(MediumSize(*mem), 9000u) << "cache A's acknowledged size was overwritten by cache B";
}

// ---------------------------------------------------------------------------
// Stacks with file leaves.

TEST(FileSizeAdversary, TheRecordGoesThroughIntegrityAndAMirrorAndComesBackByResync) {
  TempFile t1("fsadv1"), t2("fsadv2"), t3("fsadv3");
  const Bytes data = Pattern(5 * kP + 33, 29);
  const std::string integ = fmt::format("integrity,file:{}(size=2M)", t1.path());
  const std::string mirror = fmt::format("mirror(file:{}(size=2M),file:{}(size=2M))", t2.path(), t3.path());
  for (const std::string& spec : {integ, mirror}) {
    SCOPED_TRACE(spec);
    {
      auto dev = BuildStack(spec);
      ASSERT_TRUE(dev) << dev.error().ToString();
      auto f = NewCache()->Open(*dev);
      ASSERT_TRUE(f) << f.error().ToString();
      ASSERT_TRUE((*f)->Write(0, data));
      ASSERT_TRUE((*f)->Close().ok());
    }
    auto dev = BuildStack(spec);
    ASSERT_TRUE(dev) << dev.error().ToString();
    auto f = NewCache()->Open(*dev);
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(*(*f)->Size(), data.size());
    EXPECT_EQ(ReadAll(**f), data);
  }
  // Leg 1 of the mirror replaced by a blank file: resync gives it the
  // record too; then leg 0 lost: the file opens from leg 1 alone.
  std::filesystem::remove(t3.path());
  {
    std::vector<std::string> warnings;
    auto dev = BuildStack(mirror, {.warnings = &warnings});
    ASSERT_TRUE(dev) << dev.error().ToString();
    auto f = NewCache()->Open(*dev);
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(*(*f)->Size(), data.size());
  }
  std::filesystem::remove(t2.path());
  auto dev = BuildStack(mirror);
  ASSERT_TRUE(dev) << dev.error().ToString();
  auto f = NewCache()->Open(*dev);
  ASSERT_TRUE(f) << f.error().ToString();
  EXPECT_EQ(*(*f)->Size(), data.size());
  EXPECT_EQ(ReadAll(**f), data);
}

}  // namespace
}  // namespace stablecache
