// Direct I/O through the library beside fio, in one run (issue 11).
//
//   build/default/bench/direct_bench                  # about 4-5 minutes
//   build/default/bench/direct_bench --seconds 1 --rounds 2 --parts 1
//
// A plain driver, not Google Benchmark: every configuration runs for
// --seconds, the configurations take turns within a round (ours and fio
// back to back, the order swapped every round), and --rounds rounds give
// medians and per-round ratios. The machine is noisy; trust the ratios of
// one run, not the absolute figures.
//
// Parts (same backing file, block size and queue depth on both sides):
//  1. DirectQueue on the `file` stack (io_uring, O_DIRECT) against Debian's
//     fio (--ioengine=io_uring --direct=1) on the same backing file and
//     range: 4 KiB random and 128 KiB sequential, reads and writes, QD 1 and
//     QD 16, no page of the range cached. Ratio ours/fio (IOPS).
//  2. The same on `integrity,file` (its own backing file, the same size):
//     kUnstable (the integrity layer bounces the buffer once) against
//     kDeclaredStable (zero copy). Bounce cost = 1 - unstable/declared;
//     declared-stable against the `file` figure of part 1 in that round.
//  3. Direct I/O on a range whose pages the cache holds (read through
//     File::Read first) against the same on a range it does not hold.
//
// Layout of the `file` backing file ($TMPDIR or /var/tmp, preallocated and
// written once at start so no extent is unwritten): [0, --size) is what
// parts 1 and 2 and fio use; after it, a 64 MiB range that part 3 caches
// and a 64 MiB range it leaves uncached. fio never touches part 3's ranges.
// The bench installs fio with apt-get when it is missing (--no-install to
// refuse). The backing files are removed at exit unless --keep.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "stablecache/cache.h"
#include "stablecache/direct.h"
#include "stablecache/stack.h"

namespace {

using namespace stablecache;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kCachedRange = 64 * kMiB;

[[noreturn]] void Die(const std::string& what) {
  fmt::print(stderr, "direct_bench: {}\n", what);
  std::exit(1);
}

struct Options {
  double seconds = 2.0;
  int rounds = 3;
  uint64_t size = 1024 * kMiB;
  std::string dir;
  std::string parts = "123";
  bool keep = false;
  bool no_install = false;
  bool verbose = false;
};

// ---------------------------------------------------------------- workload

enum class Pattern { kRandom, kSequential };
enum class Engine { kOurs, kFio };

struct Workload {
  bool write = false;
  Pattern pattern = Pattern::kRandom;
  uint32_t bs = 4096;
  uint32_t qd = 1;
  std::string Name() const {
    return fmt::format("{} {} {} QD{}", bs >= kMiB ? fmt::format("{}M", bs / kMiB) : fmt::format("{}K", bs / 1024),
                       pattern == Pattern::kRandom ? "rand" : "seq", write ? "write" : "read", qd);
  }
  const char* FioRw() const {
    if (pattern == Pattern::kRandom) return write ? "randwrite" : "randread";
    return write ? "write" : "read";
  }
};

struct Sample {
  double secs = 0;
  uint64_t ops = 0;
  double cpu_secs = 0;        // user + system, the whole process (ours) or fio's report
  uint64_t leaf_bytes = 0;    // bytes the file leaf read or wrote
  uint64_t bounced = 0;       // bytes bounced by the stack
  uint64_t meta_writes = 0;   // integrity: tag and record blocks written
  uint64_t meta_flushes = 0;  // integrity: flushes for its commits
  double Iops() const { return secs > 0 ? double(ops) / secs : 0; }
  double CpuUsPerOp() const { return ops ? cpu_secs * 1e6 / double(ops) : 0; }
};

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

struct AlignedBuf {
  std::byte* p = nullptr;
  size_t n = 0;
  explicit AlignedBuf(size_t len) : n(len) {
    p = static_cast<std::byte*>(std::aligned_alloc(4096, len));
    if (!p) Die("out of memory");
    std::memset(p, 0x5a, len);
  }
  ~AlignedBuf() { std::free(p); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  std::span<std::byte> span() const { return {p, n}; }
};

// ---------------------------------------------------------------- a stack

struct Volume {
  std::string spec;
  std::string path;
  uint64_t region = 0;  // file bytes written at setup: [0, region)
  std::shared_ptr<BlockDevice> dev;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;

