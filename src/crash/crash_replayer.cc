#include "crash/crash_replayer.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include <fmt/format.h>

namespace stablecache {

namespace {

constexpr uint64_t kPiece = 4096;

// splitmix64: small, seedable, and the same on every platform (unlike the
// distributions of <random>), so a seed names one state everywhere.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
};

struct Piece {
  const LogEntry* write;
  uint64_t from, len;  // byte range inside the write
};

void Apply(std::vector<std::byte>& image, const LogEntry& w, uint64_t from, uint64_t len) {
  assert(w.offset + from + len <= image.size());
  std::memcpy(image.data() + w.offset + from, w.data->data() + from, len);
}

bool IsOkWrite(const LogEntry& e) { return e.kind == LogEntry::Kind::kWrite && e.status.ok(); }

}  // namespace

const char* FlushModelName(FlushModel m) { return m == FlushModel::kHonoured ? "flushes-honoured" : "flushes-ignored"; }

const char* UnflushedName(Unflushed u) {
  switch (u) {
    case Unflushed::kDropAll: return "drop-all";
    case Unflushed::kApplyAll: return "apply-all";
    case Unflushed::kDropReorderTear: return "drop-reorder-tear-4k";
  }
  return "?";
}

std::string CrashState::Describe() const {
  return fmt::format(
      "crash at log position {} ({}, unflushed {}, seed {:#x}): durable boundary {}, {} durable writes, "
      "{} unflushed ({} in flight): {} dropped, {} applied, {} torn",
      point.position, point.kind, UnflushedName(point.unflushed), point.seed, durable_boundary, durable_writes,
      unflushed_writes, in_flight, dropped, applied, torn);
}

CrashReplayer::CrashReplayer(std::vector<LogEntry> log, std::vector<std::byte> initial, FlushModel model)
    : log_(std::move(log)), initial_(std::move(initial)), model_(model), durable_(initial_) {
  boundary_.assign(log_.size() + 1, 0);
  uint64_t b = 0;
  for (size_t i = 0; i < log_.size(); i++) {
    const LogEntry& e = log_[i];
    if (model_ == FlushModel::kHonoured && e.kind == LogEntry::Kind::kFlushDone && e.status.ok())
      b = std::max(b, e.flush_index);
    boundary_[i + 1] = b;
  }
}

uint64_t CrashReplayer::DurableBoundary(uint64_t position) const { return boundary_.at(position); }

void CrashReplayer::AdvanceDurable(uint64_t boundary) {
  if (boundary < durable_upto_) {
    durable_ = initial_;
    durable_upto_ = 0;
  }
  for (; durable_upto_ < boundary; durable_upto_++) {
    const LogEntry& e = log_[durable_upto_];
    if (IsOkWrite(e)) Apply(durable_, e, 0, e.length());
  }
}

CrashState CrashReplayer::Build(const CrashPoint& p) {
  CrashState st;
  st.point = p;
  const uint64_t pos = p.position;
  const uint64_t boundary = DurableBoundary(pos);
  st.durable_boundary = boundary;
  AdvanceDurable(boundary);
  st.image = durable_;

  // 1. Sort the writes into durable and unflushed.
  std::vector<const LogEntry*> fua, unflushed;
  const bool honour = model_ == FlushModel::kHonoured;
  for (uint64_t i = 0; i < log_.size(); i++) {
    const LogEntry& e = log_[i];
    if (e.kind != LogEntry::Kind::kWrite) continue;
    if (i >= pos) {
      if (e.submitted_at < pos) {  // in flight at the crash
        unflushed.push_back(&e);
        st.in_flight++;
      }
      continue;
    }
    if (!e.status.ok()) unflushed.push_back(&e);
    else if (i < boundary) st.durable_writes++;
    else if (honour && e.fua) fua.push_back(&e);
    else unflushed.push_back(&e);
  }
  st.durable_writes += fua.size();
  st.unflushed_writes = unflushed.size();

  // 2. The unflushed writes' fate.
  switch (p.unflushed) {
    case Unflushed::kDropAll:
      st.dropped = unflushed.size();
      break;
    case Unflushed::kApplyAll:
      for (const LogEntry* w : unflushed) Apply(st.image, *w, 0, w->length());
      st.applied = unflushed.size();
      break;
    case Unflushed::kDropReorderTear: {
      Rng rng{p.seed};
      std::vector<Piece> pieces;
      for (const LogEntry* w : unflushed) {
        const uint64_t fate = rng.Below(3);
        if (fate == 0) {
          st.dropped++;
          continue;
        }
        fate == 1 ? st.applied++ : st.torn++;
        for (uint64_t from = 0; from < w->length();) {
          const uint64_t dev = w->offset + from;
          const uint64_t len = std::min(w->length() - from, kPiece - dev % kPiece);
          if (fate == 1 || rng.Below(2) == 0) pieces.push_back(Piece{w, from, len});
          from += len;
        }
      }
      for (size_t i = pieces.size(); i > 1; i--) std::swap(pieces[i - 1], pieces[rng.Below(i)]);
      for (const Piece& pc : pieces) Apply(st.image, *pc.write, pc.from, pc.len);
      break;
    }
  }
  // 3. FUA writes past the boundary are durable whatever happened to the
  //    unflushed ones.
  for (const LogEntry* w : fua) Apply(st.image, *w, 0, w->length());
  return st;
}

std::vector<CrashPoint> CrashReplayer::PlanCrashPoints(const std::vector<Unflushed>& at_flush, size_t random,
                                                       uint64_t seed) const {
  std::vector<CrashPoint> points;
  Rng rng{seed};
  for (uint64_t i = 0; i < log_.size(); i++) {
    const LogEntry& e = log_[i];
    if (e.kind != LogEntry::Kind::kFlushDone || !e.status.ok()) continue;
    for (Unflushed u : at_flush) points.push_back(CrashPoint{i + 1, u, rng.Next(), "at-flush"});
  }
  for (size_t n = 0; n < random; n++)
    points.push_back(
        CrashPoint{rng.Below(log_.size() + 1), Unflushed::kDropReorderTear, rng.Next(), "between-flushes"});
  std::stable_sort(points.begin(), points.end(),
                   [](const CrashPoint& a, const CrashPoint& b) { return a.position < b.position; });
  return points;
}

}  // namespace stablecache
