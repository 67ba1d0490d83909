// Randomised crash exploration of the integrity layer (adversarial review):
// one seed per scenario in CI; EXPLORE_SEEDS=30 (and EXPLORE_POINTS,
// EXPLORE_FAIL) for a longer campaign.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <map>
#include <random>

#include "crash/crash_replayer.h"
#include "devices/fault_device.h"
#include "devices/integrity_device.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "devices/integrity_test_util.h"
#include "stablecache/cache.h"

namespace stablecache {
namespace {

using namespace integrity_test;

int Env(const char* n, int d) {
  const char* v = getenv(n);
  return v ? atoi(v) : d;
}

// fault_below_log: integ -> logwrites -> fault -> mem (failed writes logged as failed)
// else:            integ -> fault -> logwrites -> mem (failed bios never reach the log)
void Explore(uint64_t seed, bool fault_below_log, int fail_pct) {
  constexpr uint64_t kBlocks = 300;  // spans two tag blocks
  auto mem = Mem(2 << 20);
  std::shared_ptr<LogWritesDevice> log;
  std::shared_ptr<FaultDevice> fault;
  if (fault_below_log) {
    fault = std::make_shared<FaultDevice>(mem);
    log = std::make_shared<LogWritesDevice>(fault);
  } else {
    log = std::make_shared<LogWritesDevice>(mem);
    fault = std::make_shared<FaultDevice>(log);
  }
  const std::vector<std::byte> initial(mem->Info().size_bytes);
  std::shared_ptr<BlockDevice> top = fault_below_log ? std::static_pointer_cast<BlockDevice>(log) : fault;
  auto dev = *IntegrityDevice::Create(top, {});
  const uint64_t tag0 = dev->geometry().tag_start * kBlock;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint32_t>> versions(kBlocks);
  for (auto& v : versions) v.push_back(0);
  std::vector<size_t> last_ok(kBlocks, 0);  // index of last acked version
  std::map<uint64_t, std::vector<size_t>> flushed_at;
  uint32_t ver = 1;
  auto blockpick = [&] {
    uint64_t r = rng() % 10;
    if (r < 6) return rng() % 8;             // hot blocks in tag block 0
    if (r < 8) return 250 + rng() % 10;      // straddle tag blocks
    return rng() % kBlocks;
  };
  for (int op = 0; op < 120; op++) {
    // Random faults for the next few bios.
    if (static_cast<int>(rng() % 100) < fail_pct) {
      FaultRule r;
      switch (rng() % 4) {
        case 0: r.op = BioOp::kFlush; break;
        case 1: r.op = BioOp::kWrite; r.offset = tag0; r.len = 2 * kBlock; break;  // tag blocks
        default: r.op = BioOp::kWrite; r.offset = dev->LowerOffset(0); r.len = UINT64_MAX / 2; break;  // data
      }
      r.skip = rng() % 3;
      r.count = 1;
      fault->AddRule(r);
    }
    if (rng() % 4 == 0) {
      Status st = FlushSync(*dev);
      if (st.ok()) {
        flushed_at[log->Mark("flushed")] = last_ok;
      }
      continue;
    }
    const uint64_t b = blockpick();
    const uint64_t n = 1 + rng() % std::min<uint64_t>(3, kBlocks - b);
    std::vector<std::byte> buf;
    const uint32_t v = ver++;
    for (uint64_t j = b; j < b + n; j++) {
      versions[j].push_back(v);
      auto p = Pattern(j, v);
      buf.insert(buf.end(), p.begin(), p.end());
    }
    Status st = WriteSync(*dev, b * kBlock, buf.data(), static_cast<uint32_t>(buf.size()));
    if (st.ok())
      for (uint64_t j = b; j < b + n; j++) last_ok[j] = versions[j].size() - 1;
  }
  fault->ClearRules();
  CrashReplayer replayer(log->Snapshot(), initial);
  auto points = replayer.PlanCrashPoints({Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear},
                                         Env("EXPLORE_POINTS", 150), seed);
  std::vector<std::byte> got(kBlock);
  for (const CrashPoint& p : points) {
    CrashState s = replayer.Build(p);
    auto reopened = IntegrityDevice::Create(FromImage(s.images[0]), {});
    ASSERT_TRUE(reopened) << s.Describe() << ": " << reopened.error().ToString();
    auto it = flushed_at.lower_bound(p.position);
    const std::vector<size_t>* flushed = it == flushed_at.begin() ? nullptr : &std::prev(it)->second;
    for (uint64_t b = 0; b < kBlocks; b++) {
      Status st = ReadSync(**reopened, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << "seed " << seed << " " << s.Describe() << " block " << b << ": " << st.ToString();
      bool zero = got == std::vector<std::byte>(kBlock);
      uint32_t gv = 0;
      if (!zero) std::memcpy(&gv, got.data() + 8, 4);
      auto& vs = versions[b];
      const size_t from = flushed ? (*flushed)[b] : 0;
      bool allowed = false;
      for (size_t k = from; k < vs.size() && !allowed; k++)
        allowed = vs[k] == gv && (gv == 0 ? zero : got == Pattern(b, gv));
      ASSERT_TRUE(allowed) << "seed " << seed << " " << s.Describe() << " block " << b << " holds version " << gv
                           << (zero ? " (zeros)" : "") << " flushed idx " << from;
    }
    // Reopened volume: write / flush / read every block, then reopen again.
    auto& d = **reopened;
    for (uint64_t b = 0; b < 10; b++) {
      ASSERT_TRUE(WriteSync(d, b * kBlock, Pattern(b, 100000).data(), kBlock).ok()) << s.Describe();
    }
    ASSERT_TRUE(FlushSync(d).ok());
    for (uint64_t b = 0; b < kBlocks; b++) {
      Status st = ReadSync(d, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << "after reopen+write, " << s.Describe() << " block " << b << ": " << st.ToString();
    }
  }
}

TEST(IntegrityExplore, Realistic) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) Explore(1000 + s, false, Env("EXPLORE_FAIL", 15));
}
TEST(IntegrityExplore, FaultBelowLog) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) Explore(2000 + s, true, Env("EXPLORE_FAIL", 15));
}
TEST(IntegrityExplore, NoFaults) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) Explore(3000 + s, false, 0);
}

}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {
// Async: late-copy memory below the log, batches of concurrent writes
// (overlapping allowed), reads of untouched blocks racing the commits.
void ExploreAsync(uint64_t seed, bool faults = false) {
  constexpr uint64_t kBlocks = 300;
  auto mem = *MemoryDevice::Create({.size_bytes = 2 << 20, .late_copy = true, .delay = std::chrono::microseconds(100)});
  auto log = std::make_shared<LogWritesDevice>(mem);
  auto fault = std::make_shared<FaultDevice>(log);
  const std::vector<std::byte> initial(mem->Info().size_bytes);
  auto dev = *IntegrityDevice::Create(fault, {});
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint32_t>> versions(kBlocks);
  for (auto& v : versions) v.push_back(0);
  std::vector<size_t> last_ok(kBlocks, 0);
  std::map<uint64_t, std::vector<size_t>> flushed_at;
  uint32_t ver = 1;
  const uint64_t tag0 = dev->geometry().tag_start * kBlock;
  for (int round = 0; round < 25; round++) {
    if (faults && rng() % 3 == 0) {
      FaultRule r;
      switch (rng() % 4) {
        case 0: r.op = BioOp::kFlush; break;
        case 1: r.op = BioOp::kWrite; r.offset = tag0; r.len = 2 * kBlock; break;
        default: r.op = BioOp::kWrite; r.offset = dev->LowerOffset(0); r.len = UINT64_MAX / 2; break;
      }
      r.skip = rng() % 3;
      r.count = 1;
      fault->AddRule(r);
    }
    const int k = 1 + rng() % 8;
    std::vector<bool> touched(kBlocks);
    struct Op { uint64_t b, n; std::vector<std::byte> buf; std::vector<size_t> idx; };
    std::vector<Op> ops;
    for (int i = 0; i < k; i++) {
      Op o;
      o.b = rng() % 3 == 0 ? 250 + rng() % 8 : rng() % 6;
      o.n = 1 + rng() % 3;
      const uint32_t v = ver++;
      for (uint64_t j = o.b; j < o.b + o.n; j++) {
        versions[j].push_back(v);
        o.idx.push_back(versions[j].size() - 1);
        touched[j] = true;
        auto p = Pattern(j, v);
        o.buf.insert(o.buf.end(), p.begin(), p.end());
      }
      ops.push_back(std::move(o));
    }
    std::mutex m;
    std::condition_variable cv;
    int left = static_cast<int>(ops.size());
    std::vector<Status> sts(ops.size());
    for (size_t i = 0; i < ops.size(); i++) {
      auto bio = Bio::Make(BioOp::kWrite, ops[i].b * kBlock, Stability::kStable);
      bio->AddSegment(ops[i].buf.data(), static_cast<uint32_t>(ops[i].buf.size()));
      bio->on_complete = [&, i](BioPtr, Status st) {
        std::lock_guard lk(m);
        sts[i] = st;
        if (--left == 0) cv.notify_all();
      };
      dev->Submit(std::move(bio));
    }
    // Reads of untouched blocks race the commits.
    std::vector<std::byte> got(kBlock);
    for (int r = 0; r < 4; r++) {
      uint64_t b = rng() % 8;
      if (touched[b] || faults) continue;
      Status st = ReadSync(*dev, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << "racing read block " << b << ": " << st.ToString();
      uint32_t gv = 0;
      if (got != std::vector<std::byte>(kBlock)) std::memcpy(&gv, got.data() + 8, 4);
      ASSERT_EQ(gv, versions[b][last_ok[b]]) << "block " << b;
    }
    {
      std::unique_lock lk(m);
      cv.wait(lk, [&] { return left == 0; });
    }
    for (size_t i = 0; i < ops.size(); i++) {
      if (!faults) {
        ASSERT_TRUE(sts[i].ok()) << sts[i].ToString();
      }
      if (!sts[i].ok()) continue;
      for (uint64_t j = 0; j < ops[i].n; j++) last_ok[ops[i].b + j] = std::max(last_ok[ops[i].b + j], ops[i].idx[j]);
    }
    if (rng() % 3 == 0) {
      Status fst = FlushSync(*dev);
      if (!faults) {
        ASSERT_TRUE(fst.ok());
      }
      if (fst.ok()) flushed_at[log->Mark("flushed")] = last_ok;
    }
  }
  fault->ClearRules();
  mem->WaitForPendingAtMost(0);
  CrashReplayer replayer(log->Snapshot(), initial);
  auto points = replayer.PlanCrashPoints({Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear},
                                         Env("EXPLORE_POINTS", 150), seed);
  std::vector<std::byte> got(kBlock);
  for (const CrashPoint& p : points) {
    CrashState s = replayer.Build(p);
    auto reopened = IntegrityDevice::Create(FromImage(s.images[0]), {});
    ASSERT_TRUE(reopened) << s.Describe() << ": " << reopened.error().ToString();
    auto it = flushed_at.lower_bound(p.position);
    const std::vector<size_t>* flushed = it == flushed_at.begin() ? nullptr : &std::prev(it)->second;
    for (uint64_t b = 0; b < kBlocks; b++) {
      Status st = ReadSync(**reopened, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << "seed " << seed << " " << s.Describe() << " block " << b << ": " << st.ToString();
      bool zero = got == std::vector<std::byte>(kBlock);
      uint32_t gv = 0;
      if (!zero) std::memcpy(&gv, got.data() + 8, 4);
      auto& vs = versions[b];
      const size_t from = flushed ? (*flushed)[b] : 0;
      bool allowed = false;
      for (size_t k = from; k < vs.size() && !allowed; k++)
        allowed = vs[k] == gv && (gv == 0 ? zero : got == Pattern(b, gv));
      ASSERT_TRUE(allowed) << "seed " << seed << " " << s.Describe() << " block " << b << " holds version " << gv
                           << (zero ? " (zeros)" : "") << " flushed idx " << from;
    }
  }
}
TEST(IntegrityExplore, Async) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) ExploreAsync(4000 + s);
}
TEST(IntegrityExplore, AsyncFaults) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) ExploreAsync(7000 + s, true);
}
}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {
// Drop the whole stack with writes queued (overlapping: some wait in the
// commit queue), flushes and reads in flight; every bio must complete.
void DropInFlight(uint64_t seed, bool faults) {
  auto mem = *MemoryDevice::Create({.size_bytes = 2 << 20, .late_copy = true, .delay = std::chrono::microseconds(300)});
  std::shared_ptr<BlockDevice> below = mem;
  std::shared_ptr<FaultDevice> fault;
  if (faults) {
    fault = std::make_shared<FaultDevice>(mem);
    below = fault;
  }
  auto dev = *IntegrityDevice::Create(below, {});
  if (faults) {
    FaultRule r;
    r.op = BioOp::kFlush;
    r.skip = 2;
    r.count = 3;
    fault->AddRule(r);
    FaultRule w;
    w.op = BioOp::kWrite;
    w.skip = 5;
    w.count = 4;
    fault->AddRule(w);
  }
  std::mt19937_64 rng(seed);
  auto left = std::make_shared<std::atomic<int>>(0);
  auto bufs = std::make_shared<std::vector<std::vector<std::byte>>>();
  for (int i = 0; i < 60; i++) bufs->push_back(Pattern(rng() % 4, i + 1));
  for (int i = 0; i < 60; i++) {
    const int kind = rng() % 6;
    BioPtr bio;
    if (kind == 0) {
      bio = Bio::Make(BioOp::kFlush, 0, Stability::kStable);
    } else if (kind == 1) {
      bio = Bio::Make(BioOp::kRead, (10 + rng() % 4) * kBlock, Stability::kStable);
      bio->AddSegment((*bufs)[i].data(), kBlock);
    } else {
      uint64_t b;
      std::memcpy(&b, (*bufs)[i].data(), 8);
      bio = Bio::Make(BioOp::kWrite, b * kBlock, Stability::kStable);
      bio->AddSegment((*bufs)[i].data(), kBlock);
    }
    left->fetch_add(1);
    bio->on_complete = [left, bufs](BioPtr, Status) {
      left->fetch_sub(1);
      left->notify_all();
    };
    dev->Submit(std::move(bio));
  }
  dev.reset();
  fault.reset();
  below.reset();
  mem.reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (left->load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(left->load(), 0) << "bios never completed after the stack was dropped";
}
TEST(IntegrityExplore, DropInFlight) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) {
    DropInFlight(5000 + s, false);
    DropInFlight(6000 + s, true);
  }
}
}  // namespace
}  // namespace stablecache

