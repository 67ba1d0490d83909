// Mapped access: what a fault costs and what a mapped read costs, beside the
// kernel's own mechanisms and the other ways to read, in one run.
//
//   build/default/bench/mapping_bench --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
//
// Faults, each per 4 KiB page (one iteration = one page):
//  - BM_OurWriteProtectFault: a store to a clean page of a File::Map
//    mapping (page_mkwrite: the handler thread marks it dirty and
//    un-protects it). Between rounds, Msync(kSync) cleans every page.
//  - BM_OurFaultIn: a load from a fresh mapping of a page resident in the
//    cache (UFFDIO_CONTINUE by the handler thread).
//  - BM_UffdWriteProtectThread / BM_UffdWriteProtectAsync: the raw kernel
//    mechanisms on a memfd: a userfaultfd write-protect fault resolved by a
//    thread, and one resolved in the kernel (UFFD_FEATURE_WP_ASYNC);
//    BM_PagemapScanReprotect: PAGEMAP_SCAN collecting and re-protecting the
//    written pages (per page); BM_MprotectSigsegv: mprotect + a SIGSEGV
//    handler that un-protects.
// Reads of 4 KiB from a resident page: a File::Map mapping, File::Read, a
// bare memcpy, kernel pread and a kernel mmap of a file in the page cache.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <memory>
#include <poll.h>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mapping/userfaultfd_abi.h"
#include "ratio_reporter.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "stablecache/stack.h"

namespace {

using namespace stablecache;

constexpr size_t kPage = 4096;
constexpr size_t kPages = 4096;  // 16 MiB
constexpr size_t kBytes = kPages * kPage;

std::string TempPath(const char* tag) {
  return (std::filesystem::temp_directory_path() / fmt::format("stablecache-bench-{}-{}", tag, getpid())).string();
}

// ---------------------------------------------------------------- ours

struct OurMappedFile {
  std::string path = TempPath("map");
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
  OurMappedFile() {
    auto dev = BuildStack("file", BuildOptions{path, kBytes * 2});
    CacheOptions co;
    co.capacity_bytes = kBytes * 2;
    co.policy = StablePolicy::kNone;
    cache = *Cache::Create(co);
    FileOptions fo;
    fo.mappable = true;
    file = std::move(*cache->Open(*dev, fo));
    std::vector<std::byte> buf(1 << 20, std::byte{0x5a});
    for (uint64_t off = 0; off < kBytes; off += buf.size()) (void)file->Write(off, buf);
    (void)file->Sync();
  }
  ~OurMappedFile() {
    (void)file->Close();
    std::filesystem::remove(path);
  }
};

void BM_OurWriteProtectFault(benchmark::State& state) {
  OurMappedFile f;
  auto m = std::move(*f.file->Map(0, kBytes, MapAccess::kReadWrite));
  for (size_t p = 0; p < kPages; p++) m->data()[p * kPage] = std::byte{1};  // mapped in
  (void)m->Msync(0, 0, MsyncMode::kSync);
  size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      (void)m->Msync(0, 0, MsyncMode::kSync);  // page_mkclean of every page
      p = 0;
      state.ResumeTiming();
    }
    m->data()[p++ * kPage + 8] = std::byte{2};
  }
}
BENCHMARK(BM_OurWriteProtectFault)->Iterations(4 * kPages);

void BM_OurFaultIn(benchmark::State& state) {
  OurMappedFile f;
  std::unique_ptr<Mapping> m;
  size_t p = kPages;
  uint64_t sum = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      m.reset();
      m = std::move(*f.file->Map(0, kBytes, MapAccess::kRead));
      p = 0;
      state.ResumeTiming();
    }
    sum += static_cast<uint64_t>(m->data()[p++ * kPage]);
  }
  benchmark::DoNotOptimize(sum);
}
BENCHMARK(BM_OurFaultIn)->Iterations(4 * kPages);

// ---------------------------------------------------------------- raw kernel mechanisms

struct Memfd {
  int fd = memfd_create("bench", MFD_CLOEXEC);
  std::byte* base = nullptr;
  Memfd() {
    (void)!ftruncate(fd, kBytes);
    base = static_cast<std::byte*>(mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    std::memset(base, 1, kBytes);  // populate
  }
  ~Memfd() {
    munmap(base, kBytes);
    close(fd);
  }
};

int OpenUffd(uint64_t features) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  uffdio_api api{UFFD_API, features, 0};
  if (fd < 0 || ioctl(fd, UFFDIO_API, &api) != 0) return -1;
  return fd;
}

