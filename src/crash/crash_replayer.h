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
//    every failed write not yet followed by a successful flush of its
//    device (a failed write such a flush covers is settled as not written:
//    a device that reported the error and then completed a flush has
//    finished with it, and a read after the flush sees the old bytes).
//    Its fate depends on Unflushed:
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
// Several devices (a shared WriteLog, devices/logwrites_device.h): each
// device has its own image and its own durable boundary (a device's flush
// makes only its own writes durable); a crash point cuts every device at the
// same log position, so every leg of a mirror or parity crashes at one
// instant. A one-device log is the case devices() == 1.
//
// Corruption (Corrupt(), after Build()): faults of the medium below every
// layer, outside the crash model, each recorded (device, block, kind, when)
// so a checker can demand that it is detected or repaired:
//   kBitFlip      1 to 3 bits of a block flip;
//   kTorn         a 4 KiB block is half old, half new (cut at a 512-byte
//                 boundary): the one thing the crash model never does;
//   kMisdirected  a write's block lands at another block X of the device;
//                 at rest its intended block keeps its previous version too
//                 (both recorded), in flight only X is (dropping an
//                 unflushed write is a legal crash state anyway);
//   kLost         (at rest only) a durable write of a block never landed:
//                 the block holds its previous version;
//   kStale        (at rest only) an older version of a block reappears (an
//                 earlier one than kLost's when there is one).
// At rest = the block holds a durable write and is corrupted afterwards; in
// flight = the block holds an unflushed write that was corrupted as it
// landed ("old" for a torn one is the block's durable content). A
// corruption is injected only where its result differs from every version
// the block may legitimately hold (for kLost/kStale: from its durable
// version and every later write submitted before the crash; for the others:
// from every version the block ever had), so a correct stack must detect
// it. Corruption assumes 4 KiB-aligned writes (every layer issues them).
//
// FlushModel::kIgnored is the negative control: a medium that ignores
// flushes (and FUA), so every write is unflushed and may be dropped, torn or
// reordered. A checker that passes under it checks nothing.
//
// Not thread-safe: one replayer per thread. Build() is incremental when
// called with non-decreasing positions (PlanCrashPoints returns them so).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
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
  std::vector<std::vector<std::byte>> images;  // the whole medium of each device
  // Device 0's durable boundary: its writes logged before this index are
  // flushed (per device: durable_boundaries).
  uint64_t durable_boundary = 0;
  std::vector<uint64_t> durable_boundaries;
  // Per device and 4 KiB block: the log index of the write whose bytes the
  // block holds, or kInitial.
  static constexpr int64_t kInitial = -1;
  std::vector<std::vector<int64_t>> source;
  std::vector<uint64_t> unflushed;  // log indices of the unflushed writes (landed or not)
  uint64_t durable_writes = 0;
  uint64_t unflushed_writes = 0;  // of which:
  uint64_t dropped = 0, applied = 0, torn = 0;
  uint64_t in_flight = 0;         // unflushed writes still in flight at the crash
  std::string Describe() const;   // one line: point, seed, counts
};

enum class CorruptionKind : uint8_t { kBitFlip, kTorn, kMisdirected, kLost, kStale };
const char* CorruptionKindName(CorruptionKind k);
constexpr CorruptionKind kAllCorruptionKinds[] = {CorruptionKind::kBitFlip, CorruptionKind::kTorn,
                                                  CorruptionKind::kMisdirected, CorruptionKind::kLost,
                                                  CorruptionKind::kStale};

struct Corruption {
  size_t device = 0;
  uint64_t block = 0;  // 4 KiB block of the device
  CorruptionKind kind = CorruptionKind::kBitFlip;
  bool in_flight = false;
  std::string detail;  // e.g. which write, which bits, which version
  std::string Describe() const;
};

// Which blocks may be corrupted, and how many at once.
struct CorruptionPlan {
  uint64_t seed = 0;
  size_t count = 1;  // corruptions attempted (fewer if no block qualifies)
  std::vector<CorruptionKind> kinds{std::begin(kAllCorruptionKinds), std::end(kAllCorruptionKinds)};
  bool at_rest = true;
  bool in_flight = true;
  // A block may be corrupted if `group` gives it a group (e.g. the stack
  // block it holds a copy of, or its parity stripe), and no two corrupted
  // blocks share a group, so redundancy can always repair. `content` is the
  // block's bytes before any corruption. Default: every block, one group each.
  std::function<std::optional<uint64_t>(size_t device, uint64_t block, std::span<const std::byte> content)> group;
};


class CrashReplayer {
 public:
  // One device. REQUIRES: every write of `log` lies inside `initial`.
  CrashReplayer(std::vector<LogEntry> log, std::vector<std::byte> initial,
                FlushModel model = FlushModel::kHonoured);
  // Device d starts as initials[d]. REQUIRES: every entry's device <
  // initials.size(), every write inside its device's image.
  CrashReplayer(std::vector<LogEntry> log, std::vector<std::vector<std::byte>> initials,
                FlushModel model = FlushModel::kHonoured);

  const std::vector<LogEntry>& log() const { return log_; }
  FlushModel model() const { return model_; }
  size_t devices() const { return dev_.size(); }

  // Device 0's (`device`'s) writes logged before the returned index are
  // durable at `position` (0 under kIgnored).
  uint64_t DurableBoundary(uint64_t position) const { return DurableBoundary(0, position); }
  uint64_t DurableBoundary(size_t device, uint64_t position) const;

  // Builds every device's medium at `p`. REQUIRES: p.position <= log().size().
  CrashState Build(const CrashPoint& p);

  // Corrupts the images of `state` (built by this replayer) as `plan` says,
  // seeded; returns what it injected.
  std::vector<Corruption> Corrupt(CrashState& state, const CorruptionPlan& plan) const;

  // Crash points in non-decreasing position order: one per mode of
  // `at_flush` right after each successful kFlushDone of any device ("at-flush"), then
  // `random` kDropReorderTear points uniform over [0, log size]
  // ("between-flushes"), each with its own seed derived from `seed`.
  std::vector<CrashPoint> PlanCrashPoints(const std::vector<Unflushed>& at_flush, size_t random,
                                          uint64_t seed) const;

 private:
  struct Device {
    std::vector<std::byte> initial;
    std::vector<uint64_t> boundary;  // boundary[p]: DurableBoundary(p)
    // Incremental: the initial image plus the device's successful writes
    // logged before durable_upto, and which write each block holds.
    std::vector<std::byte> durable;
    std::vector<int64_t> durable_source;
    uint64_t durable_upto = 0;
    // Per 4 KiB block: the successful 4 KiB-aligned writes covering it, in log order.
    std::vector<std::vector<uint64_t>> versions;
  };
  void AdvanceDurable(Device& d, size_t index, uint64_t boundary);
  // The bytes version `write` (or kInitial) leaves in `block` of `device`.
  const std::byte* VersionBytes(size_t device, uint64_t block, int64_t write) const;

  std::vector<LogEntry> log_;
  std::vector<Device> dev_;
  FlushModel model_;
};

}  // namespace stablecache
