// Fail-the-Nth: run an operation once clean to count its I/O (bios at a
// fault layer) and frame allocations, then run it again for each N,
// failing the Nth, and judge what the caller and the device were left with.
//
// One run (RunOnce):
//   1. Build a fresh stack; in a first cache, write the setup data and Sync
//      it (clean). The model holds every byte written.
//   2. A second cache opens the device; the injection is armed; the
//      operation runs, then a Sync, both with the fault armed.
//   3. Heal (clear the fault), read the whole file through the same cache
//      (each byte of a failed operation may be old or new; the model
//      adopts what it reads), run the scenario's after-heal steps, Sync.
//   4. A third, fresh cache reads the device back and must find exactly
//      what the model holds.
// Verdicts: an operation that hangs (past a generous deadline), a failed
// write or flush that no caller was told of, an OK read that returned
// bytes the model does not hold, a Sync after healing that fails, and a
// device that lacks bytes acknowledged by a Sync ("lost data"). Crashes and
// sanitizer reports end the test binary and are caught by CTest.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cache/cache_impl.h"
#include "cache/size_record.h"
#include "devices/fault_device.h"
#include "stablecache/cache.h"

namespace stablecache::testing {

enum class Verdict {
  kOk, kSetupFailed, kHang, kErrorLost, kSpuriousError, kWrongData, kHealFailed, kLostData, kDiverged
};

inline const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kSetupFailed: return "setup failed";
    case Verdict::kHang: return "hang";
    case Verdict::kErrorLost: return "error reached no caller";
    case Verdict::kSpuriousError: return "error without a failed I/O";
    case Verdict::kWrongData: return "wrong data returned";
    case Verdict::kHealFailed: return "sync after healing failed";
    case Verdict::kLostData: return "lost data detected";
    case Verdict::kDiverged: return "redundancy diverged";
  }
  return "?";
}

