// Crash replay of a mixed workload: nothing Sync acknowledged is lost and no
// byte reads as something never written there, at every crash state the
// replayer builds.
//
// Crash model: DropReorderTear4K (crash/crash_replayer.h). At each
// successful flush: the writes it covers are durable and the unflushed ones
// are all dropped, all applied, or dropped/torn/reordered. Between flushes,
// at random log positions: unflushed and in-flight writes are each dropped,
// applied whole, or torn at 4 KiB, and land in a random order.
//
// Stack: logwrites over a memory leaf (policy auto, i.e. none). Workload: one
// thread on three File handles of one device: sub-page and multi-page writes
// of per-operation patterns, writes past EOF, truncates up and down, Sync
// (a Mark "sync k acknowledged" follows each OK) and SyncRange, with a
// small cache (eviction) and a 1 ms flusher (background writeback).
//
// Checks, per crash state, on a fresh Cache over the rebuilt medium opened
// with the largest size the workload reaches (the file size is not on the
// medium yet):
//  - durability: each byte below the size of the last Sync acknowledged
//    before the crash holds the value it had when that Sync started, or a
//    value a later operation issued before the crash wrote there (extends,
//    and truncates, write zeros);
//  - no invented data: each byte holds zero, its initial medium byte, or a
//    value the workload wrote to that offset.
//
// Each stable-write policy runs STABLECACHE_CRASH_ROUNDS workloads (24; 8
// under sanitizers) of STABLECACHE_CRASH_OPS operations (200), each from a
// fresh initial medium, and replays at least STABLECACHE_CRASH_STATES crash
// states over them (1200; 300 under sanitizers): every flush in three
// states, the rest at random positions. STABLECACHE_CRASH_SEED changes the
// workloads and crash points; STABLECACHE_CRASH_TRACE=first|OFFSET prints a
// byte's history in the log. The operations and crash points are fixed by
// the seed; the interleaving with background writeback is not.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <functional>
#include <map>
#include <optional>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cache/size_record.h"
#include "crash/crash_replayer.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"

namespace stablecache {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kDefaultStates = 300;
constexpr uint64_t kDefaultRounds = 8;
#else
constexpr uint64_t kDefaultRounds = 24;
constexpr uint64_t kDefaultStates = 1200;
#endif
constexpr uint64_t kMaxFile = 256 << 10;  // the file limit
// The device: the file, then its size record (cache/size_record.h).
constexpr uint64_t kDevice = kMaxFile + kSizeRecordBytes;

// An initial medium: `fill` below kMaxFile, a file of `size` bytes on record.
std::vector<std::byte> InitialMedium(uint64_t size, const std::function<std::byte(uint64_t)>& fill) {
  std::vector<std::byte> image(kDevice);
  for (uint64_t b = 0; b < kMaxFile; b++) image[b] = fill(b);
  auto rec = EncodeRecord(MakeSizeRecord(Uuid::Random(), 1, size, kDevice));
  std::memcpy(image.data() + SizeRecordOffset(kDevice) + kRecordBytes, rec.data(), rec.size());  // gen 1: slot B
  return image;
}
constexpr size_t kHandles = 3;

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : def;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}
// The byte operation `op` writes at `offset`: never zero, so zeros only
// ever come from extends, truncates and holes. Op 0 is the initial medium.
uint8_t PatternByte(uint32_t op, uint64_t offset) {
  return static_cast<uint8_t>(1 + Mix((uint64_t{op} << 40) ^ offset) % 255);
}

