// wac on the library: a Cache over a stack built from the spec, on a
// temporary file. Profiles A, B and C run here; D, E and F need direct I/O,
// which is not built yet.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "cache/size_record.h"
#include "stablecache/mapping.h"
#include "stablecache/stack.h"
#include "wac/harness.h"
#include "wac/wac.h"

namespace stablecache::wac {

namespace {

std::string TempImagePath() {
  static std::atomic<int> n{0};
  const char* dir = std::getenv("TMPDIR");
  std::filesystem::path base = dir && *dir ? dir : "/var/tmp";
  return (base / fmt::format("stablecache-wac-{}-{}.img", getpid(), n++)).string();
}

// Removes the temporary image however the run ends.
struct TempImage {
  std::string path = TempImagePath();
  ~TempImage() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

void AddLayerCounts(BlockDevice& dev, WacRun& run) {
  std::vector<LayerStats> layers;
  dev.CollectStats(layers);
  for (const LayerStats& l : layers) {
    run.bytes_bounced += l.bytes_bounced;
    run.violations.modified_in_flight += l.modified_in_flight;
    run.violations.integrity_errors += l.integrity_errors;
  }
}

// Re-reads random blocks from the device while the writers run.
class LiveChecker {
 public:
  LiveChecker(File& file, uint64_t blocks) : file_(file), blocks_(blocks), thread_([this] { Run(); }) {}
  ~LiveChecker() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t reads() const { return reads_; }
  uint64_t mirror_divergence() const { return mirror_divergence_; }
  uint64_t unreadable() const { return unreadable_; }
  uint64_t degraded() const { return degraded_; }
  uint64_t parity_mismatch() const { return parity_mismatch_; }
  const std::vector<std::pair<uint64_t, std::string>>& findings() const { return findings_; }
  const Status& error() const { return error_; }