  struct Counters {
    uint64_t leaf_bytes = 0, bounced = 0, meta_writes = 0, meta_flushes = 0;
  };
  Counters Count() const {
    std::vector<LayerStats> layers;
    dev->CollectStats(layers);
    Counters c;
    for (const auto& l : layers) {
      if (l.name.rfind("file:", 0) == 0) c.leaf_bytes += l.bytes_read + l.bytes_written;
      c.bounced += l.bytes_bounced;
      c.meta_writes += l.metadata_writes;
      c.meta_flushes += l.metadata_flushes;
    }
    return c;
  }
};

// The block stamped at file offset `off`: the offset, then a fill byte.
void Stamp(std::byte* block, uint64_t off) {
  std::memset(block, int(0xa5 ^ (off >> 12) % 251), 4096);
  std::memcpy(block, &off, sizeof off);
}

// Creates (preallocates) the backing file, opens the stack and the File,
// and writes [0, region) once with direct writes of stamped blocks, so
// every page is file data (not a hole) and every extent is written.
std::unique_ptr<Volume> OpenVolume(const std::string& layers, const std::string& path, uint64_t region,
                                   uint64_t device_bytes) {
  auto v = std::make_unique<Volume>();
  v->spec = layers;
  v->path = path;
  v->region = region;
  std::filesystem::remove(path);
  {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) Die(fmt::format("create {}: {}", path, std::strerror(errno)));
    int rc = posix_fallocate(fd, 0, off_t(device_bytes));
    close(fd);
    if (rc != 0) Die(fmt::format("fallocate {} bytes for {}: {}", device_bytes, path, std::strerror(rc)));
  }
  auto built = BuildStack(layers, BuildOptions{path, device_bytes});
  if (!built) Die(fmt::format("BuildStack '{}': {}", layers, built.error().ToString()));
  v->dev = *built;
  CacheOptions co;
  co.capacity_bytes = 4 * kCachedRange;
  auto cache = Cache::Create(co);
  if (!cache) Die(cache.error().ToString());
  v->cache = *cache;
  auto file = v->cache->Open(v->dev);
  if (!file) Die(fmt::format("open '{}': {}", layers, file.error().ToString()));
  v->file = std::move(*file);

