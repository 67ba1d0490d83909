#include "crash/crash_replayer.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <set>

#include <fmt/format.h>

namespace stablecache {

namespace {

constexpr uint64_t kPiece = 4096;
constexpr uint64_t kBlock = 4096;

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
  int64_t index;       // of the write in the log
  uint64_t from, len;  // byte range inside the write
};

void Apply(std::vector<std::byte>& image, const LogEntry& w, uint64_t from, uint64_t len) {
  assert(w.offset + from + len <= image.size());
  std::memcpy(image.data() + w.offset + from, w.data->data() + from, len);
}

// Marks the blocks [from, from + len) of write `index` as its own in `source`.
void Own(std::vector<int64_t>& source, const LogEntry& w, int64_t index, uint64_t from, uint64_t len) {
  if (len == 0) return;
  const uint64_t first = (w.offset + from) / kBlock, last = (w.offset + from + len - 1) / kBlock;
  for (uint64_t b = first; b <= last && b < source.size(); b++) source[b] = index;
}

bool IsOkWrite(const LogEntry& e) { return e.kind == LogEntry::Kind::kWrite && e.status.ok(); }
bool IsAligned(const LogEntry& e) { return e.offset % kBlock == 0 && e.length() % kBlock == 0; }

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

const char* CorruptionKindName(CorruptionKind k) {
  switch (k) {
    case CorruptionKind::kBitFlip: return "bit-flip";
    case CorruptionKind::kTorn: return "torn";
    case CorruptionKind::kMisdirected: return "misdirected";
    case CorruptionKind::kLost: return "lost";
    case CorruptionKind::kStale: return "stale";
  }
  return "?";
}

std::string Corruption::Describe() const {
  return fmt::format("{} {} at device {} block {} ({})", in_flight ? "in-flight" : "at-rest", CorruptionKindName(kind),
                     device, block, detail);
}

std::string CrashState::Describe() const {
  return fmt::format(
      "crash at log position {} ({}, unflushed {}, seed {:#x}): durable boundary {}, {} durable writes, "
      "{} unflushed ({} in flight): {} dropped, {} applied, {} torn",
      point.position, point.kind, UnflushedName(point.unflushed), point.seed, durable_boundary, durable_writes,
      unflushed_writes, in_flight, dropped, applied, torn);
}

CrashReplayer::CrashReplayer(std::vector<LogEntry> log, std::vector<std::byte> initial, FlushModel model)
    : CrashReplayer(std::move(log), std::vector<std::vector<std::byte>>{std::move(initial)}, model) {}

CrashReplayer::CrashReplayer(std::vector<LogEntry> log, std::vector<std::vector<std::byte>> initials,
                             FlushModel model)
    : log_(std::move(log)), model_(model) {
  dev_.resize(initials.size());
  for (size_t d = 0; d < dev_.size(); d++) {
    Device& dv = dev_[d];
    dv.initial = std::move(initials[d]);
    dv.durable = dv.initial;
    const uint64_t blocks = (dv.initial.size() + kBlock - 1) / kBlock;
    dv.durable_source.assign(blocks, CrashState::kInitial);
    dv.versions.resize(blocks);
    dv.boundary.assign(log_.size() + 1, 0);
  }
  std::vector<uint64_t> b(dev_.size(), 0);
  for (size_t i = 0; i < log_.size(); i++) {
    const LogEntry& e = log_[i];
    assert(e.device < dev_.size());
    if (model_ == FlushModel::kHonoured && e.kind == LogEntry::Kind::kFlushDone && e.status.ok())
      b[e.device] = std::max(b[e.device], e.flush_index);
    for (size_t d = 0; d < dev_.size(); d++) dev_[d].boundary[i + 1] = b[d];
    if (e.kind == LogEntry::Kind::kWrite && IsAligned(e))
      for (uint64_t blk = e.offset / kBlock; blk < (e.offset + e.length()) / kBlock; blk++)
        dev_[e.device].versions.at(blk).push_back(i);
  }
}

uint64_t CrashReplayer::DurableBoundary(size_t device, uint64_t position) const {
  return dev_.at(device).boundary.at(position);
}

void CrashReplayer::AdvanceDurable(Device& d, size_t index, uint64_t boundary) {
  if (boundary < d.durable_upto) {
    d.durable = d.initial;
    std::fill(d.durable_source.begin(), d.durable_source.end(), CrashState::kInitial);
    d.durable_upto = 0;
  }
  for (; d.durable_upto < boundary; d.durable_upto++) {
    const LogEntry& e = log_[d.durable_upto];
    if (!IsOkWrite(e) || e.device != index) continue;
    Apply(d.durable, e, 0, e.length());
    Own(d.durable_source, e, static_cast<int64_t>(d.durable_upto), 0, e.length());
  }
}

CrashState CrashReplayer::Build(const CrashPoint& p) {
  CrashState st;
  st.point = p;
  const uint64_t pos = p.position;
  for (size_t d = 0; d < dev_.size(); d++) {
    const uint64_t boundary = DurableBoundary(d, pos);
    st.durable_boundaries.push_back(boundary);
    AdvanceDurable(dev_[d], d, boundary);
    st.images.push_back(dev_[d].durable);
    st.source.push_back(dev_[d].durable_source);
  }
  st.durable_boundary = st.durable_boundaries.at(0);

  // 1. Sort the writes into durable and unflushed.
  std::vector<std::pair<const LogEntry*, int64_t>> fua, unflushed;
  const bool honour = model_ == FlushModel::kHonoured;
  for (uint64_t i = 0; i < log_.size(); i++) {
    const LogEntry& e = log_[i];
    if (e.kind != LogEntry::Kind::kWrite) continue;
    const auto w = std::make_pair(&e, static_cast<int64_t>(i));
    if (i >= pos) {
      if (e.submitted_at < pos) {  // in flight at the crash
        unflushed.push_back(w);
        st.in_flight++;
      }
      continue;
    }
    if (!e.status.ok()) {
      // A failed write's fate is settled by the next flush of its device
      // that succeeds: as not written (what the device did is what a read
      // after that flush sees; here, nothing landed). Before it: unflushed.
      if (honour && i < st.durable_boundaries[e.device]) continue;
      unflushed.push_back(w);
    } else if (i < st.durable_boundaries[e.device]) st.durable_writes++;
    else if (honour && e.fua) fua.push_back(w);
    else unflushed.push_back(w);
  }
  st.durable_writes += fua.size();
  st.unflushed_writes = unflushed.size();
  for (const auto& [w, i] : unflushed) st.unflushed.push_back(static_cast<uint64_t>(i));

  auto apply = [&](const LogEntry& w, int64_t i, uint64_t from, uint64_t len) {
    Apply(st.images[w.device], w, from, len);
    Own(st.source[w.device], w, i, from, len);
  };
  // 2. The unflushed writes' fate.
  switch (p.unflushed) {
    case Unflushed::kDropAll:
      st.dropped = unflushed.size();
      break;
    case Unflushed::kApplyAll:
      for (const auto& [w, i] : unflushed) apply(*w, i, 0, w->length());
      st.applied = unflushed.size();
      break;
    case Unflushed::kDropReorderTear: {
      Rng rng{p.seed};
      std::vector<Piece> pieces;
      for (const auto& [w, i] : unflushed) {
        const uint64_t fate = rng.Below(3);
        if (fate == 0) {
          st.dropped++;
          continue;
        }
        fate == 1 ? st.applied++ : st.torn++;
        for (uint64_t from = 0; from < w->length();) {
          const uint64_t dev = w->offset + from;
          const uint64_t len = std::min(w->length() - from, kPiece - dev % kPiece);
          if (fate == 1 || rng.Below(2) == 0) pieces.push_back(Piece{w, i, from, len});
          from += len;
        }
      }
      for (size_t i = pieces.size(); i > 1; i--) std::swap(pieces[i - 1], pieces[rng.Below(i)]);
      for (const Piece& pc : pieces) apply(*pc.write, pc.index, pc.from, pc.len);
      break;
    }
  }
  // 3. FUA writes past the boundary are durable whatever happened to the
  //    unflushed ones.
  for (const auto& [w, i] : fua) apply(*w, i, 0, w->length());
  return st;
}

const std::byte* CrashReplayer::VersionBytes(size_t device, uint64_t block, int64_t write) const {
  if (write == CrashState::kInitial) return dev_[device].initial.data() + block * kBlock;
  const LogEntry& w = log_[static_cast<uint64_t>(write)];
  return w.data->data() + (block * kBlock - w.offset);
}

std::vector<Corruption> CrashReplayer::Corrupt(CrashState& st, const CorruptionPlan& plan) const {
  const uint64_t pos = st.point.position;
  Rng rng{plan.seed ^ 0xc0ffee5eedull};
  std::set<uint64_t> unflushed(st.unflushed.begin(), st.unflushed.end());
  auto block_bytes = [&](size_t d, uint64_t b) { return st.images[d].data() + b * kBlock; };
  // A version counts if its write was submitted before the crash.
  auto counts = [&](uint64_t i) { return i < pos || log_[i].submitted_at < pos; };
  // The versions a block may legitimately hold: since `since` (a log index,
  // or kInitial for every version including the initial one).
  auto differs_from_versions = [&](size_t d, uint64_t b, const std::byte* bytes, int64_t since) {
    if (since == CrashState::kInitial && std::memcmp(bytes, VersionBytes(d, b, CrashState::kInitial), kBlock) == 0)
      return false;
    if (std::memcmp(bytes, block_bytes(d, b), kBlock) == 0) return false;
    for (uint64_t i : dev_[d].versions[b])
      if (static_cast<int64_t>(i) >= since && counts(i) && std::memcmp(bytes, VersionBytes(d, b, static_cast<int64_t>(i)), kBlock) == 0)
        return false;
    return true;
  };
  // The successful versions of a block before write `before` (kInitial first).
  auto older_versions = [&](size_t d, uint64_t b, int64_t before) {
    std::vector<int64_t> out{CrashState::kInitial};
    for (uint64_t i : dev_[d].versions[b])
      if (static_cast<int64_t>(i) < before && log_[i].status.ok()) out.push_back(static_cast<int64_t>(i));
    return out;
  };
  auto durable_version = [&](size_t d, uint64_t b) {
    int64_t v = CrashState::kInitial;
    for (uint64_t i : dev_[d].versions[b])
      if (i < st.durable_boundaries[d] && log_[i].status.ok()) v = static_cast<int64_t>(i);
    return v;
  };

  // Candidate blocks, by group.
  struct Cand {
    size_t dev;
    uint64_t block;
    uint64_t group;
  };
  std::vector<Cand> eligible, at_rest, in_flight;
  std::vector<std::vector<std::optional<uint64_t>>> groups(dev_.size());
  for (size_t d = 0; d < dev_.size(); d++) {
    const uint64_t blocks = st.images[d].size() / kBlock;
    groups[d].resize(blocks);
    for (uint64_t b = 0; b < blocks; b++) {
      groups[d][b] = plan.group ? plan.group(d, b, std::span<const std::byte>(block_bytes(d, b), kBlock))
                                : std::optional<uint64_t>((uint64_t{d} << 40) | b);
      if (!groups[d][b]) continue;
      const Cand c{d, b, *groups[d][b]};
      eligible.push_back(c);
      const int64_t src = st.source[d][b];
      if (src == CrashState::kInitial || !IsAligned(log_[static_cast<uint64_t>(src)])) continue;
      (unflushed.count(static_cast<uint64_t>(src)) ? in_flight : at_rest).push_back(c);
    }
  }
  std::set<uint64_t> used;
  std::vector<Corruption> out;
  auto put = [&](size_t d, uint64_t b, const std::byte* bytes) { std::memcpy(block_bytes(d, b), bytes, kBlock); };

  for (size_t n = 0; n < plan.count && !plan.kinds.empty(); n++) {
    for (int attempt = 0; attempt < 64; attempt++) {
      const CorruptionKind kind = plan.kinds[rng.Below(plan.kinds.size())];
      const bool may_fly = kind == CorruptionKind::kBitFlip || kind == CorruptionKind::kTorn ||
                           kind == CorruptionKind::kMisdirected;
      bool fly;
      if (plan.at_rest && plan.in_flight && may_fly) fly = rng.Below(2) == 1;
      else if (plan.at_rest) fly = false;
      else if (plan.in_flight && may_fly) fly = true;
      else continue;
      const std::vector<Cand>& pool = fly ? in_flight : at_rest;
      if (pool.empty()) continue;
      const Cand c = pool[rng.Below(pool.size())];
      if (used.count(c.group)) continue;
      const size_t d = c.dev;
      const uint64_t b = c.block;
      const int64_t src = st.source[d][b];
      Corruption k{d, b, kind, fly, ""};
      std::vector<std::byte> bytes(block_bytes(d, b), block_bytes(d, b) + kBlock);
      bool ok = false;
      switch (kind) {
        case CorruptionKind::kBitFlip: {
          const uint64_t flips = 1 + rng.Below(3);
          std::string bits;
          for (uint64_t f = 0; f < flips; f++) {
            const uint64_t bit = rng.Below(kBlock * 8);
            bytes[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
            bits += fmt::format("{}{}", f ? "," : "", bit);
          }
          ok = differs_from_versions(d, b, bytes.data(), CrashState::kInitial);
          k.detail = fmt::format("bits {} of write {}", bits, src);
          break;
        }
        case CorruptionKind::kTorn: {
          const int64_t old = fly ? durable_version(d, b) : older_versions(d, b, src).back();
          const uint64_t cut = 512 * (1 + rng.Below(7));
          const bool old_first = rng.Below(2) == 0;
          const std::byte* o = VersionBytes(d, b, old);
          if (old_first) std::memcpy(bytes.data(), o, cut);
          else std::memcpy(bytes.data() + cut, o + cut, kBlock - cut);
          ok = differs_from_versions(d, b, bytes.data(), CrashState::kInitial);
          k.detail = fmt::format("write {} torn at byte {}: {} half from version {}", src, cut,
                                 old_first ? "first" : "second", old);
          break;
        }
        case CorruptionKind::kMisdirected: {
          // The block of write `src` meant for b lands at x instead.
          std::vector<Cand> targets;
          for (const Cand& t : eligible)
            if (t.dev == d && t.block != b && t.group != c.group && !used.count(t.group)) targets.push_back(t);
          if (targets.empty()) break;
          const Cand x = targets[rng.Below(targets.size())];
          const std::byte* w = VersionBytes(d, b, src);
          if (!differs_from_versions(d, x.block, w, CrashState::kInitial)) break;
          // At rest, b keeps its previous version (if that is wrong there).
          const int64_t prev = older_versions(d, b, src).back();
          const bool lose = !fly && differs_from_versions(d, b, VersionBytes(d, b, prev), src);
          put(d, x.block, w);
          used.insert(x.group);
          out.push_back(Corruption{d, x.block, kind, fly,
                                   fmt::format("write {} meant for block {} landed here", src, b)});
          if (lose) {
            put(d, b, VersionBytes(d, b, prev));
            used.insert(c.group);
            out.push_back(Corruption{d, b, kind, fly,
                                     fmt::format("write {} landed at block {}: holds version {}", src, x.block, prev)});
          }
          ok = true;
          break;
        }
        case CorruptionKind::kLost:
        case CorruptionKind::kStale: {
          std::vector<int64_t> older = older_versions(d, b, src);
          int64_t v = older.back();
          if (kind == CorruptionKind::kStale && older.size() >= 2) v = older[rng.Below(older.size() - 1)];
          const std::byte* vb = VersionBytes(d, b, v);
          ok = differs_from_versions(d, b, vb, src);
          std::memcpy(bytes.data(), vb, kBlock);
          k.detail = fmt::format("write {} {}: holds version {} ({} older versions)", src,
                                 kind == CorruptionKind::kLost ? "never landed" : "undone", v, older.size());
          break;
        }
      }
      if (kind == CorruptionKind::kMisdirected) {
        if (ok) break;
        continue;
      }
      if (!ok) continue;
      put(d, b, bytes.data());
      used.insert(c.group);
      out.push_back(std::move(k));
      break;
    }
  }
  return out;
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
