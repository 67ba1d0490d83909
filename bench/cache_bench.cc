// Cached 4 KiB reads and writes through the File API, beside kernel pread
// and pwrite on a file resident in the kernel page cache, in one run.
//
//   build/default/bench/cache_bench
//
// Both sides work on a 16 MiB working set that is fully cached before the
// timing starts; offsets are 4 KiB aligned and random.
#include <fcntl.h>
#include <unistd.h>

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

constexpr uint64_t kWorkingSet = 16 << 20;
constexpr uint64_t kPages = kWorkingSet / 4096;

std::string TempPath(const char* tag) {
  return (std::filesystem::temp_directory_path() / fmt::format("stablecache-bench-{}-{}", tag, getpid())).string();
}

std::vector<uint64_t> RandomPages() {
  std::vector<uint64_t> v(4096);
  std::mt19937_64 rng(7);
  for (auto& x : v) x = (rng() % kPages) * 4096;
  return v;
}

struct OurFile {
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
  std::string path;
  OurFile() {
    path = TempPath("ours");
    auto dev = BuildStack("file", BuildOptions{path, kWorkingSet * 2});
    CacheOptions co;
    co.capacity_bytes = kWorkingSet * 2;
    cache = *Cache::Create(co);
    file = std::move(*cache->Open(*dev));
    std::vector<std::byte> buf(1 << 20, std::byte{0x5a});
    for (uint64_t off = 0; off < kWorkingSet; off += buf.size()) (void)file->Write(off, buf);
    (void)file->Sync();
  }
  ~OurFile() {
    (void)file->Close();
    std::filesystem::remove(path);
  }
};

struct KernelFile {
  int fd;
  std::string path;
  KernelFile() {
    path = TempPath("kernel");
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    std::vector<char> buf(1 << 20, 0x5a);
    for (uint64_t off = 0; off < kWorkingSet; off += buf.size()) (void)!pwrite(fd, buf.data(), buf.size(), off);
    fsync(fd);
    for (uint64_t off = 0; off < kWorkingSet; off += buf.size()) (void)!pread(fd, buf.data(), buf.size(), off);
  }
  ~KernelFile() {
    close(fd);
    std::filesystem::remove(path);
  }
};

void BM_CacheRead4K(benchmark::State& state) {
  static OurFile f;
  auto offs = RandomPages();
  std::vector<std::byte> buf(4096);
  size_t i = 0;
  for (auto _ : state) {
    auto r = f.file->Read(offs[i++ & 4095], buf);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}

void BM_KernelPread4K(benchmark::State& state) {
  static KernelFile f;
  auto offs = RandomPages();
  std::vector<char> buf(4096);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(pread(f.fd, buf.data(), 4096, offs[i++ & 4095]));
  state.SetBytesProcessed(state.iterations() * 4096);
}

void BM_CacheWrite4K(benchmark::State& state) {
  static OurFile f;
  auto offs = RandomPages();
  std::vector<std::byte> buf(4096, std::byte{0x33});
  size_t i = 0;
  for (auto _ : state) {
    auto r = f.file->Write(offs[i++ & 4095], buf);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}

void BM_KernelPwrite4K(benchmark::State& state) {
  static KernelFile f;
  auto offs = RandomPages();
  std::vector<char> buf(4096, 0x33);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(pwrite(f.fd, buf.data(), 4096, offs[i++ & 4095]));
  state.SetBytesProcessed(state.iterations() * 4096);
}

BENCHMARK(BM_CacheRead4K);
BENCHMARK(BM_KernelPread4K);
BENCHMARK(BM_CacheWrite4K);
BENCHMARK(BM_KernelPwrite4K);

}  // namespace

int main(int argc, char** argv) {
  stablecache::bench::RatioReporter reporter;
  reporter.AddPair("cached 4 KiB read vs kernel pread", "BM_CacheRead4K", "BM_KernelPread4K");
  reporter.AddPair("cached 4 KiB write vs kernel pwrite", "BM_CacheWrite4K", "BM_KernelPwrite4K");
  return stablecache::bench::RunWithRatios(argc, argv, reporter);
}