struct Rng {
  uint64_t s;
  uint64_t Next() { return s = Mix(s + 0x9e3779b97f4a7c15ull); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
};

// One byte range an operation wrote: its pattern, or zeros.
struct Range {
  uint64_t offset, len;
  uint32_t op;
  bool zeros;
  uint64_t issued_at;  // log size when the operation started
  uint8_t At(uint64_t b) const { return zeros ? 0 : PatternByte(op, b); }
};

struct SyncRecord {
  uint64_t mark;      // log index of "sync k acknowledged"
  uint64_t size;      // file size when the Sync started
  std::vector<uint8_t> content;  // file bytes when the Sync started
  size_t ranges_before;          // ranges written before it started
};

// What the workload did, as the checker needs it.
struct Recording {
  std::vector<std::byte> initial;
  std::vector<LogEntry> log;
  std::vector<Range> ranges;
  std::vector<std::string> op_names;  // by op id
  std::vector<SyncRecord> syncs;
  uint64_t initial_size = 0;
  uint64_t max_size = 0;
  uint64_t ops = 0, syncs_ok = 0, sync_ranges = 0, truncates = 0, extends = 0, evictions = 0, pages_written = 0;
};

class Workload {
 public:
  // `mapped`: the file is mappable, and a fifth of the steps store into (or
  // load from) a mapping of it instead.
  // `direct`: a quarter of the steps are direct writes (past EOF too) and
  // direct reads, 512-byte aligned, mixed with the buffered ones.
  Workload(uint64_t seed, StablePolicy policy, bool mapped = false, bool direct = false)
      : rng_{seed}, policy_(policy), mapped_(mapped), direct_(direct) {}

  void Run(uint64_t ops, Recording& rec) {
    // The file starts over an initial medium, at a size that is rarely
    // page-aligned: the medium's bytes past EOF share its last page.
    rec.initial_size = rec.max_size = 4096 + rng_.Below(kMaxFile / 2);
    rec.initial = InitialMedium(rec.initial_size, [](uint64_t b) { return std::byte{PatternByte(0, b)}; });
    content_.assign(kMaxFile, 0);
    for (uint64_t b = 0; b < rec.initial_size; b++) content_[b] = PatternByte(0, b);
    size_ = rec.initial_size;
    rec.op_names.push_back("initial medium");

    // Late copy: writes complete on the device's thread after a delay, so
    // several are in flight at once and complete out of the cache's sight.
    auto mem = MemoryDevice::Create(
        {.size_bytes = kDevice, .late_copy = true, .delay = std::chrono::microseconds(20)});
    ASSERT_TRUE(mem);
    (*mem)->WriteRaw(0, rec.initial.data(), kDevice);
    log_ = std::make_shared<LogWritesDevice>(*mem);
    CacheOptions co;
    co.capacity_bytes = 24 * 4096;  // the file is 64 pages: eviction
    co.io_reserve_frames = 2;  // bounce waits for frames
    co.dirty_background_ratio = 0.05;
    co.dirty_ratio = 0.25;
    co.writeback_interval_ms = 1;
    co.max_bio_pages = 8;
    co.policy = policy_;
    auto cache = Cache::Create(co);
    ASSERT_TRUE(cache) << cache.error().ToString();
    std::vector<std::unique_ptr<File>> files;
    for (size_t h = 0; h < kHandles; h++) {
      auto f = (*cache)->Open(log_, {.initial_size = rec.initial_size, .mappable = mapped_});
      ASSERT_TRUE(f) << f.error().ToString();
      files.push_back(std::move(*f));
    }
    if (mapped_) {
      auto m = files[0]->Map(0, kMaxFile, MapAccess::kReadWrite);
      ASSERT_TRUE(m) << m.error().ToString();
      map_ = std::move(*m);
    }
    for (uint64_t i = 0; i < ops && !::testing::Test::HasFatalFailure(); i++) {
      File& f = *files[rng_.Below(kHandles)];
      Step(f, rec);
    }
    if (map_) {
      EXPECT_TRUE(map_->Unmap().ok());
    }
    for (auto& f : files) EXPECT_TRUE(f->Close().ok());
    CacheStats cs = (*cache)->Stats();
    rec.evictions = cs.evictions;
    rec.pages_written = cs.pages_written;
    rec.log = log_->Snapshot();
  }

 private:
  uint32_t BeginOp(Recording& rec, std::string name) {
    rec.ops++;
    rec.op_names.push_back(std::move(name));
    issued_at_ = log_->Size();
    return static_cast<uint32_t>(rec.op_names.size() - 1);
  }
  void Record(Recording& rec, uint64_t offset, uint64_t len, uint32_t op, bool zeros) {
    if (len == 0) return;
    Range r{offset, len, op, zeros, issued_at_};
    for (uint64_t b = offset; b < offset + len; b++) content_[b] = r.At(b);
    rec.ranges.push_back(r);
  }
  void SetSize(Recording& rec, uint64_t size) {
    size_ = size;
    rec.max_size = std::max(rec.max_size, size);
  }

