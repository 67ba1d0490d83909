// LogWritesDevice: records what reaches the device below, for crash replay
// (after Linux's dm-log-writes).
//
// Every bio passes down unchanged in meaning. The layer appends to an
// in-memory log, under one lock, so the log is a single total order:
//  - kWrite     when a write *completes* (completion order), with its
//               offset, a copy of its bytes, its fua flag, its status, and
//               `submitted_at`: the log size when it was submitted. A write
//               with submitted_at < p and position >= p was in flight at
//               log position p.
//  - kFlush     when a flush is *submitted*, so it follows every write
//               that completed before it: exactly the writes it covers.
//  - kFlushDone when that flush completes (`flush_index` names its kFlush
//               entry, `status` its result). Only a successful kFlushDone
//               makes the writes its kFlush covers durable.
//  - kMark      a label a test inserts with Mark() (dm-log-writes marks),
//               e.g. "sync 3 acknowledged".
// Reads are passed down and not logged.
//
// Unlike dm-log-writes, which logs a write only once a flush covers it, this
// log keeps unflushed and in-flight writes too, so a replayer can also build
// the states where they are lost, reordered or torn (crash/crash_replayer.h).
//
// Exactness: the logged bytes are the bytes the device below receives. A
// write that is not already kStable is bounced once here (StabilizeBio), so
// nobody can change it between the copy and the lower device's DMA; this
// layer still declares kUnstable so it does not change the stable-write
// policy of the stack it watches. Lower layers must not modify a write's
// payload (none does). Thread-safe; the device must outlive its bios.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/stacked_device.h"

namespace stablecache {

struct LogEntry {
  enum class Kind : uint8_t { kWrite, kFlush, kFlushDone, kMark };
  Kind kind = Kind::kMark;
  // kWrite: where and what.
  uint64_t offset = 0;
  std::shared_ptr<const std::vector<std::byte>> data;
  bool fua = false;
  uint64_t submitted_at = 0;
  // kFlushDone: index of the kFlush entry it completes.
  uint64_t flush_index = 0;
  // kWrite, kFlushDone: the completion status.
  Status status;
  // kMark: the label.
  std::string label;

  uint64_t length() const { return data ? data->size() : 0; }
};
const char* LogEntryKindName(LogEntry::Kind k);

class LogWritesDevice final : public StackedDevice {
 public:
  explicit LogWritesDevice(std::shared_ptr<BlockDevice> lower)
      : StackedDevice(std::move(lower), "logwrites", Stability::kUnstable) {}

  void Submit(BioPtr bio) override;

  // Appends a mark; returns its index in the log.
  uint64_t Mark(std::string label);
  // A copy of the log so far (the bytes of each write are shared, not copied).
  std::vector<LogEntry> Snapshot() const;
  uint64_t Size() const;
  // Forgets everything logged so far (e.g. the setup of a test).
  // REQUIRES: no bio in flight through this layer.
  void Clear();

 private:
  uint64_t Append(LogEntry e);

  mutable std::mutex mu_;
  std::vector<LogEntry> log_;  // GUARDED_BY(mu_)
};

}  // namespace stablecache