void Protect(int uffd, std::byte* base, size_t len, bool on) {
  uffdio_writeprotect wp{{reinterpret_cast<uint64_t>(base), len}, on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
  (void)ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
}

void BM_UffdWriteProtectThread(benchmark::State& state) {
  Memfd mem;
  int uffd = OpenUffd(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
  uffdio_register reg{{reinterpret_cast<uint64_t>(mem.base), kBytes}, UFFDIO_REGISTER_MODE_WP, 0};
  if (uffd < 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    state.SkipWithError("userfaultfd write-protect on shmem is not available");
    return;
  }
  std::atomic<bool> stop{false};
  std::thread handler([&] {
    pollfd pfd{uffd, POLLIN, 0};
    while (!stop) {
      if (poll(&pfd, 1, 50) <= 0) continue;
      uffd_msg msg;
      if (read(uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
      Protect(uffd, reinterpret_cast<std::byte*>(msg.arg.pagefault.address & ~(kPage - 1)), kPage, false);
    }
  });
  Protect(uffd, mem.base, kBytes, true);
  size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      Protect(uffd, mem.base, kBytes, true);
      p = 0;
      state.ResumeTiming();
    }
    mem.base[p++ * kPage] = std::byte{2};
  }
  stop = true;
  handler.join();
  close(uffd);
}
BENCHMARK(BM_UffdWriteProtectThread)->Iterations(4 * kPages);

// PAGEMAP_SCAN over [base, base + len): returns the written pages and
// write-protects them again.
size_t ScanAndReprotect(int pagemap, std::byte* base, size_t len, std::vector<page_region>& out) {
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = reinterpret_cast<uint64_t>(base);
  arg.end = arg.start + len;
  arg.vec = reinterpret_cast<uint64_t>(out.data());
  arg.vec_len = out.size();
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  long n = ioctl(pagemap, PAGEMAP_SCAN, &arg);
  size_t pages = 0;
  for (long i = 0; i < n; i++) pages += (out[i].end - out[i].start) / kPage;
  return pages;
}

struct AsyncWp {
  Memfd mem;
  int uffd = -1;
  int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  std::vector<page_region> regions = std::vector<page_region>(kPages);
  bool ok = false;
  AsyncWp() {
    uffd = OpenUffd(UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_ASYNC);
    uffdio_register reg{{reinterpret_cast<uint64_t>(mem.base), kBytes}, UFFDIO_REGISTER_MODE_WP, 0};
    ok = uffd >= 0 && pagemap >= 0 && ioctl(uffd, UFFDIO_REGISTER, &reg) == 0;
    if (ok) Protect(uffd, mem.base, kBytes, true);
  }
  ~AsyncWp() {
    if (uffd >= 0) close(uffd);
    if (pagemap >= 0) close(pagemap);
  }
};

void BM_UffdWriteProtectAsync(benchmark::State& state) {
  AsyncWp a;
  if (!a.ok) {
    state.SkipWithError("UFFD_FEATURE_WP_ASYNC or PAGEMAP_SCAN is not available");
    return;
  }
  size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      ScanAndReprotect(a.pagemap, a.mem.base, kBytes, a.regions);
      p = 0;
      state.ResumeTiming();
    }
    a.mem.base[p++ * kPage] = std::byte{2};
  }
}
BENCHMARK(BM_UffdWriteProtectAsync)->Iterations(4 * kPages);

// One iteration: a scan of kPages written pages; reported per page.
void BM_PagemapScanReprotect(benchmark::State& state) {
  AsyncWp a;
  if (!a.ok) {
    state.SkipWithError("UFFD_FEATURE_WP_ASYNC or PAGEMAP_SCAN is not available");
    return;
  }
  size_t found = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t p = 0; p < kPages; p++) a.mem.base[p * kPage] = std::byte{3};
    state.ResumeTiming();
    found += ScanAndReprotect(a.pagemap, a.mem.base, kBytes, a.regions);
  }
  if (found != state.iterations() * kPages) state.SkipWithError("the scan missed written pages");
  // Seconds per page (shown as e.g. 12.3n).
  state.counters["per_page"] = benchmark::Counter(
      static_cast<double>(kPages), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_PagemapScanReprotect)->Iterations(64);

std::byte* g_segv_base = nullptr;
void OnSegv(int, siginfo_t* si, void*) {
  auto addr = reinterpret_cast<uintptr_t>(si->si_addr) & ~(kPage - 1);
  mprotect(reinterpret_cast<void*>(addr), kPage, PROT_READ | PROT_WRITE);
}

void BM_MprotectSigsegv(benchmark::State& state) {
  Memfd mem;
  struct sigaction sa {}, old{};
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, &old);
  g_segv_base = mem.base;
  // One VMA per page after the first round: fine for 4096 pages.
  mprotect(mem.base, kBytes, PROT_READ);
  size_t p = 0;
  for (auto _ : state) {
    if (p == kPages) {
      state.PauseTiming();
      mprotect(mem.base, kBytes, PROT_READ);
      p = 0;
      state.ResumeTiming();
    }
    mem.base[p++ * kPage] = std::byte{2};
  }
  mprotect(mem.base, kBytes, PROT_READ | PROT_WRITE);
  sigaction(SIGSEGV, &old, nullptr);
}
BENCHMARK(BM_MprotectSigsegv)->Iterations(4 * kPages);

