// Crash replay of a whole redundant stack: several legs logging into one
// shared WriteLog, one crash instant for all of them, corruption injected
// below the integrity layer, and a checker that reassembles the stack from
// the rebuilt images and reads every block back through it.
//
// Shapes (built by hand from the device classes, one leg = memory leaf,
// logwrites (recording only), optional integrity with a CRC32C guard, so a
// CRC16 collision never hides a corruption):
//   single            [integrity] over memory
//   mirror            mirror of `legs` legs
//   parity            parity (RAID-5) of `legs` legs
//
// Workload (RecordWorkload): straight BlockDevice bios on the stack's top,
// no cache. Setup writes every block once (op 0) and flushes; that state is
// the initial image and the log starts after it. Then, seeded: writes of 1
// to 8 blocks (up to `queue_depth` in flight, never two in flight over one
// block, as the page cache guarantees), Syncs (wait for the writes, flush,
// then Mark "sync k acknowledged"), flushes racing writes (no promise), and
// live reads. Every block a write carries is self-describing: a header
// (magic, op, block) and bytes derived from both, so the checker, and the
// corruption planner looking at a leaf, can tell which version of which
// stack block a 4 KiB block holds, wherever a layer put it.
//
// Checker (ReplayAndCheck), per crash state, on a stack reassembled from
// the images (MemoryDevice + WriteRaw), reading every block of the top:
//  (a) a block reads back as the version current when the last Sync
//      acknowledged before the crash started, or a version written later
//      and issued before the crash (without a Sync: the setup version or a
//      later one); anything else is lost or invented data;
//  (b) no read fails with kIntegrityError unless the stack cannot repair:
//      single: a corruption was injected into that block; mirror: never
//      (at most one leg of a block is corrupted); parity: a corruption in
//      its stripe and the stripe had a write in flight at the crash (its
//      parity may be stale, so it must not feed a rebuild: the read fails);
//  (c) every injected corruption is detected or repaired: besides (a) on
//      the top, each corrupted leg block read through its leg's top (its
//      integrity layer; the top itself for a single stack), after the reads
//      of (a), must fail with kIntegrityError (detected) or return an
//      allowed version (repaired), not the injected bytes, unless those
//      bytes are still a version the stack may return there by (a) (a lost
//      leg write whose older version no acknowledged Sync superseded:
//      counted as masked, not as a failure). This assumes a
//      leg's data block b sits at leaf block b (true today; a layer that
//      moves its data must update LegBlockOf below).
// Corruption targets only blocks that hold a workload block (found by their
// header): metadata (tags, superblocks) and parity chunks are not targeted.
#pragma once

#include <chrono>
#include <map>
#include <ostream>
#include <memory>
#include <string>
#include <vector>

#include "crash/crash_replayer.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"

namespace stablecache::crashstack {

enum class Redundancy : uint8_t { kNone, kMirror, kParity };

struct StackShape {
  Redundancy redundancy = Redundancy::kNone;
  size_t legs = 1;
  bool integrity = true;
  uint64_t leaf_bytes = 256 << 10;
  std::string Name() const;  // e.g. "mirror(2 x integrity,memory)"
};
// For gtest's parameter names in failure messages.
inline void PrintTo(const StackShape& s, std::ostream* os) { *os << s.Name(); }

struct BuiltStack {
  std::shared_ptr<BlockDevice> top;
  std::vector<std::shared_ptr<BlockDevice>> legs;  // each leg's top
  std::vector<std::shared_ptr<MemoryDevice>> leaves;
  std::vector<std::shared_ptr<LogWritesDevice>> logs;  // when built with a log
};
// Over `leaves` (one per leg); with `log`, a logwrites layer over each leaf
// logs into it as device <leg index>.
Result<BuiltStack> BuildStack(const StackShape& shape, std::vector<std::shared_ptr<MemoryDevice>> leaves,
                              std::shared_ptr<WriteLog> log);

// The bytes op `op` writes to stack block `block`; its header names both.
void FillBlock(uint32_t op, uint64_t block, std::byte* out);
struct BlockId {
  uint32_t op;
  uint64_t block;
};
// Which op's version of which block these 4 KiB are, if exactly one.
std::optional<BlockId> ParseBlock(const std::byte* in);

struct WorkloadOptions {
  uint64_t seed = 1;
  uint64_t ops = 150;
  size_t queue_depth = 4;
  std::chrono::microseconds delay{20};  // the leaves' late-copy delay
};

struct Version {
  uint32_t op;
  uint64_t issued_at;  // log size when submitted
};
struct SyncPoint {
  uint64_t mark;
  std::vector<size_t> current;  // per block: index into versions[block] when the Sync started
};
struct Recording {
  StackShape shape;
  uint64_t blocks = 0;  // of the stack's top
  std::vector<std::vector<std::byte>> initial;  // per leaf
  std::vector<LogEntry> log;
  std::vector<std::vector<Version>> versions;  // per block, in issue order; [0] is the setup
  std::vector<SyncPoint> syncs;
  uint64_t writes = 0, flushes = 0, syncs_acked = 0;
};
Result<Recording> RecordWorkload(const StackShape& shape, const WorkloadOptions& opts);

struct CheckOptions {
  FlushModel model = FlushModel::kHonoured;
  uint64_t states = 100;  // at least (every flush in three modes, then random points)
  uint64_t seed = 1;
  size_t corruptions = 0;  // per crash state; 0: none
  // Crash only right after each acknowledged Sync (nothing unflushed, each
  // point repeated with other corruption seeds): corruption at rest without
  // crash inconsistency, which a stack must handle even before it is
  // crash-consistent.
  bool after_syncs_only = false;
  std::vector<CorruptionKind> kinds{std::begin(kAllCorruptionKinds), std::end(kAllCorruptionKinds)};
};

struct Verdict {
  uint64_t states = 0, failing_states = 0;
  uint64_t lost_or_invented = 0;         // (a)
  uint64_t false_integrity_errors = 0;   // (b)
  uint64_t other_errors = 0;             // reads failing otherwise, stacks that do not open
  uint64_t undetected = 0;               // (c): injected bytes returned
  uint64_t corruptions = 0;  // injected
  // Each injected corruption, read back through its leg's top after the
  // stack's reads: still detected (kIntegrityError), repaired (an allowed
  // version), or masked (the injected bytes, but still a version the stack
  // may return there). Anything else is a failure.
  uint64_t detected = 0, repaired = 0, masked = 0;
  std::map<std::string, uint64_t> corruptions_by_kind;
  std::map<std::string, uint64_t> states_by_kind;
  std::vector<std::string> reports;  // the first few
  uint64_t failures() const { return lost_or_invented + false_integrity_errors + other_errors + undetected; }
};
Verdict ReplayAndCheck(const Recording& rec, const CheckOptions& opts);
void Add(Verdict& into, const Verdict& v);
std::string Summary(const Verdict& v);

// `rounds` workloads of `ops` operations, each recorded from a fresh stack
// (seed check.seed + round * 0x1000193) and replayed over ceil(states /
// rounds) crash states or more.
struct RoundsResult {
  Verdict verdict;
  uint64_t log_entries = 0, writes = 0, syncs = 0;
  std::string error;  // a workload that could not run (the live stack failed)
  std::string Line(const StackShape& shape) const;  // one line for the test log
};
RoundsResult RunRounds(const StackShape& shape, uint64_t rounds, uint64_t ops, const CheckOptions& check);

}  // namespace stablecache::crashstack
