#include "crash/stack_crash_harness.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "devices/integrity_device.h"
#include "devices/mirror_device.h"
#include "devices/parity_device.h"

namespace stablecache::crashstack {

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint32_t kMagic = 0x5cc8a5b1;

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

struct Rng {
  uint64_t s;
  uint64_t Next() { return s = Mix(s + 0x9e3779b97f4a7c15ull); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
};

}  // namespace

std::string StackShape::Name() const {
  const char* leg = integrity ? "integrity,memory" : "memory";
  switch (redundancy) {
    case Redundancy::kNone: return leg;
    case Redundancy::kMirror: return fmt::format("mirror({} x {})", legs, leg);
    case Redundancy::kParity: return fmt::format("parity({} x {})", legs, leg);
  }
  return "?";
}

Result<BuiltStack> BuildStack(const StackShape& shape, std::vector<std::shared_ptr<MemoryDevice>> leaves,
                              std::shared_ptr<WriteLog> log) {
  BuiltStack s;
  s.leaves = std::move(leaves);
  for (size_t l = 0; l < s.leaves.size(); l++) {
    std::shared_ptr<BlockDevice> dev = s.leaves[l];
    if (log) {
      auto lw = std::make_shared<LogWritesDevice>(dev, log, static_cast<uint32_t>(l));
      s.logs.push_back(lw);
      dev = lw;
    }
    if (shape.integrity) {
      auto in = IntegrityDevice::Create(dev, {.guard = GuardType::kCrc32c});
      if (!in) return Err(in.error());
      dev = *in;
    }
    s.legs.push_back(dev);
  }
  switch (shape.redundancy) {
    case Redundancy::kNone:
      s.top = s.legs.at(0);
      break;
    case Redundancy::kMirror: {
      auto m = MirrorDevice::Create(s.legs);
      if (!m) return Err(m.error());
      s.top = *m;
      break;
    }
    case Redundancy::kParity: {
      auto p = ParityDevice::Create(s.legs);
      if (!p) return Err(p.error());
      s.top = *p;
      break;
    }
  }
  return s;
}

void FillBlock(uint32_t op, uint64_t block, std::byte* out) {
  std::memcpy(out, &kMagic, 4);
  std::memcpy(out + 4, &op, 4);
  std::memcpy(out + 8, &block, 8);
  uint64_t x = Mix((uint64_t{op} << 32) ^ block ^ 0x0b10c);
  for (uint64_t i = 16; i < kBlock; i += 8) {
    x = Mix(x + i);
    std::memcpy(out + i, &x, 8);
  }
}

std::optional<BlockId> ParseBlock(const std::byte* in) {
  uint32_t magic, op;
  uint64_t block;
  std::memcpy(&magic, in, 4);
  if (magic != kMagic) return std::nullopt;
  std::memcpy(&op, in + 4, 4);
  std::memcpy(&block, in + 8, 8);
  std::byte want[kBlock];
  FillBlock(op, block, want);
  if (std::memcmp(want, in, kBlock) != 0) return std::nullopt;
  return BlockId{op, block};
}

// ---- The workload ----

namespace {

class Workload {
 public:
  Workload(const WorkloadOptions& opts, Recording& rec, BuiltStack& stack, std::shared_ptr<WriteLog> log)
      : opts_(opts), rng_{opts.seed}, rec_(rec), stack_(stack), log_(std::move(log)), busy_(rec.blocks, false) {}

  Status Run() {
    for (uint64_t i = 0; i < opts_.ops; i++) {
      const uint64_t dice = rng_.Below(100);
      Status st;
      if (dice < 70) st = Write();
      else if (dice < 84) st = Sync();
      else if (dice < 92) st = RacingFlush();
      else st = LiveRead();
      if (!st.ok()) {
        WaitIdle();
        return st;
      }
    }
    WaitIdle();
    std::lock_guard lk(mu_);
    return first_error_;
  }

