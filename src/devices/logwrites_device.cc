#include "devices/logwrites_device.h"

#include "block/bounce.h"

namespace stablecache {

const char* LogEntryKindName(LogEntry::Kind k) {
  switch (k) {
    case LogEntry::Kind::kWrite: return "write";
    case LogEntry::Kind::kFlush: return "flush";
    case LogEntry::Kind::kFlushDone: return "flush-done";
    case LogEntry::Kind::kMark: return "mark";
  }
  return "?";
}

uint64_t WriteLog::Append(LogEntry e) {
  std::lock_guard lk(mu_);
  log_.push_back(std::move(e));
  return log_.size() - 1;
}

uint64_t WriteLog::Mark(std::string label) {
  LogEntry e;
  e.kind = LogEntry::Kind::kMark;
  e.label = std::move(label);
  return Append(std::move(e));
}

std::vector<LogEntry> WriteLog::Snapshot() const {
  std::lock_guard lk(mu_);
  return log_;
}

uint64_t WriteLog::Size() const {
  std::lock_guard lk(mu_);
  return log_.size();
}

void WriteLog::Clear() {
  std::lock_guard lk(mu_);
  log_.clear();
}

void LogWritesDevice::Submit(BioPtr bio) {
  counters_.CountBio(*bio);
  HoldDeviceWhileInFlight(*this, *bio);
  switch (bio->op) {
    case BioOp::kRead:
      lower_->Submit(std::move(bio));
      return;
    case BioOp::kWrite: {
      // 1. Make the payload immutable until completion, then copy it: the
      //    copy is then exactly what the device below receives.
      StabilizeBio(*bio, Stability::kStable, counters_.bytes_bounced);
      auto data = std::make_shared<std::vector<std::byte>>(bio->Length());
      bio->CopyTo(data->data());
      // 2. Note where the log stood at submission (in-flight detection).
      const uint64_t submitted_at = Size();
      // 3. Log at completion, before anyone above learns of it, so whatever
      //    the completion triggers (a Sync's flush) is logged after it.
      Bio::Completion inner = std::move(bio->on_complete);
      bio->on_complete = [this, data = std::move(data), submitted_at, inner = std::move(inner)](BioPtr b,
                                                                                               Status st) mutable {
        LogEntry e;
        e.kind = LogEntry::Kind::kWrite;
        e.offset = b->offset;
        e.data = std::move(data);
        e.fua = b->fua;
        e.submitted_at = submitted_at;
        e.status = st;
        if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);
        Append(std::move(e));
        if (inner) inner(std::move(b), std::move(st));
      };
      lower_->Submit(std::move(bio));
      return;
    }
    case BioOp::kFlush: {
      // Logged at submission: it covers the writes logged before it.
      LogEntry f;
      f.kind = LogEntry::Kind::kFlush;
      const uint64_t index = Append(std::move(f));
      Bio::Completion inner = std::move(bio->on_complete);
      bio->on_complete = [this, index, inner = std::move(inner)](BioPtr b, Status st) mutable {
        LogEntry e;
        e.kind = LogEntry::Kind::kFlushDone;
        e.flush_index = index;
        e.status = st;
        if (!st.ok()) counters_.errors.fetch_add(1, std::memory_order_relaxed);
        Append(std::move(e));
        if (inner) inner(std::move(b), std::move(st));
      };
      lower_->Submit(std::move(bio));
      return;
    }
  }
}

uint64_t LogWritesDevice::Mark(std::string label) {
  LogEntry e;
  e.kind = LogEntry::Kind::kMark;
  e.label = std::move(label);
  return Append(std::move(e));
}

}  // namespace stablecache