  void DoWrite(File& f, Recording& rec, uint64_t offset, uint64_t len, const char* what) {
    len = std::min(len, kMaxFile - offset);
    if (len == 0) return;
    uint32_t op = BeginOp(rec, fmt::format("{} [{}, {})", what, offset, offset + len));
    std::vector<std::byte> data(len);
    for (uint64_t i = 0; i < len; i++) data[i] = std::byte{PatternByte(op, offset + i)};
    auto n = f.Write(offset, data);
    ASSERT_TRUE(n && *n == len) << rec.op_names[op] << ": " << (n ? "short" : n.error().ToString());
    if (offset > size_) Record(rec, size_, offset - size_, op, true);  // the gap reads as zeros
    Record(rec, offset, len, op, false);
    if (offset + len > size_) {
      SetSize(rec, offset + len);
      rec.extends++;
    }
  }

  // A store through the mapping, inside EOF (past it is SIGBUS), or a load
  // that checks what the mapping shows.
  void MappedStep(Recording& rec) {
    if (size_ == 0) return;
    const uint64_t off = rng_.Below(size_);
    const uint64_t len = 1 + rng_.Below(std::min<uint64_t>(3 * 4096, size_ - off));
    if (rng_.Below(3) == 0) {
      for (uint64_t i = 0; i < len; i++)
        ASSERT_EQ(static_cast<uint8_t>(map_->data()[off + i]), content_[off + i]) << "mapped load at " << off + i;
      return;
    }
    uint32_t op = BeginOp(rec, fmt::format("mapped store [{}, {})", off, off + len));
    for (uint64_t i = 0; i < len; i++) map_->data()[off + i] = std::byte{PatternByte(op, off + i)};
    Record(rec, off, len, op, false);
  }

  // A direct write from an aligned buffer, anywhere up to a little past
  // EOF (a gap becomes zeros), or a direct read that checks what it gets.
  void DirectStep(File& f, Recording& rec) {
    std::unique_ptr<std::byte, decltype(&std::free)> buf(
        static_cast<std::byte*>(std::aligned_alloc(4096, 16 * 4096)), &std::free);
    if (rng_.Below(3) == 0) {
      if (size_ == 0) return;
      const uint64_t off = rng_.Below(size_) & ~uint64_t{511};
      const uint64_t len = 512 * (1 + rng_.Below(48));
      auto n = f.DirectRead(off, {buf.get(), len});
      ASSERT_TRUE(n) << n.error().ToString();
      ASSERT_EQ(*n, std::min(len, size_ - off));
      for (uint64_t i = 0; i < *n; i++)
        ASSERT_EQ(static_cast<uint8_t>(buf.get()[i]), content_[off + i]) << "direct read at " << off + i;
      return;
    }
    const uint64_t off = std::min(rng_.Below(size_ + 3 * 4096), kMaxFile - 512) & ~uint64_t{511};
    const uint64_t len = std::min<uint64_t>(512 * (1 + rng_.Below(64)), kMaxFile - off);
    uint32_t op = BeginOp(rec, fmt::format("direct write [{}, {})", off, off + len));
    for (uint64_t i = 0; i < len; i++) buf.get()[i] = std::byte{PatternByte(op, off + i)};
    auto n = f.DirectWrite(off, {buf.get(), len});
    ASSERT_TRUE(n && *n == len) << rec.op_names[op] << ": " << (n ? "short" : n.error().ToString());
    if (off > size_) Record(rec, size_, off - size_, op, true);
    Record(rec, off, len, op, false);
    if (off + len > size_) {
      SetSize(rec, off + len);
      rec.extends++;
    }
  }