 private:
  void WaitIdle() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return in_flight_ == 0; });
  }
  void Done(uint64_t first, uint64_t n, const Status& st) {
    std::lock_guard lk(mu_);
    for (uint64_t b = first; b < first + n; b++) busy_[b] = false;
    in_flight_--;
    if (!st.ok() && first_error_.ok()) first_error_ = st;
    cv_.notify_all();
  }

  Status Write() {
    const uint64_t first = rng_.Below(rec_.blocks);
    const uint64_t n = 1 + rng_.Below(std::min<uint64_t>(8, rec_.blocks - first));
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] {
        if (in_flight_ >= opts_.queue_depth) return false;
        for (uint64_t b = first; b < first + n; b++)
          if (busy_[b]) return false;
        return true;
      });
      for (uint64_t b = first; b < first + n; b++) busy_[b] = true;
      in_flight_++;
    }
    const uint32_t op = next_op_++;
    auto buf = std::make_shared<std::vector<std::byte>>(n * kBlock);
    for (uint64_t b = 0; b < n; b++) FillBlock(op, first + b, buf->data() + b * kBlock);
    const uint64_t issued = log_->Size();
    for (uint64_t b = first; b < first + n; b++) rec_.versions[b].push_back(Version{op, issued});
    auto bio = Bio::Make(BioOp::kWrite, first * kBlock, Stability::kStable);
    bio->AddSegment(buf->data(), static_cast<uint32_t>(buf->size()));
    bio->keep_alive.push_back(buf);
    bio->on_complete = [this, first, n](BioPtr, Status st) { Done(first, n, st); };
    rec_.writes++;
    stack_.top->Submit(std::move(bio));
    return Status::Ok();
  }

  Status Sync() {
    WaitIdle();
    SyncPoint s;
    for (const auto& v : rec_.versions) s.current.push_back(v.size() - 1);
    Status st = FlushSync(*stack_.top);
    if (!st.ok()) return st;
    s.mark = log_->Mark(fmt::format("sync {} acknowledged", rec_.syncs.size()));
    rec_.syncs.push_back(std::move(s));
    rec_.syncs_acked++;
    rec_.flushes++;
    return Status::Ok();
  }

  Status RacingFlush() {
    {
      std::lock_guard lk(mu_);
      in_flight_++;
    }
    auto bio = Bio::Make(BioOp::kFlush, 0);
    bio->on_complete = [this](BioPtr, Status st) { Done(0, 0, st); };
    rec_.flushes++;
    stack_.top->Submit(std::move(bio));
    return Status::Ok();
  }

  Status LiveRead() {
    const uint64_t b = rng_.Below(rec_.blocks);
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return !busy_[b]; });
    }
    std::vector<std::byte> got(kBlock), want(kBlock);
    Status st = ReadSync(*stack_.top, b * kBlock, got.data(), kBlock);
    if (!st.ok()) return Status::IoError(fmt::format("live read of block {}: {}", b, st.ToString()));
    FillBlock(rec_.versions[b].back().op, b, want.data());
    if (got != want) return Status::IoError(fmt::format("live read of block {} returned the wrong bytes", b));
    return Status::Ok();
  }

  WorkloadOptions opts_;
  Rng rng_;
  Recording& rec_;
  BuiltStack& stack_;
  std::shared_ptr<WriteLog> log_;
  uint32_t next_op_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> busy_;  // GUARDED_BY(mu_)
  size_t in_flight_ = 0;    // GUARDED_BY(mu_)
  Status first_error_;      // GUARDED_BY(mu_)
};

}  // namespace

Result<Recording> RecordWorkload(const StackShape& shape, const WorkloadOptions& opts) {
  Recording rec;
  rec.shape = shape;
  std::vector<std::shared_ptr<MemoryDevice>> leaves;
  for (size_t l = 0; l < shape.legs; l++) {
    auto mem = MemoryDevice::Create({.size_bytes = shape.leaf_bytes, .late_copy = true, .delay = opts.delay});
    if (!mem) return Err(mem.error());
    leaves.push_back(*mem);
  }
  auto log = std::make_shared<WriteLog>();
  auto stack = BuildStack(shape, leaves, log);
  if (!stack) return Err(stack.error());
  rec.blocks = stack->top->Info().size_bytes / kBlock;
  // Setup: every block once, flushed; the initial image; the log starts here.
  std::vector<std::byte> all(rec.blocks * kBlock);
  for (uint64_t b = 0; b < rec.blocks; b++) FillBlock(0, b, all.data() + b * kBlock);
  SC_RETURN_UNEXPECTED_IF_ERROR(WriteSync(*stack->top, 0, all.data(), static_cast<uint32_t>(all.size())));
  SC_RETURN_UNEXPECTED_IF_ERROR(FlushSync(*stack->top));
  for (auto& leaf : leaves) {
    rec.initial.emplace_back(shape.leaf_bytes);
    leaf->ReadRaw(0, rec.initial.back().data(), shape.leaf_bytes);
  }
  log->Clear();
  rec.versions.assign(rec.blocks, std::vector<Version>{Version{0, 0}});
  Workload w(opts, rec, *stack, log);
  SC_RETURN_UNEXPECTED_IF_ERROR(w.Run());
  rec.log = log->Snapshot();
  return rec;
}

// ---- The checker ----