// ---------------------------------------------------------------- 4 KiB reads of a resident page

// A 4 KiB copy the compiler can neither drop nor hoist.
void CopyOut(std::byte* out, const std::byte* src) {
  benchmark::DoNotOptimize(out);
  benchmark::DoNotOptimize(src);
  std::memcpy(out, src, kPage);
  benchmark::ClobberMemory();
}

std::vector<uint64_t> RandomOffsets() {
  std::vector<uint64_t> v(4096);
  std::mt19937_64 rng(7);
  for (auto& x : v) x = (rng() % kPages) * kPage;
  return v;
}

void BM_OurMappedRead4K(benchmark::State& state) {
  OurMappedFile f;
  auto m = std::move(*f.file->Map(0, kBytes, MapAccess::kRead));
  alignas(64) static std::byte out[kPage];
  for (size_t p = 0; p < kPages; p++) std::memcpy(out, m->data() + p * kPage, kPage);  // mapped in
  auto offs = RandomOffsets();
  size_t i = 0;
  for (auto _ : state) {
    CopyOut(out, m->data() + offs[i++ & 4095]);
  }
}
BENCHMARK(BM_OurMappedRead4K);

void BM_OurFileRead4K(benchmark::State& state) {
  OurMappedFile f;
  alignas(64) static std::byte out[kPage];
  auto offs = RandomOffsets();
  size_t i = 0;
  for (auto _ : state) {
    auto n = f.file->Read(offs[i++ & 4095], out);
    benchmark::DoNotOptimize(n);
  }
}
BENCHMARK(BM_OurFileRead4K);

void BM_Memcpy4K(benchmark::State& state) {
  std::vector<std::byte> src(kBytes, std::byte{1});
  alignas(64) static std::byte out[kPage];
  auto offs = RandomOffsets();
  size_t i = 0;
  for (auto _ : state) {
    CopyOut(out, src.data() + offs[i++ & 4095]);
  }
}
BENCHMARK(BM_Memcpy4K);

struct KernelFile {
  std::string path = TempPath("kernel");
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  KernelFile() {
    std::vector<std::byte> buf(1 << 20, std::byte{0x5a});
    for (uint64_t off = 0; off < kBytes; off += buf.size()) (void)!pwrite(fd, buf.data(), buf.size(), off);
    fsync(fd);
  }
  ~KernelFile() {
    close(fd);
    std::filesystem::remove(path);
  }
};

void BM_KernelPread4K(benchmark::State& state) {
  KernelFile f;
  alignas(64) static std::byte out[kPage];
  auto offs = RandomOffsets();
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(pread(f.fd, out, kPage, offs[i++ & 4095]));
}
BENCHMARK(BM_KernelPread4K);

void BM_KernelMmapRead4K(benchmark::State& state) {
  KernelFile f;
  auto* base = static_cast<std::byte*>(mmap(nullptr, kBytes, PROT_READ, MAP_SHARED | MAP_POPULATE, f.fd, 0));
  alignas(64) static std::byte out[kPage];
  auto offs = RandomOffsets();
  size_t i = 0;
  for (auto _ : state) {
    CopyOut(out, base + offs[i++ & 4095]);
  }
  munmap(base, kBytes);
}
BENCHMARK(BM_KernelMmapRead4K);

}  // namespace

int main(int argc, char** argv) {
  stablecache::bench::RatioReporter reporter("x faster");
  reporter.AddPair("write-protect fault: ours vs raw uffd + thread", "BM_OurWriteProtectFault/iterations:16384",
                   "BM_UffdWriteProtectThread/iterations:16384");
  reporter.AddPair("write-protect fault: ours vs uffd WP_ASYNC", "BM_OurWriteProtectFault/iterations:16384",
                   "BM_UffdWriteProtectAsync/iterations:16384");
  reporter.AddPair("write-protect fault: ours vs mprotect + SIGSEGV", "BM_OurWriteProtectFault/iterations:16384",
                   "BM_MprotectSigsegv/iterations:16384");
  reporter.AddPair("mapped 4 KiB read vs File::Read", "BM_OurMappedRead4K", "BM_OurFileRead4K");
  reporter.AddPair("mapped 4 KiB read vs memcpy", "BM_OurMappedRead4K", "BM_Memcpy4K");
  reporter.AddPair("mapped 4 KiB read vs kernel pread", "BM_OurMappedRead4K", "BM_KernelPread4K");
  reporter.AddPair("mapped 4 KiB read vs kernel mmap", "BM_OurMappedRead4K", "BM_KernelMmapRead4K");
  return stablecache::bench::RunWithRatios(argc, argv, reporter);
}