  // Fill: 1 MiB direct writes, 8 in flight.
  constexpr uint32_t kDepth = 8;
  std::vector<std::unique_ptr<AlignedBuf>> bufs;
  for (uint32_t i = 0; i < kDepth; i++) bufs.push_back(std::make_unique<AlignedBuf>(kMiB));
  DirectQueue q(*v->file, kDepth);
  uint64_t next = 0;
  auto submit = [&](uint32_t slot) {
    const uint64_t len = std::min<uint64_t>(kMiB, region - next);
    for (uint64_t b = 0; b < len; b += 4096) Stamp(bufs[slot]->p + b, next + b);
    Status st = q.Submit(DirectRequest{DirectOp::kWrite, next, {bufs[slot]->span().first(len)}, Stability::kStable},
                         slot);
    if (!st.ok()) Die(fmt::format("fill '{}' at {}: {}", layers, next, st.ToString()));
    next += len;
  };
  // Counted here: InFlight() leaves out completions not yet reaped.
  uint32_t outstanding = 0;
  for (uint32_t s = 0; s < kDepth && next < region; s++) submit(s), outstanding++;
  while (outstanding != 0) {
    for (auto& c : q.Reap(1)) {
      outstanding--;
      if (!c.result) Die(fmt::format("fill '{}': {}", layers, c.result.error().ToString()));
      if (next < region) submit(uint32_t(c.tag)), outstanding++;
    }
  }
  if (auto sz = v->file->Size(); !sz || *sz < region) Die(fmt::format("fill '{}' ended short of {} bytes", layers, region));
  Status st = v->file->Sync();
  if (!st.ok()) Die(fmt::format("sync '{}': {}", layers, st.ToString()));
  return v;
}

// Reads `samples` random blocks (4 KiB and 128 KiB) of [from, to) with
// DirectRead and checks their stamps. Returns the number of bad blocks.
uint64_t VerifyStamps(File& f, uint64_t from, uint64_t to, int samples, uint64_t seed, bool buffered = false) {
  AlignedBuf buf(128 * 1024);
  std::vector<std::byte> want(4096);
  std::mt19937_64 rng(seed);
  uint64_t bad = 0;
  for (int i = 0; i < samples; i++) {
    const uint64_t len = i % 2 ? 4096 : 128 * 1024;
    const uint64_t off = from + rng() % ((to - from - len) / 4096 + 1) * 4096;
    auto r = buffered ? f.Read(off, buf.span().first(len)) : f.DirectRead(off, buf.span().first(len));
    if (!r || *r != len) {
      fmt::print(stderr, "verify: read of {} at {} failed: {}\n", len, off,
                 r ? fmt::format("{} bytes", *r) : r.error().ToString());
      bad++;
      continue;
    }
    for (uint64_t b = 0; b < len; b += 4096) {
      Stamp(want.data(), off + b);
      if (std::memcmp(want.data(), buf.p + b, 4096) != 0) {
        if (bad < 4) fmt::print(stderr, "verify: wrong bytes in the block at {}\n", off + b);
        bad++;
      }
    }
  }
  return bad;
}

// Runs `w` on [from, to) of `v` through a DirectQueue for `secs`.
Sample RunOurs(Volume& v, const Workload& w, uint64_t from, uint64_t to, Stability stability, double secs,
               uint64_t seed) {
  std::vector<std::unique_ptr<AlignedBuf>> bufs;
  for (uint32_t i = 0; i < w.qd; i++) bufs.push_back(std::make_unique<AlignedBuf>(w.bs));
  std::mt19937_64 rng(seed);
  const uint64_t blocks = (to - from) / w.bs;
  uint64_t cursor = from;
  auto next_offset = [&] {
    if (w.pattern == Pattern::kRandom) return from + rng() % blocks * w.bs;
    const uint64_t off = cursor;
    cursor += w.bs;
    if (cursor + w.bs > to) cursor = from;
    return off;
  };
  const DirectOp op = w.write ? DirectOp::kWrite : DirectOp::kRead;
  DirectQueue q(*v.file, w.qd);
  auto submit = [&](uint32_t slot) {
    const uint64_t off = next_offset();
    Status st = q.Submit(DirectRequest{op, off, {bufs[slot]->span()}, stability}, slot);
    if (!st.ok()) Die(fmt::format("{} on '{}' at {}: {}", w.Name(), v.spec, off, st.ToString()));
  };

  Sample s;
  const Volume::Counters c0 = v.Count();
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(secs));
  for (uint32_t slot = 0; slot < w.qd; slot++) submit(slot);
  Clock::time_point t1;
  for (;;) {
    auto done = q.Reap(1);
    for (auto& c : done) {
      if (!c.result) Die(fmt::format("{} on '{}': {}", w.Name(), v.spec, c.result.error().ToString()));
      if (*c.result != w.bs) Die(fmt::format("{} on '{}': {} bytes of {}", w.Name(), v.spec, *c.result, w.bs));
      s.ops++;
    }
    t1 = Clock::now();
    if (t1 >= deadline) break;
    for (auto& c : done) submit(uint32_t(c.tag));
  }
  const double cpu1 = CpuSeconds();
  Status st = q.Drain();
  if (!st.ok()) Die(fmt::format("{} on '{}': {}", w.Name(), v.spec, st.ToString()));
  s.secs = std::chrono::duration<double>(t1 - t0).count();
  s.cpu_secs = cpu1 - cpu0;
  const Volume::Counters c1 = v.Count();
  s.leaf_bytes = c1.leaf_bytes - c0.leaf_bytes;
  s.bounced = c1.bounced - c0.bounced;
  s.meta_writes = c1.meta_writes - c0.meta_writes;
  s.meta_flushes = c1.meta_flushes - c0.meta_flushes;
  return s;
}

// ---------------------------------------------------------------- fio

std::string Shell(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) Die(fmt::format("popen '{}': {}", cmd, std::strerror(errno)));
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (status) *status = rc;
  return out;
}