  void Step(File& f, Recording& rec) {
    if (mapped_ && rng_.Below(5) == 0) return MappedStep(rec);
    if (direct_ && rng_.Below(4) == 0) return DirectStep(f, rec);
    const uint64_t dice = rng_.Below(100);
    if (dice < 35) {  // sub-page write, often straddling a page boundary
      uint64_t off = rng_.Below(size_ + 1024);
      DoWrite(f, rec, std::min(off, kMaxFile - 1), 1 + rng_.Below(4096), "write");
    } else if (dice < 52) {  // multi-page write, sometimes aligned
      uint64_t off = rng_.Below(size_ + 1);
      if (rng_.Below(2)) off &= ~uint64_t{4095};
      DoWrite(f, rec, std::min(off, kMaxFile - 4096), 4096 + rng_.Below(12 * 4096), "multi-page write");
    } else if (dice < 60) {  // write past EOF: the gap is a hole
      uint64_t off = size_ + rng_.Below(5 * 4096);
      if (off < kMaxFile) DoWrite(f, rec, off, 1 + rng_.Below(6000), "write past EOF");
    } else if (dice < 65) {  // truncate up
      uint64_t to = std::min(kMaxFile, size_ + 1 + rng_.Below(8 * 4096));
      uint32_t op = BeginOp(rec, fmt::format("truncate up {} -> {}", size_, to));
      ASSERT_TRUE(f.Truncate(to).ok()) << rec.op_names[op];
      Record(rec, size_, to - size_, op, true);
      SetSize(rec, to);
      rec.truncates++;
    } else if (dice < 72) {  // truncate down
      uint64_t to = rng_.Below(size_ + 1);
      if (rng_.Below(2)) to = size_ - std::min(size_, rng_.Below(3 * 4096));
      uint32_t op = BeginOp(rec, fmt::format("truncate down {} -> {}", size_, to));
      ASSERT_TRUE(f.Truncate(to).ok()) << rec.op_names[op];
      // Past EOF the bytes are gone: zeros if it grows again, and the
      // device may keep the old ones meanwhile (the acknowledged value).
      Record(rec, to, size_ - to, op, true);
      SetSize(rec, to);
      rec.truncates++;
    } else if (dice < 82) {  // Sync, then a mark once it is acknowledged
      SyncRecord s{0, size_, content_, rec.ranges.size()};
      uint32_t op = BeginOp(rec, fmt::format("sync {}", rec.syncs.size()));
      Status st = f.Sync();
      ASSERT_TRUE(st.ok()) << rec.op_names[op] << ": " << st.ToString();
      s.mark = log_->Mark(fmt::format("sync {} acknowledged", rec.syncs.size()));
      rec.syncs.push_back(std::move(s));
      rec.syncs_ok++;
    } else if (dice < 88) {  // SyncRange: writeback, no durability promise
      uint64_t off = rng_.Below(size_ + 1);
      uint64_t len = rng_.Below(4) == 0 ? 0 : rng_.Below(16 * 4096);
      unsigned flags = 1 + static_cast<unsigned>(rng_.Below(7));
      (void)BeginOp(rec, fmt::format("sync_range [{}, +{}) flags {}", off, len, flags));
      ASSERT_TRUE(f.SyncRange(off, len, flags).ok());
      rec.sync_ranges++;
    } else {  // read back through the cache, often the tail: the cache itself is right
      uint64_t off = rng_.Below(2) ? rng_.Below(size_ + 1) : size_ - std::min(size_, rng_.Below(6000));
      std::vector<std::byte> buf(1 + rng_.Below(3 * 4096));
      auto n = f.Read(off, buf);
      ASSERT_TRUE(n) << n.error().ToString();
      ASSERT_EQ(*n, std::min<uint64_t>(buf.size(), size_ - std::min(size_, off)));
      for (size_t i = 0; i < *n; i++)
        ASSERT_EQ(static_cast<uint8_t>(buf[i]), content_[off + i]) << "live read at " << off + i;
    }
  }