namespace {

class Checker {
 public:
  Checker(const Recording& rec, const CheckOptions& opts) : rec_(rec), opts_(opts) {
    for (const SyncPoint& s : rec.syncs) marks_.push_back(s.mark);
  }

  void Check(CrashReplayer& replayer, const CrashPoint& p, Verdict& v) {
    CrashState st = replayer.Build(p);
    const uint64_t pos = p.position;
    std::vector<Corruption> injected;
    if (opts_.corruptions > 0) {
      CorruptionPlan plan;
      plan.seed = p.seed;
      plan.count = opts_.corruptions;
      plan.kinds = opts_.kinds;
      plan.group = [&](size_t, uint64_t, std::span<const std::byte> content) -> std::optional<uint64_t> {
        auto id = ParseBlock(content.data());
        if (!id || id->block >= rec_.blocks) return std::nullopt;
        return GroupOf(id->block);
      };
      injected = replayer.Corrupt(st, plan);
    }
    // The groups corrupted, and the injected bytes of each.
    std::set<uint64_t> corrupted;
    std::vector<std::vector<std::byte>> injected_bytes;
    for (const Corruption& c : injected) {
      const std::byte* at = st.images[c.device].data() + c.block * kBlock;
      injected_bytes.emplace_back(at, at + kBlock);
      v.corruptions++;
      v.corruptions_by_kind[fmt::format("{} {}", c.in_flight ? "in-flight" : "at-rest", CorruptionKindName(c.kind))]++;
    }
    // Groups by the content the corruption replaced: recompute from the replayer's clean state.
    // Which stack block each corrupted location held (the planner only
    // picks locations holding a workload block).
    CrashState clean = replayer.Build(p);
    std::vector<uint64_t> holds;
    for (const Corruption& c : injected) {
      auto id = ParseBlock(clean.images[c.device].data() + c.block * kBlock);
      holds.push_back(id ? id->block : UINT64_MAX);
      if (id) corrupted.insert(GroupOf(id->block));
    }
    std::set<uint64_t> dirty;  // parity: stripes with a write in flight at the crash
    for (uint64_t i : st.unflushed) {
      const LogEntry& e = rec_.log[i];
      for (uint64_t b = e.offset / kBlock; b < (e.offset + e.length() + kBlock - 1) / kBlock; b++) dirty.insert(b);
    }

    uint64_t failures_before = v.failures();
    std::string where = fmt::format("{}; {} corruption(s){}", st.Describe(), injected.size(), Injected(injected));

    std::vector<std::shared_ptr<MemoryDevice>> leaves;
    for (const auto& image : st.images) {
      auto mem = MemoryDevice::Create({.size_bytes = image.size()});
      if (!mem) return Fail(v, where, "memory device: " + mem.error().ToString(), v.other_errors);
      (*mem)->WriteRaw(0, image.data(), image.size());
      leaves.push_back(*mem);
    }
    auto stack = BuildStack(rec_.shape, leaves, nullptr);
    if (!stack) return Fail(v, where, "the stack does not open: " + stack.error().ToString(), v.other_errors);

    // (a), (b): every block through the top.
    const size_t k = LastSyncBefore(pos);
    std::vector<std::byte> got(kBlock);
    for (uint64_t b = 0; b < rec_.blocks; b++) {
      Status s = ReadSync(*stack->top, b * kBlock, got.data(), kBlock);
      if (s.code() == Code::kIntegrityError) {
        // Parity may refuse to rebuild a corrupted chunk from a stripe whose
        // parity may be stale: one with a write in flight at the crash, or
        // one in a write-intent region that assembly could not resync (its
        // data did not read: the corruption).
        auto* parity = dynamic_cast<ParityDevice*>(stack->top.get());
        const bool stale = parity && parity->StripeStale(GroupOf(b));
        const bool justified = corrupted.count(GroupOf(b)) &&
                               (rec_.shape.redundancy == Redundancy::kNone ||
                                (rec_.shape.redundancy == Redundancy::kParity && (dirty.count(GroupOf(b)) || stale)));
        if (!justified)
          Fail(v, where, fmt::format("block {}: false integrity error ({}){}", b, s.ToString(), Allowed(b, pos, k)),
               v.false_integrity_errors);
        continue;
      }
      if (!s.ok()) {
        Fail(v, where, fmt::format("block {}: read fails: {}", b, s.ToString()), v.other_errors);
        continue;
      }
      auto id = ParseBlock(got.data());
      if (id && id->block == b && IsAllowed(b, id->op, pos, k)) continue;
      bool was_injected = false;
      for (const auto& bytes : injected_bytes) was_injected |= bytes == got;
      const std::string content = id ? fmt::format("op {}'s version of block {}", id->op, id->block) : "unrecognised bytes";
      if (was_injected)
        Fail(v, where, fmt::format("block {}: an injected corruption is returned as data ({})", b, content), v.undetected);
      else
        Fail(v, where, fmt::format("block {}: holds {}{}", b, content, Allowed(b, pos, k)), v.lost_or_invented);
    }
    // (c): each corrupted leg block, read through its leg's top, after the
    // reads above had their chance to repair it.
    for (size_t i = 0; i < injected.size(); i++) {
      const Corruption& c = injected[i];
      const auto& leg = stack->legs.at(c.device);
      // The leg's block for the leaf block: an integrity leg keeps its
      // data after its record and tag table.
      uint64_t leg_block = c.block;
      if (auto* integ = dynamic_cast<IntegrityDevice*>(leg.get())) {
        if (c.block < integ->geometry().data_start) continue;
        leg_block = c.block - integ->geometry().data_start;
      }
      if ((leg_block + 1) * kBlock > leg->Info().size_bytes) continue;
      Status s = ReadSync(*leg, leg_block * kBlock, got.data(), kBlock);
      if (s.code() == Code::kIntegrityError) {
        v.detected++;
        continue;
      }
      if (!s.ok()) {
        Fail(v, where, fmt::format("leg {} block {}: read fails: {}", c.device, c.block, s.ToString()), v.other_errors);
        continue;
      }
      auto id = ParseBlock(got.data());
      const bool allowed = id && id->block == holds[i] && IsAllowed(id->block, id->op, pos, k);
      if (got != injected_bytes[i]) {
        if (allowed) v.repaired++;
        else
          Fail(v, where, fmt::format("leg {} block {} ({}): holds neither the injected bytes nor an allowed version",
                                     c.device, c.block, c.Describe()),
               v.lost_or_invented);
      } else if (allowed) {
        // Wrong for the leg, yet a version the stack may still return there
        // (a lost leg write whose older version no acknowledged Sync
        // superseded): not wrong data.
        v.masked++;
      } else {
        Fail(v, where, fmt::format("leg {} block {}: the injected corruption ({}) reads back as data", c.device,
                                   c.block, c.Describe()),
             v.undetected);
      }
    }
    v.states++;
    v.states_by_kind[fmt::format("{}/{}", p.kind, UnflushedName(p.unflushed))]++;
    if (v.failures() > failures_before) v.failing_states++;
  }