namespace stablecache {
namespace {
void ExploreCache(uint64_t seed) {
  constexpr uint64_t kPages = 16;
  auto mem = *MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .delay = std::chrono::microseconds(50)});
  auto log = std::make_shared<LogWritesDevice>(mem);
  const std::vector<std::byte> initial(mem->Info().size_bytes);
  auto dev = *IntegrityDevice::Create(log, {});
  CacheOptions co;
  co.capacity_bytes = 1 << 20;
  co.io_reserve_frames = 16;
  co.flusher_threads = 2;
  co.writeback_interval_ms = 1;
  co.dirty_background_ratio = 0.001;
  auto cache = *Cache::Create(co);
  auto file = std::move(*cache->Open(dev, {.initial_size = kPages * kBlock}));
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint32_t>> versions(kPages);
  for (auto& v : versions) v.push_back(0);
  std::map<uint64_t, std::vector<size_t>> synced_at;
  uint32_t ver = 1;
  for (int i = 0; i < 150; i++) {
    const uint64_t p = rng() % kPages;
    const uint32_t v = ver++;
    auto buf = Pattern(p, v);
    versions[p].push_back(v);
    ASSERT_TRUE(file->Write(p * kBlock, buf));
    if (rng() % 6 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    if (rng() % 10 == 0) {
      std::vector<size_t> idx(kPages);
      for (uint64_t b = 0; b < kPages; b++) idx[b] = versions[b].size() - 1;
      ASSERT_TRUE(file->Sync().ok());
      synced_at[log->Mark("synced")] = idx;
    }
  }
  ASSERT_TRUE(file->Close().ok());
  mem->WaitForPendingAtMost(0);
  CrashReplayer replayer(log->Snapshot(), initial);
  auto points = replayer.PlanCrashPoints({Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear},
                                         Env("EXPLORE_POINTS", 150), seed);
  std::vector<std::byte> got(kBlock);
  for (const CrashPoint& p : points) {
    CrashState s = replayer.Build(p);
    auto reopened = IntegrityDevice::Create(FromImage(s.images[0]), {});
    ASSERT_TRUE(reopened) << s.Describe() << ": " << reopened.error().ToString();
    auto it = synced_at.lower_bound(p.position);
    const std::vector<size_t>* synced = it == synced_at.begin() ? nullptr : &std::prev(it)->second;
    for (uint64_t b = 0; b < kPages; b++) {
      Status st = ReadSync(**reopened, b * kBlock, got.data(), kBlock);
      ASSERT_TRUE(st.ok()) << "seed " << seed << " " << s.Describe() << " block " << b << ": " << st.ToString();
      bool zero = got == std::vector<std::byte>(kBlock);
      uint32_t gv = 0;
      if (!zero) std::memcpy(&gv, got.data() + 8, 4);
      auto& vs = versions[b];
      const size_t from = synced ? (*synced)[b] : 0;
      bool allowed = false;
      for (size_t k = from; k < vs.size() && !allowed; k++)
        allowed = vs[k] == gv && (gv == 0 ? zero : got == Pattern(b, gv));
      ASSERT_TRUE(allowed) << "seed " << seed << " " << s.Describe() << " block " << b << " holds version " << gv
                           << (zero ? " (zeros)" : "") << " synced idx " << from;
    }
  }
}
TEST(IntegrityExplore, Cache) {
  for (int s = 0; s < Env("EXPLORE_SEEDS", 1); s++) ExploreCache(8000 + s);
}
}  // namespace
}  // namespace stablecache