  Rng rng_;
  StablePolicy policy_;
  bool mapped_;
  bool direct_;
  std::unique_ptr<Mapping> map_;
  std::shared_ptr<LogWritesDevice> log_;
  std::vector<uint8_t> content_;
  uint64_t size_ = 0;
  uint64_t issued_at_ = 0;
};

// Reads the whole medium back as a user would after the crash: a fresh
// device, a fresh cache, the file as the medium's size record has it, read
// `size` bytes far (the largest size the workload reached: bytes past the
// recovered size read as zero; the durability check catches a recovered
// size too small for an acknowledged Sync).
std::vector<uint8_t> ReadAfterCrash(const std::vector<std::byte>& image, uint64_t size) {
  auto mem = MemoryDevice::Create({.size_bytes = image.size()});
  EXPECT_TRUE(mem);
  (*mem)->WriteRaw(0, image.data(), image.size());
  auto cache = Cache::Create({.capacity_bytes = 1 << 20, .io_reserve_frames = 16});
  EXPECT_TRUE(cache);
  auto f = (*cache)->Open(*mem);
  EXPECT_TRUE(f) << f.error().ToString();
  std::vector<uint8_t> out(size);
  if (!f) return out;
  EXPECT_LE(*(*f)->Size(), size) << "the medium records a size the workload never reached";
  std::vector<uint8_t> recovered(*(*f)->Size());
  auto n = (*f)->Read(0, std::as_writable_bytes(std::span(recovered)));
  EXPECT_TRUE(n && *n == recovered.size());
  std::memcpy(out.data(), recovered.data(), std::min(size, recovered.size()));
  (*f).reset();  // not Close: nothing of the crashed medium is to be written
  return out;
}

struct Verdict {
  uint64_t states = 0, durability = 0, invented = 0, failing_states = 0;
  std::map<std::string, uint64_t> states_by_kind;
  std::vector<std::string> reports;  // the first few, for the failure message
};

class Checker {
 public:
  explicit Checker(const Recording& rec) : rec_(rec), ever_(kMaxFile) {
    for (uint64_t b = 0; b < kMaxFile; b++) {
      Allow(b, 0);
      Allow(b, PatternByte(0, b));
    }
    for (const Range& r : rec.ranges)
      for (uint64_t b = r.offset; b < r.offset + r.len; b++) Allow(b, r.At(b));
    for (const SyncRecord& s : rec.syncs) marks_.push_back(s.mark);
  }

  std::optional<uint64_t> first_bad;  // a failing byte, for tracing

  void Check(const CrashState& state, Verdict& v) {
    const uint64_t pos = state.point.position;
    std::vector<uint8_t> got = ReadAfterCrash(state.images[0], rec_.max_size);
    uint64_t durability = 0, invented = 0;
    // No invented data, anywhere.
    for (uint64_t b = 0; b < got.size(); b++) {
      if (Allowed(b, got[b])) continue;
      if (invented == 0 && !first_bad) first_bad = b;
      if (invented++ == 0) Report(v, state, fmt::format("invented data at byte {} (page {} + {}): reads {:#04x}, never written there", b, b >> 12, b & 4095, got[b]));
    }
    // Durability of the last Sync acknowledged before the crash.
    auto it = std::lower_bound(marks_.begin(), marks_.end(), pos);  // marks at index < pos
    if (it != marks_.begin()) {
      const size_t k = static_cast<size_t>(it - marks_.begin()) - 1;
      const SyncRecord& s = rec_.syncs[k];
      std::vector<bool> later(s.size, false);
      std::vector<const Range*> window;
      for (size_t i = s.ranges_before; i < rec_.ranges.size() && rec_.ranges[i].issued_at < pos; i++) {
        const Range& r = rec_.ranges[i];
        window.push_back(&r);
        for (uint64_t b = r.offset; b < std::min(r.offset + r.len, s.size); b++)
          if (got[b] == r.At(b)) later[b] = true;
      }
      for (uint64_t b = 0; b < s.size; b++) {
        if (got[b] == s.content[b] || later[b]) continue;
        if (durability++ > 0) continue;
        if (!first_bad) first_bad = b;
        std::string history;
        for (const Range* r : window)
          if (b >= r->offset && b < r->offset + r->len)
            history += fmt::format("; then op {} '{}' wrote {:#04x}", r->op, rec_.op_names[r->op], r->At(b));
        Report(v, state,
               fmt::format("durability (sync {} acknowledged at log {}, size {}): byte {} (page {} + {}) reads {:#04x}, "
                           "acknowledged {:#04x}{}",
                           k, s.mark, s.size, b, b >> 12, b & 4095, got[b], s.content[b], history));
      }
    }
    v.states++;
    v.states_by_kind[fmt::format("{}/{}", state.point.kind, UnflushedName(state.point.unflushed))]++;
    v.durability += durability;
    v.invented += invented;
    if (durability + invented) v.failing_states++;
  }