 private:
  // Mirror and single: the stack block; parity: its stripe (block b of
  // every leg, 4 KiB chunks).
  uint64_t GroupOf(uint64_t block) const {
    return rec_.shape.redundancy == Redundancy::kParity ? block / (rec_.shape.legs - 1) : block;
  }
  size_t LastSyncBefore(uint64_t pos) const {  // SIZE_MAX: none
    auto it = std::lower_bound(marks_.begin(), marks_.end(), pos);
    return it == marks_.begin() ? SIZE_MAX : static_cast<size_t>(it - marks_.begin()) - 1;
  }
  size_t Base(uint64_t block, size_t k) const { return k == SIZE_MAX ? 0 : rec_.syncs[k].current[block]; }
  bool IsAllowed(uint64_t block, uint32_t op, uint64_t pos, size_t k) const {
    const auto& vs = rec_.versions[block];
    const size_t base = Base(block, k);
    if (vs[base].op == op) return true;
    for (size_t j = base + 1; j < vs.size() && vs[j].issued_at < pos; j++)
      if (vs[j].op == op) return true;
    return false;
  }
  std::string Allowed(uint64_t block, uint64_t pos, size_t k) const {
    const auto& vs = rec_.versions[block];
    const size_t base = Base(block, k);
    std::string s = k == SIZE_MAX ? fmt::format("; no sync acknowledged, setup op {}", vs[base].op)
                                  : fmt::format("; sync {} acknowledged op {}", k, vs[base].op);
    for (size_t j = base + 1; j < vs.size() && vs[j].issued_at < pos; j++) s += fmt::format(", later op {}", vs[j].op);
    return s;
  }
  static std::string Injected(const std::vector<Corruption>& cs) {
    std::string s;
    for (const auto& c : cs) s += "\n      injected: " + c.Describe();
    return s;
  }
  // Counts every failure; reports the first of each state, up to 3 of
  // each kind of failure.
  void Fail(Verdict& v, const std::string& where, std::string what, uint64_t& counter) {
    counter++;
    if (reported_ == where || reported_per_kind_[&counter]++ >= 3) return;
    reported_ = where;
    v.reports.push_back(fmt::format("{}\n    {}", where, what));
  }