// Runs fn on its own thread and waits at most `limit`. Returns false if it
// has not finished: the thread is then left running, detached, owning what
// fn captured (capture shared_ptrs), and the caller reports a hang.
inline bool RunBounded(std::function<void()> fn, std::chrono::seconds limit) {
  struct Done {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto d = std::make_shared<Done>();
  std::thread t([d, fn = std::move(fn)] {
    fn();
    std::lock_guard lk(d->mu);
    d->done = true;
    d->cv.notify_all();
  });
  std::unique_lock lk(d->mu);
  if (d->cv.wait_for(lk, limit, [&] { return d->done; })) {
    lk.unlock();
    t.join();
    return true;
  }
  t.detach();
  return false;
}

// What the file must hold. Every write that returned OK is certain; the
// bytes (and size) of an operation that failed may be old or new until a
// read after healing shows which (Resolve).
class Model {
 public:
  uint64_t size() const { return now_.size(); }
  const std::vector<std::byte>& bytes() const { return now_; }

  void Write(uint64_t off, std::span<const std::byte> data) {
    Apply(now_, off, data);
    alt_ = now_;
  }
  void Truncate(uint64_t size) {
    now_.resize(size);
    alt_ = now_;
  }
  // The write failed: each byte is old or new, the size old or extended.
  void MaybeWrite(uint64_t off, std::span<const std::byte> data) {
    alt_ = now_;
    Apply(alt_, off, data);
    uncertain_ = true;
  }
  void MaybeTruncate(uint64_t size) {
    alt_ = now_;
    alt_.resize(size);
    uncertain_ = true;
  }

  // Does `got` (the file as a reader sees it) agree with the model? On a
  // mismatch says where in *detail.
  bool Allows(std::span<const std::byte> got, std::string* detail) const {
    if (got.size() != now_.size() && !(uncertain_ && got.size() == alt_.size())) {
      *detail = fmt::format("size {} (model: {}{})", got.size(), now_.size(),
                            uncertain_ ? fmt::format(" or {}", alt_.size()) : "");
      return false;
    }
    for (size_t i = 0; i < got.size(); i++) {
      if (got[i] == At(now_, i) || (uncertain_ && got[i] == At(alt_, i))) continue;
      *detail = fmt::format("byte {} is {:#04x}, model says {:#04x}{} (file size {})", i, unsigned(got[i]),
                            unsigned(At(now_, i)), uncertain_ ? fmt::format(" or {:#04x}", unsigned(At(alt_, i))) : "",
                            got.size());
      return false;
    }
    return true;
  }
  // After Allows(got): what was read is now the truth.
  void Resolve(std::span<const std::byte> got) {
    now_.assign(got.begin(), got.end());
    alt_ = now_;
    uncertain_ = false;
  }

 private:
  static void Apply(std::vector<std::byte>& v, uint64_t off, std::span<const std::byte> data) {
    if (v.size() < off + data.size()) v.resize(off + data.size());
    std::memcpy(v.data() + off, data.data(), data.size());
  }
  static std::byte At(const std::vector<std::byte>& v, size_t i) { return i < v.size() ? v[i] : std::byte{0}; }

  std::vector<std::byte> now_, alt_;
  bool uncertain_ = false;
};

// A freshly built stack for one run.
struct Rig {
  std::shared_ptr<BlockDevice> top;
  std::vector<std::shared_ptr<FaultDevice>> inject;  // where the Nth failure may go
  std::function<void()> after_setup;                 // e.g. plant a bad block
  std::function<std::string()> clean_check;          // clean runs only: "" when as expected
  // Leg bytes below this hold the layers' own metadata (mirror/parity
  // member records and write-intent bitmap). Dropping such a write loses
  // no data, so a dropped-write negative control drops only data writes.
  uint64_t data_offset = 0;
};

struct OpOutcome {
  Status status;
  std::string wrong_data;  // an OK read returned bytes the model does not hold
};

struct Scenario {
  std::string name;
  std::function<Rig()> build;
  std::function<void(File&, Model&)> setup;
  std::optional<uint64_t> reopen_size;  // the measured phase opens with this size
  std::function<OpOutcome(File&, Model&)> op;
  std::function<Status(File&, Model&)> after_heal;  // clean steps after healing
  // A leg's repair write may fail with nobody to tell (the read that
  // asked for it already succeeded): failed writes need not surface.
  bool writes_may_be_repairs = false;
  std::function<void(CacheOptions&)> tune;  // cache options of every phase
};

struct Injection {
  enum class Where { kNone, kBio, kFrame } where = Where::kNone;
  size_t layer = 0;  // Rig::inject index
  std::optional<BioOp> op;  // bios of this op only (counting too); nullopt: all
  uint64_t nth = 1;
  int64_t count = 1;  // -1: the Nth and every one after it
  FaultAction action = FaultAction::kFail;
  PagePool::FrameKind frame = PagePool::FrameKind::kPageFrame;
};

struct RunResult {
  Verdict verdict = Verdict::kOk;
  std::string detail;
  Status op, sync;
  uint64_t injected = 0;
  std::vector<uint64_t> bios;  // per Rig::inject layer, during the measured phase
  uint64_t page_allocs = 0, io_allocs = 0;
};

inline CacheOptions FailNthCacheOptions(StablePolicy policy) {
  CacheOptions o;
  o.capacity_bytes = 1 << 20;
  o.io_reserve_frames = 8;
  o.max_bio_pages = 4;
  o.readahead_pages = 8;
  o.dirty_background_ratio = 0.9;  // the flusher stays out of the way:
  o.dirty_ratio = 0.95;            // the I/O of an operation is repeatable
  o.writeback_interval_ms = 3600 * 1000;
  o.policy = policy;
  return o;
}

namespace detail {

inline Status ReadWhole(File& f, std::vector<std::byte>& out) {
  auto size = f.Size();
  if (!size) return size.error();
  out.assign(*size, std::byte{0});
  auto n = f.Read(0, out);
  if (!n) return n.error();
  if (*n != out.size()) return Status::IoError(fmt::format("short read: {} of {} bytes", *n, out.size()));
  return Status::Ok();
}

inline void RunOnceUnbounded(const Scenario& sc, const Injection& inj, StablePolicy policy, RunResult& r) {
  auto fail = [&](Verdict v, std::string why) {  // the first verdict stands; later findings are appended
    if (r.verdict == Verdict::kOk) r.verdict = v, r.detail = std::move(why);
    else r.detail += fmt::format("; then {}: {}", VerdictName(v), why);
  };
  CacheOptions copts = FailNthCacheOptions(policy);
  if (sc.tune) sc.tune(copts);
  Rig rig = sc.build();
  Model m;
  // 1. Setup, clean, in its own cache.
  {
    auto cache = Cache::Create(copts);
    auto f = (*cache)->Open(rig.top);
    if (!f) return fail(Verdict::kSetupFailed, f.error().ToString());
    sc.setup(**f, m);
    if (Status st = (*f)->Close(); !st.ok()) return fail(Verdict::kSetupFailed, st.ToString());
  }
  if (sc.reopen_size) {
    // The file on the medium is this long; bytes past it on the device are
    // stale, not data (the size record says so, as after a crash).
    m.Truncate(*sc.reopen_size);
    if (Status st = RewriteSizeRecord(*rig.top, *sc.reopen_size); !st.ok())
      return fail(Verdict::kSetupFailed, st.ToString());
  }
  if (rig.after_setup) rig.after_setup();

  // 2. The measured phase, fault armed.
  auto cache = *Cache::Create(copts);
  PagePool& pool = static_cast<CacheImpl&>(*cache).pool();
  auto opened = cache->Open(rig.top, {.initial_size = m.size()});
  if (!opened) return fail(Verdict::kSetupFailed, opened.error().ToString());
  std::unique_ptr<File> f = std::move(*opened);
  std::vector<uint64_t> seen0;
  auto seen = [&](const FaultDevice& l) { return inj.op ? l.seen(*inj.op) : l.seen(); };
  for (auto& l : rig.inject) seen0.push_back(seen(*l));
  const uint64_t pages0 = pool.alloc_attempts(PagePool::FrameKind::kPageFrame);
  const uint64_t io0 = pool.alloc_attempts(PagePool::FrameKind::kIoFrame);
  FaultDevice* layer = inj.where == Injection::Where::kBio ? rig.inject.at(inj.layer).get() : nullptr;
  if (layer)
    layer->AddRule({.op = inj.op,
                    .offset = inj.action == FaultAction::kDrop ? rig.data_offset : 0,
                    .skip = static_cast<int64_t>(inj.nth - 1),
                    .count = inj.count,
                    .action = inj.action});
  if (inj.where == Injection::Where::kFrame) pool.FailNthAllocation(inj.frame, inj.nth, inj.count < 0 ? UINT64_MAX : inj.count);

  OpOutcome o = sc.op(*f, m);
  r.op = o.status;
  r.sync = f->Sync();
  for (size_t i = 0; i < rig.inject.size(); i++) r.bios.push_back(seen(*rig.inject[i]) - seen0[i]);
  r.page_allocs = pool.alloc_attempts(PagePool::FrameKind::kPageFrame) - pages0;
  r.io_allocs = pool.alloc_attempts(PagePool::FrameKind::kIoFrame) - io0;
  const uint64_t failed_writes = layer ? layer->injected(BioOp::kWrite) + layer->injected(BioOp::kFlush) : 0;
  r.injected = layer ? layer->injected() : inj.where == Injection::Where::kFrame ? pool.alloc_faults_injected(inj.frame) : 0;

  // 3. Heal, then the caller-visible checks.
  if (layer) layer->ClearRules();
  pool.ClearAllocationFaults();
  if (!o.wrong_data.empty()) fail(Verdict::kWrongData, "the operation returned OK with " + o.wrong_data);
  if (failed_writes > 0 && inj.action == FaultAction::kFail && !sc.writes_may_be_repairs && r.op.ok() && r.sync.ok())
    fail(Verdict::kErrorLost, fmt::format("{} write/flush bio(s) failed, yet the operation and the Sync after it "
                                          "returned OK",
                                          failed_writes));
  // A frame allocation that fails for a moment is waited out or worked
  // around (reclaim, no readahead, wait instead of fork): never an error.
  if (inj.where == Injection::Where::kFrame && (!r.op.ok() || !r.sync.ok()))
    fail(Verdict::kSpuriousError, "a failed frame allocation became an I/O error");
  std::vector<std::byte> got;
  if (Status st = detail::ReadWhole(*f, got); !st.ok()) {
    fail(Verdict::kHealFailed, "read after healing: " + st.ToString());
  } else if (std::string why; !m.Allows(got, &why)) {
    fail(Verdict::kWrongData, "after healing the cache shows " + why);
  } else {
    m.Resolve(got);
  }
  if (sc.after_heal)
    if (Status st = sc.after_heal(*f, m); !st.ok()) fail(Verdict::kHealFailed, "after-heal steps: " + st.ToString());
  if (Status st = f->Sync(); !st.ok()) fail(Verdict::kHealFailed, "Sync after healing: " + st.ToString());
  if (Status st = f->Close(); !st.ok()) fail(Verdict::kHealFailed, "Close after healing: " + st.ToString());
  f.reset();
  cache.reset();

  // 4. A fresh cache over the same device.
  auto fresh = *Cache::Create(copts);
  auto g = fresh->Open(rig.top, {.initial_size = m.size()});
  if (!g) return fail(Verdict::kLostData, "reopen: " + g.error().ToString());
  if (Status st = detail::ReadWhole(**g, got); !st.ok()) {
    fail(Verdict::kLostData, "read back in a fresh cache: " + st.ToString());
  } else if (std::string why; !m.Allows(got, &why)) {
    fail(Verdict::kLostData, "a fresh cache reads " + why);
  }
  (void)(*g)->Close();
  g->reset();
  fresh.reset();
  // Every acknowledged write reached every leg: legs agree, parity matches.
  // A block no leg can read is allowed only where a repair may have failed.
  ScrubReport scrub;
  if (Status st = rig.top->Scrub(scrub); !st.ok()) {
    fail(Verdict::kDiverged, "scrub: " + st.ToString());
  } else if (scrub.mirror_divergence || scrub.parity_mismatch || (scrub.unreadable && !sc.writes_may_be_repairs)) {
    fail(Verdict::kDiverged, fmt::format("scrub found {} diverged blocks, {} parity mismatches, {} unreadable{}",
                                         scrub.mirror_divergence, scrub.parity_mismatch, scrub.unreadable,
                                         scrub.findings.empty() ? "" : ": first " + scrub.findings[0].detail));
  }
  if (inj.where == Injection::Where::kNone && rig.clean_check)
    if (std::string why = rig.clean_check(); !why.empty()) fail(Verdict::kSetupFailed, "clean run: " + why);
}

}  // namespace detail

inline RunResult RunOnce(const Scenario& sc, const Injection& inj, StablePolicy policy,
                         std::chrono::seconds limit = std::chrono::seconds(20)) {
  auto r = std::make_shared<RunResult>();
  auto sc_copy = std::make_shared<Scenario>(sc);
  bool finished = RunBounded([r, sc_copy, inj, policy] { detail::RunOnceUnbounded(*sc_copy, inj, policy, *r); }, limit);
  if (!finished) {
    RunResult hung;
    hung.verdict = Verdict::kHang;
    hung.detail = fmt::format("did not finish within {} s", limit.count());
    return hung;
  }
  return *r;
}

struct LoopReport {
  uint64_t runs = 0;
  uint64_t injected = 0;  // bios failed or dropped, frame allocations failed
  std::map<Verdict, uint64_t> verdicts;
  std::vector<std::string> failures;  // one line per run whose verdict was not ok
  std::string Summary() const {
    std::string s = fmt::format("{} runs, {} injected", runs, injected);
    for (auto& [v, n] : verdicts) s += fmt::format(", {} {}", n, VerdictName(v));
    return s;
  }
};

inline std::string Describe(const Injection& inj) {
  switch (inj.where) {
    case Injection::Where::kNone: return "clean";
    case Injection::Where::kBio:
      return fmt::format("{} bio #{}{} at layer {}", inj.action == FaultAction::kDrop ? "drop" : "fail", inj.nth,
                         inj.count < 0 ? " and after" : "", inj.layer);
    case Injection::Where::kFrame:
      return fmt::format("fail {} frame allocation #{}", inj.frame == PagePool::FrameKind::kPageFrame ? "page" : "io",
                         inj.nth);
  }
  return "?";
}

inline void Tally(LoopReport& rep, const Scenario& sc, const Injection& inj, StablePolicy policy,
                  const RunResult& r) {
  rep.runs++;
  rep.injected += r.injected;
  rep.verdicts[r.verdict]++;
  if (r.verdict != Verdict::kOk)
    rep.failures.push_back(fmt::format("{} [{}] {}: {}: {} (op: {}; sync: {})", sc.name, PolicyName(policy),
                                       Describe(inj), VerdictName(r.verdict), r.detail, r.op.ToString(),
                                       r.sync.ToString()));
}

// The clean run; its counts drive the loops. A failure lands in rep.
inline RunResult CleanRun(LoopReport& rep, const Scenario& sc, StablePolicy policy,
                          std::optional<BioOp> op = std::nullopt) {
  RunResult clean = RunOnce(sc, {.op = op}, policy);
  if (clean.verdict != Verdict::kOk) Tally(rep, sc, {}, policy, clean);
  return clean;
}

// Fails (or drops) each bio of the operation in turn, at every injection
// layer, or only the bios of `op`. count -1 makes the device fail from the
// Nth bio on.
inline LoopReport FailEachBio(const Scenario& sc, StablePolicy policy, int64_t count = 1,
                              FaultAction action = FaultAction::kFail, std::optional<BioOp> op = std::nullopt) {
  LoopReport rep;
  RunResult clean = CleanRun(rep, sc, policy, op);
  if (clean.verdict != Verdict::kOk) return rep;
  for (size_t layer = 0; layer < clean.bios.size(); layer++) {
    for (uint64_t n = 1; n <= clean.bios[layer]; n++) {
      Injection inj{
          .where = Injection::Where::kBio, .layer = layer, .op = op, .nth = n, .count = count, .action = action};
      RunResult r = RunOnce(sc, inj, policy);
      Tally(rep, sc, inj, policy, r);
      if (r.verdict == Verdict::kHang) return rep;  // its thread still runs: stop here
    }
  }
  return rep;
}

// Fails each frame allocation of the operation in turn, page frames and
// I/O (bounce) frames.
inline LoopReport FailEachFrame(const Scenario& sc, StablePolicy policy) {
  LoopReport rep;
  RunResult clean = CleanRun(rep, sc, policy);
  if (clean.verdict != Verdict::kOk) return rep;
  for (auto [kind, total] : {std::pair{PagePool::FrameKind::kPageFrame, clean.page_allocs},
                             std::pair{PagePool::FrameKind::kIoFrame, clean.io_allocs}}) {
    for (uint64_t n = 1; n <= total; n++) {
      Injection inj{.where = Injection::Where::kFrame, .nth = n, .frame = kind};
      RunResult r = RunOnce(sc, inj, policy);
      Tally(rep, sc, inj, policy, r);
      if (r.verdict == Verdict::kHang) return rep;
    }
  }
  return rep;
}

}  // namespace stablecache::testing