 private:
  void Allow(uint64_t b, uint8_t value) { ever_[b][value >> 6] |= uint64_t{1} << (value & 63); }
  bool Allowed(uint64_t b, uint8_t value) const { return ever_[b][value >> 6] & (uint64_t{1} << (value & 63)); }
  void Report(Verdict& v, const CrashState& state, std::string what) {
    if (v.reports.size() < 8) v.reports.push_back(fmt::format("{}\n    {}", state.Describe(), what));
  }

  const Recording& rec_;
  std::vector<std::array<uint64_t, 4>> ever_;  // per byte: the 256 values allowed
  std::vector<uint64_t> marks_;
};

// STABLECACHE_CRASH_TRACE=OFFSET prints the log entries that write the
// byte at OFFSET, the flushes and the marks: the history behind a report.
void TraceByte(const Recording& rec, uint64_t offset) {
  for (size_t i = 0; i < rec.log.size(); i++) {
    const LogEntry& e = rec.log[i];
    if (e.kind == LogEntry::Kind::kWrite && (offset < e.offset || offset >= e.offset + e.length())) continue;
    std::printf("  log %zu: %s", i, LogEntryKindName(e.kind));
    if (e.kind == LogEntry::Kind::kWrite)
      std::printf(" [%llu, +%llu) submitted at %llu, byte %#04x", static_cast<unsigned long long>(e.offset),
                  static_cast<unsigned long long>(e.length()), static_cast<unsigned long long>(e.submitted_at),
                  static_cast<unsigned>((*e.data)[offset - e.offset]));
    if (e.kind == LogEntry::Kind::kFlushDone) std::printf(" of log %llu", static_cast<unsigned long long>(e.flush_index));
    if (e.kind == LogEntry::Kind::kMark) std::printf(" '%s'", e.label.c_str());
    std::printf("\n");
  }
}

Verdict ReplayCrashStates(const Recording& rec, FlushModel model, uint64_t states, uint64_t seed) {
  if (const char* t = std::getenv("STABLECACHE_CRASH_TRACE"); t && std::isdigit(static_cast<unsigned char>(*t)))
    TraceByte(rec, std::strtoull(t, nullptr, 0));
  CrashReplayer replayer(rec.log, rec.initial, model);
  const std::vector<Unflushed> at_flush = {Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear};
  size_t flushes = replayer.PlanCrashPoints(at_flush, 0, seed).size();
  size_t random = std::max<size_t>(states / 2, states > flushes ? states - flushes : 0);
  auto points = replayer.PlanCrashPoints(at_flush, random, seed);
  Checker checker(rec);
  Verdict v;
  for (const CrashPoint& p : points) {
    checker.Check(replayer.Build(p), v);
    if (::testing::Test::HasFatalFailure()) break;
  }
  // STABLECACHE_CRASH_TRACE=first: the history of the first failing byte.
  if (const char* t = std::getenv("STABLECACHE_CRASH_TRACE"); t && std::string(t) == "first" && checker.first_bad) {
    std::printf("history of byte %llu:\n", static_cast<unsigned long long>(*checker.first_bad));
    TraceByte(rec, *checker.first_bad);
  }
  return v;
}

std::string Summary(const Verdict& v) {
  std::string s = fmt::format("{} crash states, {} failing: {} durability, {} invented-data violations (one reported per state)",
                              v.states, v.failing_states, v.durability, v.invented);
  for (const auto& [kind, n] : v.states_by_kind) s += fmt::format("\n  {}: {}", kind, n);
  for (const auto& r : v.reports) s += "\n  " + r;
  return s;
}

Recording Record(uint64_t seed, uint64_t ops, StablePolicy policy, bool mapped = false, bool direct = false) {
  Recording rec;
  Workload(seed, policy, mapped, direct).Run(ops, rec);
  return rec;
}

void Add(Verdict& into, const Verdict& v) {
  into.states += v.states;
  into.durability += v.durability;
  into.invented += v.invented;
  into.failing_states += v.failing_states;
  for (const auto& [k, n] : v.states_by_kind) into.states_by_kind[k] += n;
  for (const auto& r : v.reports)
    if (into.reports.size() < 8) into.reports.push_back(r);
}

}  // namespace