std::string EnsureFio(bool no_install) {
  int rc = 0;
  std::string v = Shell("fio --version 2>/dev/null", &rc);
  if (rc == 0 && !v.empty()) return v.substr(0, v.find('\n'));
  if (no_install) Die("fio is not installed (and --no-install was given): apt-get install -y fio");
  fmt::print("fio is missing: installing it with apt-get\n");
  std::fflush(stdout);
  rc = std::system("apt-get install -y fio >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && "
                   "apt-get install -y fio >/dev/null 2>&1)");
  v = Shell("fio --version 2>/dev/null", &rc);
  if (rc != 0 || v.empty()) Die("installing fio failed: run `apt-get update && apt-get install -y fio` as root");
  return v.substr(0, v.find('\n'));
}

std::string FioCommand(const std::string& path, const Workload& w, uint64_t size, double secs) {
  return fmt::format(
      "fio --name=direct_bench --filename={} --ioengine=io_uring --direct=1 --rw={} --bs={} --iodepth={} "
      "--offset=0 --size={} --time_based --runtime={}ms --output-format=json",
      path, w.FioRw(), w.bs, w.qd, size, int64_t(secs * 1000));
}

Sample RunFio(const std::string& path, const Workload& w, uint64_t size, double secs, bool verbose) {
  const std::string cmd = FioCommand(path, w, size, secs);
  if (verbose) fmt::print("  {}\n", cmd);
  int rc = 0;
  std::string out = Shell(cmd + " 2>&1", &rc);
  const size_t brace = out.find('{');
  if (rc != 0 || brace == std::string::npos) Die(fmt::format("fio failed ({}): {}\n{}", rc, cmd, out));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(out.substr(brace));
  } catch (const std::exception& e) {
    Die(fmt::format("fio output is not JSON ({}): {}", e.what(), out));
  }
  const auto& job = j["jobs"][0];
  const auto& side = job[w.write ? "write" : "read"];
  Sample s;
  s.ops = side["total_ios"].get<uint64_t>();
  s.secs = side["runtime"].get<double>() / 1000.0;  // ms
  s.cpu_secs = (job["usr_cpu"].get<double>() + job["sys_cpu"].get<double>()) / 100.0 * s.secs;
  s.leaf_bytes = side["io_bytes"].get<uint64_t>();
  if (job["error"].get<int>() != 0) Die(fmt::format("fio reported error {}: {}", job["error"].get<int>(), cmd));
  return s;
}

// ---------------------------------------------------------------- results

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Series {
  std::vector<Sample> samples;
  double MedianIops() const {
    std::vector<double> v;
    for (auto& s : samples) v.push_back(s.Iops());
    return Median(v);
  }
  double MedianCpu() const {
    std::vector<double> v;
    for (auto& s : samples) v.push_back(s.CpuUsPerOp());
    return Median(v);
  }
  double MedianLeafPerOp() const {
    std::vector<double> v;
    for (auto& s : samples) v.push_back(s.ops ? double(s.leaf_bytes) / double(s.ops) : 0);
    return Median(v);
  }
  double MedianPerOp(uint64_t Sample::*field) const {
    std::vector<double> v;
    for (auto& s : samples) v.push_back(s.ops ? double(s.*field) / double(s.ops) : 0);
    return Median(v);
  }
  double MedianBouncedPerOp() const {
    std::vector<double> v;
    for (auto& s : samples) v.push_back(s.ops ? double(s.bounced) / double(s.ops) : 0);
    return Median(v);
  }
};

// Per-round ratios a/b (IOPS), as "min-max".
std::string RoundRange(const Series& a, const Series& b) {
  std::vector<double> r;
  for (size_t i = 0; i < std::min(a.samples.size(), b.samples.size()); i++)
    if (b.samples[i].Iops() > 0) r.push_back(a.samples[i].Iops() / b.samples[i].Iops());
  if (r.empty()) return "-";
  auto [lo, hi] = std::minmax_element(r.begin(), r.end());
  return fmt::format("{:.2f}-{:.2f}", *lo, *hi);
}

std::string Iops(double v) { return v >= 1e5 ? fmt::format("{:.0f}k", v / 1e3) : fmt::format("{:.1f}k", v / 1e3); }
std::string MBps(double iops, uint32_t bs) { return fmt::format("{:.0f}", iops * bs / 1e6); }

