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
// Several devices, one log: devices built with a shared WriteLog (e.g. the
// leaves of every leg of a mirror) append to it under its one lock, so their
// entries share one total order and a crash point cuts all of them at the
// same instant. Each entry carries the index of the device that logged it
// (`device`, 0 for a device with a log of its own); a flush covers, and its
// kFlushDone makes durable, only the writes of its own device.
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
  // The device that logged it (its index in a shared WriteLog).
  uint32_t device = 0;

  uint64_t length() const { return data ? data->size() : 0; }
};
const char* LogEntryKindName(LogEntry::Kind k);

// One total order of log entries, shared by the devices that log into it.
// Thread-safe.
class WriteLog {
 public:
  // Appends `e`; returns its index.
  uint64_t Append(LogEntry e);
  // Appends a mark (device 0); returns its index.
  uint64_t Mark(std::string label);
  // A copy of the log so far (the bytes of each write are shared, not copied).
  std::vector<LogEntry> Snapshot() const;
  uint64_t Size() const;
  // REQUIRES: no bio in flight through a device logging here.
  void Clear();

 private:
  mutable std::mutex mu_;
  std::vector<LogEntry> log_;  // GUARDED_BY(mu_)
};

class LogWritesDevice final : public StackedDevice {
 public:
  // A device with a log of its own (device index 0).
  explicit LogWritesDevice(std::shared_ptr<BlockDevice> lower)
      : LogWritesDevice(std::move(lower), std::make_shared<WriteLog>(), 0) {}
  // A device logging into `log`, its entries tagged `device`.
  LogWritesDevice(std::shared_ptr<BlockDevice> lower, std::shared_ptr<WriteLog> log, uint32_t device)
      : StackedDevice(std::move(lower), "logwrites", Stability::kUnstable), log_(std::move(log)), device_(device) {}

  void Submit(BioPtr bio) override;

  // Appends a mark (tagged with this device); returns its index in the log.
  uint64_t Mark(std::string label);
  // A copy of the log so far (the bytes of each write are shared, not copied),
  // including the entries of the other devices of a shared log.
  std::vector<LogEntry> Snapshot() const { return log_->Snapshot(); }
  uint64_t Size() const { return log_->Size(); }
  // Forgets everything logged so far (e.g. the setup of a test), for every
  // device of a shared log. REQUIRES: no bio in flight through them.
  void Clear() { log_->Clear(); }
  const std::shared_ptr<WriteLog>& log() const { return log_; }
  uint32_t device_index() const { return device_; }

 private:
  uint64_t Append(LogEntry e) {
    e.device = device_;
    return log_->Append(std::move(e));
  }

  std::shared_ptr<WriteLog> log_;
  uint32_t device_;
};

}  // namespace stablecache
