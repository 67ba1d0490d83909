// wac on the library: a Cache over a stack built from the spec, on a
// temporary file. All six profiles run here. Direct writers (D, E, F) use
// File::SubmitDirect with a kUnstable buffer and scribble it while the
// write is in flight (block_format.h): under policy none the cache vouches
// for the buffer and nothing is bounced, so the layers that checksum it
// (verify, integrity) see other bytes than the device gets; under the other
// policies the stack bounces it once and every layer sees one snapshot.
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
  // With `table`, each read holds the block's lock, so no store of it is
  // under way (see RunOnLibrary).
  LiveChecker(File& file, uint64_t blocks, BlockTable* table = nullptr)
      : file_(file), blocks_(blocks), table_(table), thread_([this] { Run(); }) {}
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
      Status st;
      auto read = [&] { st = file_.ReadBypassingCache(b * kBlockSize, buf, &scrub); };
      if (table_) table_->WithBlockLocked(b, read);
      else read();
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
        // A torn mix of a direct write's content and its scribble is what
        // that write may leave; anything else torn is a finding.
        findings_.emplace_back(b, *bad == "torn" && IsScribbleMix(b, buf) ? "scribbled" : *bad);
      }
      // Paced like fio's verify_backlog: a check every 200 us, so the
      // writers are measured, not the checker.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  File& file_;
  uint64_t blocks_;
  BlockTable* table_;
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
  // Who stores how: HowFor (wac/harness.h).
  const Profile prof = cfg.profile;
  const bool any_mapped = AnyMapped(prof);
  FileOptions fo;
  fo.initial_size = cfg.file_size;
  fo.mappable = any_mapped;
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
  // With direct writers the checker reads a block only while no store of
  // it is under way: ReadBypassingCache holds a page in the index while it
  // reads, and a direct write that meets that page goes through the cache
  // (which then keeps the page), so the checker would turn every direct
  // write of E into a cached write after a few milliseconds.
  const bool direct_writers = prof == Profile::kD || prof == Profile::kE || prof == Profile::kF;
  if (cfg.live_checker) checker.emplace(f, blocks, direct_writers ? &table : nullptr);
  std::atomic<uint64_t> direct_writes{0}, scribbles{0};
  std::mutex bus_mu;
  std::vector<uint64_t> bus_blocks;  // GUARDED_BY(bus_mu): mapped stores that got SIGBUS
  // A direct write of block b from this writer's own aligned buffer,
  // submitted asynchronously and scribbled until it completes.
  auto direct_store = [&](uint64_t b, uint32_t w, LatencyHistogram& lat) -> Status {
    return table.StoreScribbled(b, w, [&](const BlockId& id, const BlockId& alt) -> Status {
      alignas(4096) std::byte buf[kBlockSize];
      std::byte content[kBlockSize], scribble[kBlockSize];
      FillBlock(id, content);
      FillBlock(alt, scribble);
      std::memcpy(buf, content, kBlockSize);
      std::atomic<bool> done{false};
      Status result;
      DirectRequest req;
      req.op = DirectOp::kWrite;
      req.offset = b * kBlockSize;
      req.buffers.emplace_back(buf, kBlockSize);
      req.stability = Stability::kUnstable;
      const uint64_t t0 = NowNs();
      SC_RETURN_IF_ERROR(f.SubmitDirect(std::move(req), [&](Result<size_t> r) {
        if (!r) result = r.error();
        else if (*r != kBlockSize) result = Status::IoError(fmt::format("direct write of block {}: {} bytes", b, *r));
        done.store(true, std::memory_order_release);  // last: the writer's frame may go right after
      }));
      uint64_t n = ScribbleWhile(buf, content, scribble, [&] { return !done.load(std::memory_order_acquire); });
      lat.Add(NowNs() - t0);
      direct_writes.fetch_add(1, std::memory_order_relaxed);
      scribbles.fetch_add(n, std::memory_order_relaxed);
      return result;
    });
  };
  auto step = [&](uint32_t w, std::mt19937_64& rng, LatencyHistogram& lat) -> Status {
    alignas(64) std::byte buf[kBlockSize];
    const uint64_t b = rng() % blocks;
    const WriterHow h = HowFor(prof, w, rng);
    if (h == WriterHow::kDirect) return direct_store(b, w, lat);
    const bool mapped = h == WriterHow::kMapped;
    bool bus = false;
    Status stored = table.Store(b, w, [&](const BlockId& id) -> Status {
      FillBlock(id, buf);
      uint64_t t0 = NowNs();
      Status st;
      if (mapped) {
        // May fault: page_mkwrite runs here, or the page is read first
        // (SIGBUS when the device cannot deliver it: nothing is stored).
        if (!StoreCatchingSigbus(map->data() + b * kBlockSize, buf, kBlockSize)) {
          bus = true;
          st = Status::IoError("SIGBUS");
        }
      } else if (auto n = f.Write(b * kBlockSize, buf); !n) {
        st = n.error();
      }
      lat.Add(NowNs() - t0);
      return st;
    });
    if (bus) {
      std::lock_guard lk(bus_mu);
      bus_blocks.push_back(b);
      return Status::Ok();
    }
    SC_RETURN_IF_ERROR(stored);
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
  run.direct_writes = direct_writes.load();
  run.mapped_store_sigbus = bus_blocks.size();
  run.violations.unreadable += bus_blocks.size();
  for (uint64_t b : bus_blocks) NoteBadBlock(run, b, "live:sigbus");
  run.scribble_overwrites = scribbles.load();
  if (checker) {
    run.checker_reads = checker->reads();
    for (const auto& [b, kind] : checker->findings()) {
      if (kind == "scribbled") {
        run.live_scribbled_direct_writes++;
        continue;
      }
      if (kind == "torn" && any_mapped) {
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
    else bad = JudgeReadback(b, table.Last(b), buf, table.LastScribble(b));
    if (!bad) continue;
    run.violations.readback_mismatch++;
    NoteBadBlock(run, b, "readback:" + *bad);
  }
  ScrubReport scrub;
  SC_RETURN_UNEXPECTED_IF_ERROR((*dev)->Scrub(scrub));
  run.violations.mirror_divergence = scrub.mirror_divergence + (checker ? checker->mirror_divergence() : 0);
  run.violations.parity_mismatch = scrub.parity_mismatch + (checker ? checker->parity_mismatch() : 0);
  // A block no leg can read is lost data, whoever lost it.
  run.violations.unreadable += scrub.unreadable + (checker ? checker->unreadable() : 0);
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
