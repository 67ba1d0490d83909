// Writeback through the cache over a passthrough stack and over an
// integrity stack, side by side in one run: what crash-consistent
// integrity (tags written ahead of data, one group commit per batch)
// costs against no protection at all.
//
//   build/default/bench/writeback_bench --benchmark_min_time=2
//
// Each iteration writes through the File API and then Syncs, so the time
// covers the writeback and the flush: sequential = 32 MiB in 256 KiB
// writes; random = 4,096 random 4 KiB pages of a 64 MiB file. The stacks
// sit on a file in $TMPDIR (default /var/tmp) through io_uring, O_DIRECT.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "ratio_reporter.h"
#include "stablecache/cache.h"
#include "stablecache/stack.h"

namespace {

using namespace stablecache;

constexpr uint64_t kFileBytes = 64 << 20;

std::filesystem::path TempDir() {
  const char* t = std::getenv("TMPDIR");
  return t ? t : "/var/tmp";
}

struct Volume {
  std::shared_ptr<BlockDevice> dev;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
  std::string path;
  explicit Volume(const std::string& layers) {
    path = (TempDir() / fmt::format("stablecache-wbbench-{}-{}", getpid(), layers.size())).string();
    std::filesystem::remove(path);
    auto built = BuildStack(layers + "file", BuildOptions{path, kFileBytes + (8 << 20)});
    if (!built) throw std::runtime_error(built.error().ToString());
    dev = *built;
    CacheOptions co;
    co.capacity_bytes = 128 << 20;
    cache = *Cache::Create(co);
    file = std::move(*cache->Open(dev));
    std::vector<std::byte> buf(1 << 20, std::byte{0x5a});
    for (uint64_t off = 0; off < kFileBytes; off += buf.size()) (void)file->Write(off, buf);
    (void)file->Sync();
  }
  // Per iteration: the device's flushes and metadata writes.
  void Count(benchmark::State& state) {
    std::vector<LayerStats> layers;
    dev->CollectStats(layers);
    uint64_t meta = 0, meta_flushes = 0;
    for (auto& l : layers) meta += l.metadata_writes, meta_flushes += l.metadata_flushes;
    state.counters["tag_writes"] = benchmark::Counter(double(meta), benchmark::Counter::kAvgIterations);
    state.counters["commit_flushes"] = benchmark::Counter(double(meta_flushes), benchmark::Counter::kAvgIterations);
  }
  ~Volume() {
    (void)file->Close();
    std::filesystem::remove(path);
  }
};

void Sequential(benchmark::State& state, const std::string& layers) {
  Volume v(layers);
  std::vector<std::byte> buf(256 << 10);
  uint8_t round = 0;
  for (auto _ : state) {
    std::fill(buf.begin(), buf.end(), std::byte{++round});
    for (uint64_t off = 0; off < (32 << 20); off += buf.size()) (void)v.file->Write(off, buf);
    if (!v.file->Sync().ok()) state.SkipWithError("sync failed");
  }
  state.SetBytesProcessed(state.iterations() * (32 << 20));
  v.Count(state);
}

void Random(benchmark::State& state, const std::string& layers) {
  Volume v(layers);
  std::vector<std::byte> buf(4096);
  std::mt19937_64 rng(7);
  for (auto _ : state) {
    for (int i = 0; i < 4096; i++) {
      std::fill(buf.begin(), buf.end(), std::byte{static_cast<uint8_t>(i)});
      (void)v.file->Write((rng() % (kFileBytes / 4096)) * 4096, buf);
    }
    if (!v.file->Sync().ok()) state.SkipWithError("sync failed");
  }
  state.SetBytesProcessed(state.iterations() * 4096 * 4096);
  v.Count(state);
}

BENCHMARK_CAPTURE(Sequential, passthrough, std::string(""))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(Sequential, integrity, std::string("integrity,"))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(Random, passthrough, std::string(""))->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(Random, integrity, std::string("integrity,"))->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  stablecache::bench::RatioReporter reporter("integrity / passthrough throughput");
  reporter.AddPair("sequential writeback", "Sequential/integrity/real_time", "Sequential/passthrough/real_time");
  reporter.AddPair("random writeback", "Random/integrity/real_time", "Random/passthrough/real_time");
  return stablecache::bench::RunWithRatios(argc, argv, reporter);
}