 private:
  void Run() {
    std::mt19937_64 rng(42);
    alignas(4096) std::byte buf[kBlockSize];
    while (!stop_.load(std::memory_order_relaxed)) {
      uint64_t b = rng() % blocks_;
      ScrubReport scrub;
      Status st = file_.ReadBypassingCache(b * kBlockSize, buf, &scrub);
      reads_++;
      mirror_divergence_ += scrub.mirror_divergence;
      parity_mismatch_ += scrub.parity_mismatch;
      unreadable_ += scrub.unreadable;
      degraded_ += scrub.degraded;
      for (const ScrubFinding& f : scrub.findings)
        findings_.emplace_back(f.block, ScrubKindName(f.kind));
      if (st.code() == Code::kIntegrityError) {
        findings_.emplace_back(b, "integrity");  // the layer counted it too
      } else if (!st.ok()) {
        error_ = st;
        return;
      } else if (auto bad = JudgeLive(b, buf)) {
        findings_.emplace_back(b, *bad);
      }
      // Paced like fio's verify_backlog: a check every 200 us, so the
      // writers are measured, not the checker.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  File& file_;
  uint64_t blocks_;
  std::atomic<bool> stop_{false};
  uint64_t reads_ = 0, mirror_divergence_ = 0, parity_mismatch_ = 0, unreadable_ = 0, degraded_ = 0;
  std::vector<std::pair<uint64_t, std::string>> findings_;
  Status error_;
  std::thread thread_;
};

}  // namespace

Result<WacRun> RunOnLibrary(const WacConfig& cfg, const Progress& progress) {
  WacRun run;
  run.profile = cfg.profile;
  run.policy = PolicyName(cfg.policy);
  run.target = "stack";
  run.stack = cfg.stack;
  run.threads = cfg.threads;
  run.file_size = cfg.file_size;
  if (cfg.profile != Profile::kA && cfg.profile != Profile::kB && cfg.profile != Profile::kC) {
    run.verdict = "unsupported";
    run.effective_policy = run.policy;
    run.note = fmt::format("profile {} needs direct I/O in the library, which is not built yet",
                           ProfileLetter(cfg.profile));
    return run;
  }
  TempImage image;
  BuildOptions bo;
  bo.default_file = image.path;
  bo.default_file_size = cfg.file_size * 2 + (8 << 20);  // data, tags, slack
  auto dev = BuildStack(cfg.stack, bo);
  if (!dev) return Err(dev.error());
  if (FileLimit((*dev)->Info().size_bytes) < cfg.file_size)
    return Err(Status::InvalidArgument(fmt::format(
        "stack '{}' holds {} bytes: a file of at most {} (the last 8 KiB hold its size record), less than "
        "--file-size {}",
        cfg.stack, (*dev)->Info().size_bytes, FileLimit((*dev)->Info().size_bytes), cfg.file_size)));
  CacheOptions co;
  co.policy = cfg.policy;
  co.capacity_bytes = std::max<uint64_t>(cfg.file_size + (16 << 20), 32 << 20);
  auto cache = Cache::Create(co);
  if (!cache) return Err(cache.error());
  // Mapped writers: B all of them, C every other one.
  auto mapped_writer = [&](uint32_t w) {
    return cfg.profile == Profile::kB || (cfg.profile == Profile::kC && w % 2 == 1);
  };
  FileOptions fo;
  fo.initial_size = cfg.file_size;
  fo.mappable = cfg.profile != Profile::kA;
  auto file = (*cache)->Open(*dev, fo);
  if (!file) return Err(file.error());
  File& f = **file;
  run.effective_policy = PolicyName(f.EffectivePolicy());
  std::unique_ptr<Mapping> map;
  if (fo.mappable) {
    auto m = f.Map(0, cfg.file_size, MapAccess::kReadWrite);
    if (!m) return Err(m.error().WithContext("wac"));
    map = std::move(*m);
  }

  const uint64_t blocks = cfg.file_size / kBlockSize;
  BlockTable table(blocks);
  std::optional<LiveChecker> checker;
  if (cfg.live_checker) checker.emplace(f, blocks);
  auto step = [&](uint32_t w, std::mt19937_64& rng, LatencyHistogram& lat) -> Status {
    alignas(64) std::byte buf[kBlockSize];
    const uint64_t b = rng() % blocks;
    const bool mapped = mapped_writer(w);
    SC_RETURN_IF_ERROR(table.Store(b, w, [&](const BlockId& id) -> Status {
      FillBlock(id, buf);
      uint64_t t0 = NowNs();
      Status st;
      if (mapped) {
        std::memcpy(map->data() + b * kBlockSize, buf, kBlockSize);  // may fault: page_mkwrite runs here
      } else if (auto n = f.Write(b * kBlockSize, buf); !n) {
        st = n.error();
      }
      lat.Add(NowNs() - t0);
      return st;
    }));
    // Start writeback of the page, racing the writers: sync_file_range(WRITE)
    // for a writer, msync(MS_ASYNC) for a mapped one. (The kernel target's
    // mapped writers use MS_SYNC, which on Linux also only waits for this
    // range; here kSync would sync the whole file.)
    if (mapped) return map->Msync(b * kBlockSize, kBlockSize, MsyncMode::kAsync);
    return f.SyncRange(b * kBlockSize, kBlockSize, kSyncWrite);
  };
  auto stats = RunWriters(cfg.threads, cfg.duration_s, progress, step, cfg.cancel);
  if (checker) checker->Stop();
  if (!stats) return Err(stats.error().WithContext("wac writer"));
  if (checker && !checker->error().ok()) return Err(checker->error().WithContext("wac live checker"));
  if (map) SC_RETURN_UNEXPECTED_IF_ERROR(map->Unmap());  // its handle's Close writes back and reports
  SC_RETURN_UNEXPECTED_IF_ERROR(f.Sync());

  run.duration_s = stats->elapsed_s;
  if (cfg.cancel && cfg.cancel->load()) {
    run.interrupted = true;
    run.note = fmt::format("interrupted after {:.1f} of {:g} s", stats->elapsed_s, cfg.duration_s);
  }
  run.ops = stats->ops;
  run.ops_per_s = static_cast<double>(run.ops) / stats->elapsed_s;
  run.bytes_written = run.ops * kBlockSize;
  run.writer_wait_p99_us = static_cast<double>(stats->store_latency.Percentile(0.99)) / 1000.0;
  if (checker) {
    run.checker_reads = checker->reads();
    const bool mapped_writers = cfg.profile != Profile::kA;
    for (const auto& [b, kind] : checker->findings()) {
      if (kind == "torn" && mapped_writers) {
        run.live_partial_mapped_stores++;
        continue;
      }
      if (kind == "torn" || kind == "misdirected") run.violations.torn_live++;
      NoteBadBlock(run, b, "live:" + kind);
    }
  }
  // Read-back: every block from the device, past the cache, after the sync.
  alignas(4096) std::byte buf[kBlockSize];
  for (uint64_t b = 0; b < blocks; b++) {
    Status st = f.ReadBypassingCache(b * kBlockSize, buf);
    std::optional<std::string> bad;
    if (st.code() == Code::kIntegrityError) bad = "integrity";
    else if (!st.ok()) return Err(st.WithContext("wac read-back"));
    else bad = JudgeReadback(b, table.Last(b), buf);
    if (!bad) continue;
    run.violations.readback_mismatch++;
    NoteBadBlock(run, b, "readback:" + *bad);
  }
  ScrubReport scrub;
  SC_RETURN_UNEXPECTED_IF_ERROR((*dev)->Scrub(scrub));
  run.violations.mirror_divergence = scrub.mirror_divergence + (checker ? checker->mirror_divergence() : 0);
  run.violations.parity_mismatch = scrub.parity_mismatch + (checker ? checker->parity_mismatch() : 0);
  // A block no leg can read is lost data, whoever lost it.
  run.violations.unreadable = scrub.unreadable + (checker ? checker->unreadable() : 0);
  // A copy one leg lost (the others hold it) is corruption the tool caught.
  run.violations.degraded = scrub.degraded + (checker ? checker->degraded() : 0);
  for (const ScrubFinding& s : scrub.findings)
    NoteBadBlock(run, s.block, std::string("scrub:") + ScrubKindName(s.kind));
  CacheStats cs = (*cache)->Stats();
  run.bytes_bounced = cs.bytes_bounced;
  run.stable_waits = cs.stable_waits;
  run.forks = cs.forks;
  AddLayerCounts(**dev, run);
  SC_RETURN_UNEXPECTED_IF_ERROR(f.Close());
  run.verdict = run.violations.total() > 0 ? "corrupt" : "clean";
  return run;
}

}  // namespace stablecache::wac