std::string LoadAvg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return fmt::format("{} {} {}", a, b, c);
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"direct I/O through stablecache beside fio (see the comment at the top of bench/direct_bench.cc)"};
  app.add_option("--seconds", o.seconds, "run time of each configuration in each round")->capture_default_str();
  app.add_option("--rounds", o.rounds, "rounds (medians and per-round ratios over them)")->capture_default_str();
  std::string size_text = "1G";
  app.add_option("--size", size_text, "the range parts 1 and 2 (and fio) use")->capture_default_str();
  app.add_option("--dir", o.dir, "directory of the backing files (default $TMPDIR or /var/tmp; not tmpfs)");
  app.add_option("--parts", o.parts, "which parts to run, e.g. 12")->capture_default_str();
  app.add_flag("--keep", o.keep, "leave the backing files");
  app.add_flag("--no-install", o.no_install, "fail instead of installing fio");
  app.add_flag("-v,--verbose", o.verbose, "print each fio command and every sample");
  CLI11_PARSE(app, argc, argv);
  auto size = ParseSize(size_text);
  if (!size || *size < 64 * kMiB || *size % (128 * 1024) != 0) Die("--size: at least 64M, a multiple of 128K");
  o.size = *size;
  if (o.dir.empty()) {
    const char* t = std::getenv("TMPDIR");
    o.dir = t ? t : "/var/tmp";
  }
  const bool part1 = o.parts.find('1') != std::string::npos;
  const bool part2 = o.parts.find('2') != std::string::npos;
  const bool part3 = o.parts.find('3') != std::string::npos;

  const std::string fio_version = part1 ? EnsureFio(o.no_install) : std::string("-");
  utsname un{};
  uname(&un);
  fmt::print("direct_bench: {} s per configuration, {} rounds, range {} MiB, backing files in {}\n", o.seconds,
             o.rounds, o.size / kMiB, o.dir);
  fmt::print("machine: {} vCPUs, {}, Linux {}; {}; load {} at start\n", sysconf(_SC_NPROCESSORS_ONLN), CpuModel(),
             un.release, fio_version, LoadAvg());
  std::fflush(stdout);

  // ---- setup
  const uint64_t region = o.size + 2 * kCachedRange;
  const std::string file_path = (std::filesystem::path(o.dir) / fmt::format("stablecache-direct-{}-file.img", getpid())).string();
  const std::string integ_path = (std::filesystem::path(o.dir) / fmt::format("stablecache-direct-{}-integrity.img", getpid())).string();
  auto t_setup = Clock::now();
  // The file leaf: the region plus the File's 8 KiB size record.
  auto plain = OpenVolume("file", file_path, region, region + kMiB);
  std::unique_ptr<Volume> integ;
  if (part2) integ = OpenVolume("integrity,file", integ_path, o.size, o.size + o.size / 16 + 16 * kMiB);
  const uint64_t cached_from = o.size, uncached_from = o.size + kCachedRange;
  uint64_t bad = VerifyStamps(*plain->file, 0, region, 256, 1);
  if (integ) bad += VerifyStamps(*integ->file, 0, o.size, 256, 2);
  if (bad) Die(fmt::format("{} blocks read back wrong after the fill", bad));
  fmt::print("setup: {:.1f} s (backing files written once, {} sample reads verified)\n",
             std::chrono::duration<double>(Clock::now() - t_setup).count(), integ ? 512 : 256);
  std::fflush(stdout);

  if (part3) {
    // Cache the part-3 range through the buffered path and check it.
    AlignedBuf b(kMiB);
    for (uint64_t off = cached_from; off < cached_from + kCachedRange; off += kMiB)
      if (auto r = plain->file->Read(off, b.span()); !r || *r != kMiB) Die("File::Read of the cached range failed");
    const CacheStats cs = plain->cache->Stats();
    fmt::print("part 3: {} of {} pages of the cached range in the cache after File::Read\n", cs.cached_pages,
               kCachedRange / 4096);
    if (VerifyStamps(*plain->file, cached_from, cached_from + kCachedRange, 256, 3) != 0)
      Die("direct reads of cached pages returned wrong bytes");
  }

  // ---- the matrix
  struct Entry {
    int part;
    std::string key;  // unique
    Workload w;
    std::string what;  // engine/stack label
  };
  const std::vector<Workload> p1 = {
      {false, Pattern::kRandom, 4096, 1},        {false, Pattern::kRandom, 4096, 16},
      {true, Pattern::kRandom, 4096, 1},         {true, Pattern::kRandom, 4096, 16},
      {false, Pattern::kSequential, 131072, 1},  {false, Pattern::kSequential, 131072, 16},
      {true, Pattern::kSequential, 131072, 1},   {true, Pattern::kSequential, 131072, 16},
  };
  const std::vector<Workload> p2 = {
      {false, Pattern::kRandom, 4096, 1},  {false, Pattern::kRandom, 4096, 16},
      {true, Pattern::kRandom, 4096, 1},   {true, Pattern::kRandom, 4096, 16},
      {false, Pattern::kSequential, 131072, 16}, {true, Pattern::kSequential, 131072, 16},
  };
  const std::vector<Workload> p3 = {
      {false, Pattern::kRandom, 4096, 1},  {false, Pattern::kRandom, 4096, 16},
      {true, Pattern::kRandom, 4096, 1},   {true, Pattern::kRandom, 4096, 16},
      {false, Pattern::kSequential, 131072, 16}, {true, Pattern::kSequential, 131072, 16},
  };
  std::map<std::string, Series> results;
  auto key = [](const std::string& what, const Workload& w) { return what + "|" + w.Name(); };

  const auto t_start = Clock::now();
  for (int round = 0; round < o.rounds; round++) {
    const bool flip = round % 2 == 1;
    uint64_t seed = 1000 + uint64_t(round) * 100;
    auto run = [&](const std::string& what, const Workload& w, auto fn) {
      Sample s = fn();
      results[key(what, w)].samples.push_back(s);
      if (o.verbose)
        fmt::print("  round {} {:<24} {:<22} {:>9} IOPS  {:.1f} us CPU/op\n", round + 1, w.Name(), what,
                   Iops(s.Iops()), s.CpuUsPerOp());
    };
    // Part 1 needs the `file` figures for part 2 too.
    if (part1 || part2) {
      for (const auto& w : p1) {
        auto ours = [&] { run("file", w, [&] { return RunOurs(*plain, w, 0, o.size, Stability::kUnstable, o.seconds, ++seed); }); };
        auto fio = [&] { run("fio", w, [&] { return RunFio(file_path, w, o.size, o.seconds, o.verbose); }); };
        if (!part1) {
          ours();
          continue;
        }
        if (flip) fio(), ours();
        else ours(), fio();
      }
    }
    if (part2) {
      for (const auto& w : p2) {
        auto u = [&] { run("integrity unstable", w, [&] { return RunOurs(*integ, w, 0, o.size, Stability::kUnstable, o.seconds, ++seed); }); };
        auto d = [&] { run("integrity declared", w, [&] { return RunOurs(*integ, w, 0, o.size, Stability::kDeclaredStable, o.seconds, ++seed); }); };
        if (flip) d(), u();
        else u(), d();
      }
    }
    if (part3) {
      for (const auto& w : p3) {
        auto c = [&] { run("cached range", w, [&] { return RunOurs(*plain, w, cached_from, cached_from + kCachedRange, Stability::kUnstable, o.seconds, ++seed); }); };
        auto u = [&] { run("uncached range", w, [&] { return RunOurs(*plain, w, uncached_from, uncached_from + kCachedRange, Stability::kUnstable, o.seconds, ++seed); }); };
        if (flip) u(), c();
        else c(), u();
      }
    }
    fmt::print("round {}/{} done ({:.0f} s, load {})\n", round + 1, o.rounds,
               std::chrono::duration<double>(Clock::now() - t_start).count(), LoadAvg());
    std::fflush(stdout);
  }

  // ---- report
  auto& R = results;
  if (part1) {
    fmt::print("\nPart 1: DirectQueue on `file` vs fio (io_uring, O_DIRECT), same file and range; medians of {} rounds\n",
               o.rounds);
    fmt::print("{:<20} {:>9} {:>7} {:>9} {:>7} {:>9} {:>11} {:>10} {:>10}\n", "config", "ours IOPS", "MB/s", "fio IOPS",
               "MB/s", "ours/fio", "per round", "ours CPU", "fio CPU");
    for (const auto& w : p1) {
      const Series &a = R[key("file", w)], &b = R[key("fio", w)];
      fmt::print("{:<20} {:>9} {:>7} {:>9} {:>7} {:>8.2f}x {:>11} {:>7.1f} us {:>7.1f} us\n", w.Name(), Iops(a.MedianIops()),
                 MBps(a.MedianIops(), w.bs), Iops(b.MedianIops()), MBps(b.MedianIops(), w.bs),
                 a.MedianIops() / b.MedianIops(), RoundRange(a, b), a.MedianCpu(), b.MedianCpu());
    }
    fmt::print("(CPU: user+system per op; ours counts the whole process: submitter, the file leaf's reaper)\n");
  }
  if (part2) {
    fmt::print("\nPart 2: `integrity,file` unstable (bounced once) vs declared-stable (zero copy), and vs `file`\n");
    fmt::print("{:<20} {:>10} {:>10} {:>10} {:>11} {:>12} {:>10} {:>11} {:>11} {:>13}\n", "config", "file IOPS",
               "unstable", "declared", "bounce cost", "per round", "decl/file", "bounced/op", "CPU u/d",
               "tags/flush op");
    for (const auto& w : p2) {
      const Series &f = R[key("file", w)], &u = R[key("integrity unstable", w)], &d = R[key("integrity declared", w)];
      std::vector<double> costs;
      for (size_t i = 0; i < std::min(u.samples.size(), d.samples.size()); i++)
        costs.push_back(1 - u.samples[i].Iops() / d.samples[i].Iops());
      auto [lo, hi] = std::minmax_element(costs.begin(), costs.end());
      fmt::print("{:<20} {:>10} {:>10} {:>10} {:>10.1f}% {:>12} {:>9.2f}x {:>6.0f}/{:<4.0f} {:>5.1f}/{:<5.1f} {:>6.2f}/{:<6.2f}\n", w.Name(),
                 Iops(f.MedianIops()), Iops(u.MedianIops()), Iops(d.MedianIops()),
                 100 * (1 - u.MedianIops() / d.MedianIops()), fmt::format("{:.0f}..{:.0f}%", 100 * *lo, 100 * *hi),
                 d.MedianIops() / f.MedianIops(), u.MedianBouncedPerOp(), d.MedianBouncedPerOp(), u.MedianCpu(),
                 d.MedianCpu(), d.MedianPerOp(&Sample::meta_writes), d.MedianPerOp(&Sample::meta_flushes));
    }
    fmt::print("(bounce cost = 1 - unstable/declared; bounced/op: bytes the stack bounced per op, unstable/declared;\n"
               " CPU u/d: user+system us per op, unstable/declared; tags/flush op: the integrity layer's metadata block\n"
               " writes and commit flushes per op, declared)\n");
  }
  if (part3) {
    fmt::print("\nPart 3: `file`, a {} MiB range the cache holds (File::Read first) vs an uncached one\n",
               kCachedRange / kMiB);
    fmt::print("{:<20} {:>13} {:>11} {:>15} {:>11} {:>16}\n", "config", "uncached IOPS", "cached IOPS",
               "cached/uncached", "per round", "leaf bytes/op c/u");
    for (const auto& w : p3) {
      const Series &c = R[key("cached range", w)], &u = R[key("uncached range", w)];
      fmt::print("{:<20} {:>13} {:>11} {:>14.2f}x {:>11} {:>9.0f}/{:<6.0f}\n", w.Name(), Iops(u.MedianIops()),
                 Iops(c.MedianIops()), c.MedianIops() / u.MedianIops(), RoundRange(c, u), c.MedianLeafPerOp(),
                 u.MedianLeafPerOp());
    }
    const CacheStats cs = plain->cache->Stats();
    fmt::print("(cache after the runs: {} pages cached, {} pages written back)\n", cs.cached_pages, cs.pages_written);
  }
  fmt::print("\nload {} at end\n", LoadAvg());
  if (part1) fmt::print("fio command of a configuration: {}\n", FioCommand(file_path, p1[1], o.size, o.seconds));

  Status st = plain->file->Close();
  if (!st.ok()) fmt::print(stderr, "close: {}\n", st.ToString());
  if (integ) (void)integ->file->Close();
  if (!o.keep) {
    std::filesystem::remove(file_path);
    if (part2) std::filesystem::remove(integ_path);
  }
  return 0;
}