// Several short workloads (rounds), each from a fresh initial medium, so
// the start of a file (its partial last page over stale medium bytes) is
// met often; the crash states are spread over the rounds.
void RunCrashReplay(StablePolicy policy, bool mapped, bool direct = false);

class CrashReplay : public ::testing::TestWithParam<StablePolicy> {};

TEST_P(CrashReplay, AcknowledgedDataSurvivesAndNothingIsInvented_DropReorderTear4K) { RunCrashReplay(GetParam(), false); }

// The same with a fifth of the steps storing through File::Map: mapped
// stores reach the medium by page_mkwrite, page_mkclean and writeback, and
// crash like any other write.
class CrashReplayMapped : public ::testing::TestWithParam<StablePolicy> {};

TEST_P(CrashReplayMapped, MappedStoresSurviveLikeWrites_DropReorderTear4K) { RunCrashReplay(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Policies, CrashReplayMapped,
                         ::testing::Values(StablePolicy::kAuto, StablePolicy::kBounce, StablePolicy::kWait),
                         [](const auto& p) { return std::string(PolicyName(p.param)); });

// The same with a quarter of the steps doing direct I/O: direct writes
// bypass the cache where it holds no pages, go through it where it does,
// and crash like any other write; a Sync covers what they acknowledged.
class CrashReplayDirect : public ::testing::TestWithParam<StablePolicy> {};

TEST_P(CrashReplayDirect, DirectWritesSurviveLikeWrites_DropReorderTear4K) { RunCrashReplay(GetParam(), false, true); }

INSTANTIATE_TEST_SUITE_P(Policies, CrashReplayDirect,
                         ::testing::Values(StablePolicy::kAuto, StablePolicy::kFork, StablePolicy::kWait),
                         [](const auto& p) { return std::string(PolicyName(p.param)); });

void RunCrashReplay(StablePolicy policy, bool mapped, bool direct) {
  const uint64_t seed = EnvOr("STABLECACHE_CRASH_SEED", 0x5eed);
  const uint64_t ops = EnvOr("STABLECACHE_CRASH_OPS", 200);
  const uint64_t states = EnvOr("STABLECACHE_CRASH_STATES", kDefaultStates);
  const uint64_t rounds = EnvOr("STABLECACHE_CRASH_ROUNDS", kDefaultRounds);
  auto t0 = std::chrono::steady_clock::now();
  Verdict total;
  uint64_t log_entries = 0, syncs = 0, evictions = 0, pages = 0, op_count = 0;
  for (uint64_t round = 0; round < rounds; round++) {
    const uint64_t round_seed = seed + round * 0x1000193;
    Recording rec = Record(round_seed, ops, policy, mapped, direct);
    ASSERT_FALSE(::testing::Test::HasFatalFailure()) << "round " << round << " seed " << round_seed;
    Verdict v = ReplayCrashStates(rec, FlushModel::kHonoured, (states + rounds - 1) / rounds, round_seed);
    for (auto& r : v.reports) r = fmt::format("round {} (workload seed {:#x}, initial size {}): {}", round, round_seed, rec.initial_size, r);
    Add(total, v);
    log_entries += rec.log.size();
    syncs += rec.syncs_ok;
    evictions += rec.evictions;
    pages += rec.pages_written;
    op_count += rec.ops;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s%spolicy %s, seed %#llx: %llu rounds, %llu ops, %llu acknowledged syncs, %llu log entries, %llu pages written, "
              "%llu evictions; replayed %llu crash states (%llu failing) in %lld ms\n",
              mapped ? "mapped, " : "", direct ? "direct, " : "", PolicyName(policy), static_cast<unsigned long long>(seed), static_cast<unsigned long long>(rounds),
              static_cast<unsigned long long>(op_count), static_cast<unsigned long long>(syncs),
              static_cast<unsigned long long>(log_entries), static_cast<unsigned long long>(pages),
              static_cast<unsigned long long>(evictions), static_cast<unsigned long long>(total.states),
              static_cast<unsigned long long>(total.failing_states), static_cast<long long>(ms));
  EXPECT_GE(total.states, states);
  EXPECT_GT(evictions, 0u) << "the cache never evicted: make it smaller";
  EXPECT_EQ(total.failing_states, 0u) << Summary(total);
}

INSTANTIATE_TEST_SUITE_P(Policies, CrashReplay,
                         ::testing::Values(StablePolicy::kAuto, StablePolicy::kFork, StablePolicy::kBounce,
                                           StablePolicy::kWait),
                         [](const auto& p) { return std::string(PolicyName(p.param)); });

// Negative control: the same checker over a medium that ignores flushes
// (FlushModel::kIgnored, DropReorderTear4K otherwise) must find lost
// acknowledged data, or it checks nothing.
TEST(CrashReplayNegativeControl, FlushesIgnoredLosesAcknowledgedData) {
  const uint64_t seed = EnvOr("STABLECACHE_CRASH_SEED", 0x5eed);
  Recording rec = Record(seed, 400, StablePolicy::kAuto);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_GT(rec.syncs_ok, 5u);
  Verdict v = ReplayCrashStates(rec, FlushModel::kIgnored, 100, seed);
  std::printf("negative control: %s\n", Summary(v).c_str());
  EXPECT_GT(v.durability, 0u) << Summary(v);
  EXPECT_GT(v.failing_states, v.states / 4) << Summary(v);
}

}  // namespace stablecache