  const Recording& rec_;
  CheckOptions opts_;
  std::vector<uint64_t> marks_;
  std::string reported_;  // the state reported last
  std::map<const uint64_t*, int> reported_per_kind_;
};

}  // namespace

Verdict ReplayAndCheck(const Recording& rec, const CheckOptions& opts) {
  CrashReplayer replayer(rec.log, rec.initial, opts.model);
  const std::vector<Unflushed> at_flush = {Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear};
  const size_t flushes = replayer.PlanCrashPoints(at_flush, 0, opts.seed).size();
  const size_t random = std::max<size_t>(opts.states / 2, opts.states > flushes ? opts.states - flushes : 0);
  std::vector<CrashPoint> points;
  if (opts.after_syncs_only) {
    // Quiescent: right after each acknowledged Sync, nothing in flight.
    const uint64_t per = rec.syncs.empty() ? 0 : (opts.states + rec.syncs.size() - 1) / rec.syncs.size();
    for (const SyncPoint& s : rec.syncs)
      for (uint64_t i = 0; i < per; i++)
        points.push_back(CrashPoint{s.mark + 1, Unflushed::kDropAll, opts.seed ^ (s.mark << 20) ^ (i * 0x9e3779b97f4a7c15ull), "after-sync"});
  } else {
    points = replayer.PlanCrashPoints(at_flush, random, opts.seed);
  }
  Checker checker(rec, opts);
  Verdict v;
  for (const CrashPoint& p : points) checker.Check(replayer, p, v);
  return v;
}

void Add(Verdict& into, const Verdict& v) {
  into.states += v.states;
  into.failing_states += v.failing_states;
  into.lost_or_invented += v.lost_or_invented;
  into.false_integrity_errors += v.false_integrity_errors;
  into.other_errors += v.other_errors;
  into.undetected += v.undetected;
  into.corruptions += v.corruptions;
  into.detected += v.detected;
  into.masked += v.masked;
  into.repaired += v.repaired;
  for (const auto& [k, n] : v.corruptions_by_kind) into.corruptions_by_kind[k] += n;
  for (const auto& [k, n] : v.states_by_kind) into.states_by_kind[k] += n;
  for (const auto& r : v.reports)
    if (into.reports.size() < 12) into.reports.push_back(r);
}

std::string Summary(const Verdict& v) {
  std::string s = fmt::format(
      "{} crash states, {} failing: {} lost-or-invented blocks, {} false integrity errors, {} other errors, {} "
      "undetected corruptions; {} corruptions injected: {} detected, {} repaired, {} masked (injected bytes that are "
      "still a version the stack may return)",
      v.states, v.failing_states, v.lost_or_invented, v.false_integrity_errors, v.other_errors, v.undetected,
      v.corruptions, v.detected, v.repaired, v.masked);
  for (const auto& [kind, n] : v.states_by_kind) s += fmt::format("\n  states {}: {}", kind, n);
  for (const auto& [kind, n] : v.corruptions_by_kind) s += fmt::format("\n  corruptions {}: {}", kind, n);
  for (const auto& r : v.reports) s += "\n  " + r;
  return s;
}

RoundsResult RunRounds(const StackShape& shape, uint64_t rounds, uint64_t ops, const CheckOptions& check) {
  RoundsResult r;
  for (uint64_t round = 0; round < rounds; round++) {
    WorkloadOptions w;
    w.seed = check.seed + round * 0x1000193;
    w.ops = ops;
    auto rec = RecordWorkload(shape, w);
    if (!rec) {
      r.error = fmt::format("{} round {} (workload seed {:#x}): {}", shape.Name(), round, w.seed, rec.error().ToString());
      return r;
    }
    CheckOptions c = check;
    c.seed = w.seed;
    c.states = (check.states + rounds - 1) / rounds;
    Verdict v = ReplayAndCheck(*rec, c);
    for (auto& line : v.reports) line = fmt::format("round {} (workload seed {:#x}): {}", round, w.seed, line);
    Add(r.verdict, v);
    r.log_entries += rec->log.size();
    r.writes += rec->writes;
    r.syncs += rec->syncs_acked;
  }
  return r;
}

std::string RoundsResult::Line(const StackShape& shape) const {
  return fmt::format("{}: {} writes, {} acknowledged syncs, {} log entries; {} crash states ({} failing), {} "
                     "corruptions injected ({} detected, {} repaired, {} masked)",
                     shape.Name(), writes, syncs, log_entries, verdict.states, verdict.failing_states,
                     verdict.corruptions, verdict.detected, verdict.repaired, verdict.masked);
}

}  // namespace stablecache::crashstack
