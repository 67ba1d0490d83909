// CrashReplayer: rebuilds a device's medium at chosen crash points from a
// logwrites log (devices/logwrites_device.h) and the medium's initial image,
// like fstests' replay-log over dm-log-writes, with the unflushed-write
// faults of SQLite's crash VFS and RocksDB's FaultInjectionTestFS.
//
// Crash model "DropReorderTear4K" (FlushModel::kHonoured):
//  A crash at position p happens after log entries [0, p).
//  - Durable: every successful write logged before the kFlush entry of a
//    flush whose successful kFlushDone is logged before p (a flush covers
//    the writes that completed before it was submitted), and every
//    successful FUA write logged before p. Durable writes are applied in
//    log (completion) order; FUA writes not yet covered by a flush last,
//    so nothing unflushed lands over them.
//  - Unflushed: every other write logged before p, every write submitted
//    before p that completes at or after p (in flight at the crash), and
//    every failed write. Its fate depends on Unflushed:
//      kDropAll           none of them reached the medium;
//      kApplyAll          all of them did, in log order;
//      kDropReorderTear   each is, with equal odds, absent, applied whole,
//                         or torn: each of its pieces (cut at 4 KiB device
//                         boundaries) applied or not with odds 1/2; the
//                         chosen pieces of all unflushed writes land in a
//                         random order (so an older write may land over a
//                         newer one: more than a real disk allows, never
//                         less). Seeded: the same seed builds the same state.
//  Nothing else changes on the medium: a block no write touched keeps its
//  initial bytes, and no piece is torn inside 4 KiB.
//
// FlushModel::kIgnored is the negative control: a medium that ignores
// flushes (and FUA), so every write is unflushed and may be dropped, torn or
// reordered. A checker that passes under it checks nothing.
//
// Not thread-safe: one replayer per thread. Build() is incremental when
// called with non-decreasing positions (PlanCrashPoints returns them so).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "devices/logwrites_device.h"

namespace stablecache {

enum class FlushModel : uint8_t { kHonoured, kIgnored };
enum class Unflushed : uint8_t { kDropAll, kApplyAll, kDropReorderTear };
const char* FlushModelName(FlushModel m);
const char* UnflushedName(Unflushed u);

struct CrashPoint {
  uint64_t position = 0;  // crash after log entries [0, position)
  Unflushed unflushed = Unflushed::kDropReorderTear;
  uint64_t seed = 0;      // for kDropReorderTear
  std::string kind;       // how it was chosen, e.g. "at-flush", "between-flushes"
};

struct CrashState {
  CrashPoint point;
  std::vector<std::byte> image;  // the whole medium
  uint64_t durable_boundary = 0;  // writes logged before this index are flushed
  uint64_t durable_writes = 0;
  uint64_t unflushed_writes = 0;  // of which:
  uint64_t dropped = 0, applied = 0, torn = 0;
  uint64_t in_flight = 0;         // unflushed writes still in flight at the crash
  std::string Describe() const;   // one line: point, seed, counts
};

class CrashReplayer {
 public:
  // REQUIRES: every write of `log` lies inside `initial`.
  CrashReplayer(std::vector<LogEntry> log, std::vector<std::byte> initial,
                FlushModel model = FlushModel::kHonoured);

  const std::vector<LogEntry>& log() const { return log_; }
  FlushModel model() const { return model_; }

  // Writes logged before the returned index are durable at `position`
  // (0 under kIgnored).
  uint64_t DurableBoundary(uint64_t position) const;

  // Builds the medium at `p`. REQUIRES: p.position <= log().size().
  CrashState Build(const CrashPoint& p);

  // Crash points in non-decreasing position order: one per mode of
  // `at_flush` right after each successful kFlushDone ("at-flush"), then
  // `random` kDropReorderTear points uniform over [0, log size]
  // ("between-flushes"), each with its own seed derived from `seed`.
  std::vector<CrashPoint> PlanCrashPoints(const std::vector<Unflushed>& at_flush, size_t random,
                                          uint64_t seed) const;

 private:
  void AdvanceDurable(uint64_t boundary);

  std::vector<LogEntry> log_;
  std::vector<std::byte> initial_;
  FlushModel model_;
  std::vector<uint64_t> boundary_;  // boundary_[p]: DurableBoundary(p)
  // Incremental: the initial image plus the successful writes logged
  // before durable_upto_.
  std::vector<std::byte> durable_;
  uint64_t durable_upto_ = 0;
};

}  // namespace stablecache