namespace stablecache {

// Directed: extend a file whose partial last page is cached and clean, Sync,
// crash right after the acknowledgement (every flushed write durable, the
// rest dropped). The bytes between the old and the new end must read zero,
// not the medium's old bytes (issue 8, defect 3).
TEST(CrashReplayDirected, ExtendOverACleanCachedPartialPageIsDurableAsZeros) {
  constexpr uint64_t kOld = 3 * 4096 + 2136, kNew = 5 * 4096;
  std::vector<std::byte> initial = InitialMedium(kOld, [](uint64_t) { return std::byte{0xee}; });
  auto mem = MemoryDevice::Create({.size_bytes = kDevice});
  ASSERT_TRUE(mem);
  (*mem)->WriteRaw(0, initial.data(), initial.size());
  auto log = std::make_shared<LogWritesDevice>(*mem);
  auto cache = Cache::Create({.capacity_bytes = 1 << 20, .io_reserve_frames = 16});
  ASSERT_TRUE(cache);
  auto f = (*cache)->Open(log, {.initial_size = kOld});
  ASSERT_TRUE(f);
  std::vector<std::byte> page(4096);
  ASSERT_TRUE((*f)->Read(3 * 4096, page));  // the partial last page: cached, clean
  ASSERT_TRUE((*f)->Truncate(kNew).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  const uint64_t mark = log->Mark("sync acknowledged");
  ASSERT_TRUE((*f)->Close().ok());
  CrashReplayer replayer(log->Snapshot(), initial);
  CrashState state = replayer.Build(CrashPoint{mark + 1, Unflushed::kDropAll, 0, "after the acknowledgement"});
  std::vector<uint8_t> got = ReadAfterCrash(state.images[0], kNew);
  for (uint64_t b = kOld; b < kNew; b++)
    ASSERT_EQ(got[b], 0) << state.Describe() << ": byte " << b << " (old end " << kOld << ", new end " << kNew << ")";
}

}  // namespace stablecache
