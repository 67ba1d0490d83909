// wac on a kernel filesystem: the same profiles through syscalls on a file
// in a directory (ext4, xfs, btrfs). The kernel's own stable-page machinery
// is what runs; the tool checks the result from outside.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "wac/harness.h"
#include "wac/wac.h"

namespace stablecache::wac {

namespace {

bool Mapped(Profile p, uint32_t writer) {
  switch (p) {
    case Profile::kA:
    case Profile::kE: return false;
    case Profile::kB:
    case Profile::kF: return true;
    case Profile::kC:
    case Profile::kD: return writer % 2 == 1;
  }
  return false;
}
bool Direct(Profile p) { return p == Profile::kD || p == Profile::kE || p == Profile::kF; }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct Mapping {
  void* addr = MAP_FAILED;
  size_t len = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, len);
  }
  std::byte* bytes() const { return static_cast<std::byte*>(addr); }
};

Status FullPwrite(int fd, const void* buf, size_t len, off_t off, const std::string& what) {
  ssize_t n = ::pwrite(fd, buf, len, off);
  if (n < 0) return Status::FromErrno(errno, what);
  if (static_cast<size_t>(n) != len) return Status::IoError(fmt::format("{}: short write of {} bytes", what, n));
  return Status::Ok();
}

}  // namespace

Result<WacRun> RunOnDirectory(const WacConfig& cfg, const Progress& progress) {
  std::error_code ec;
  if (!std::filesystem::is_directory(cfg.target, ec))
    return Err(Status::InvalidArgument(fmt::format("--target '{}' is not a directory (use 'stack' or a directory)", cfg.target)));
  WacRun run;
  run.profile = cfg.profile;
  run.policy = "kernel";  // the kernel's own stable-pages rule, whatever was asked
  run.effective_policy = "kernel";
  run.target = cfg.target;
  run.stack = "kernel";
  run.threads = cfg.threads;
  run.file_size = cfg.file_size;

  static std::atomic<int> seq{0};
  const std::string path = (std::filesystem::path(cfg.target) / fmt::format(".stablecache-wac-{}-{}", getpid(), seq++)).string();
  struct Remove {
    std::string p;
    ~Remove() { ::unlink(p.c_str()); }
  } remove{path};
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.get() < 0) return Err(Status::FromErrno(errno, fmt::format("open {}", path)));
  if (::ftruncate(fd.get(), static_cast<off_t>(cfg.file_size)) != 0)
    return Err(Status::FromErrno(errno, fmt::format("ftruncate {}", path)));
  Fd dfd(Direct(cfg.profile) ? ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC) : -1);
  if (Direct(cfg.profile) && dfd.get() < 0) {
    if (errno != EINVAL) return Err(Status::FromErrno(errno, fmt::format("open {} with O_DIRECT", path)));
    run.verdict = "unsupported";
    run.note = fmt::format("the filesystem under {} does not support O_DIRECT", cfg.target);
    return run;
  }
  // Writers store through `io` (the direct fd when the profile says so);
  // mapped writers map it.
  const int io = Direct(cfg.profile) ? dfd.get() : fd.get();
  Mapping map;
  map.len = cfg.file_size;
  bool any_mapped = false;
  for (uint32_t w = 0; w < cfg.threads; w++) any_mapped |= Mapped(cfg.profile, w);
  if (any_mapped) {
    map.addr = ::mmap(nullptr, map.len, PROT_READ | PROT_WRITE, MAP_SHARED, io, 0);
    if (map.addr == MAP_FAILED) return Err(Status::FromErrno(errno, fmt::format("mmap {}", path)));
  }

  const uint64_t blocks = cfg.file_size / kBlockSize;
  BlockTable table(blocks);
  auto step = [&](uint32_t w, std::mt19937_64& rng, LatencyHistogram& lat) -> Status {
    alignas(4096) std::byte buf[kBlockSize];
    const uint64_t b = rng() % blocks;
    const off_t off = static_cast<off_t>(b * kBlockSize);
    const bool mapped = Mapped(cfg.profile, w);
    SC_RETURN_IF_ERROR(table.Store(b, w, [&](const BlockId& id) -> Status {
      FillBlock(id, buf);
      uint64_t t0 = NowNs();
      Status st;
      if (mapped) std::memcpy(map.bytes() + off, buf, kBlockSize);  // may fault: page_mkwrite waits here
      else st = FullPwrite(io, buf, kBlockSize, off, fmt::format("pwrite block {}", b));
      lat.Add(NowNs() - t0);
      return st;
    }));
    if (mapped) {
      if (::msync(map.bytes() + off, kBlockSize, MS_SYNC) != 0) return Status::FromErrno(errno, "msync");
    } else if (::sync_file_range(io, off, kBlockSize, SYNC_FILE_RANGE_WRITE) != 0) {
      return Status::FromErrno(errno, "sync_file_range");
    }
    return Status::Ok();
  };
  auto stats = RunWriters(cfg.threads, cfg.duration_s, progress, step, cfg.cancel);
  if (!stats) return Err(stats.error().WithContext("wac writer"));
  run.duration_s = stats->elapsed_s;
  if (cfg.cancel && cfg.cancel->load()) {
    run.interrupted = true;
    run.note = fmt::format("interrupted after {:.1f} of {:g} s", stats->elapsed_s, cfg.duration_s);
  }
  run.ops = stats->ops;
  run.ops_per_s = static_cast<double>(run.ops) / stats->elapsed_s;
  run.bytes_written = run.ops * kBlockSize;
  run.writer_wait_p99_us = static_cast<double>(stats->store_latency.Percentile(0.99)) / 1000.0;

  // fsync, drop this file's cached pages, read everything back past the cache.
  if (any_mapped && ::msync(map.addr, map.len, MS_SYNC) != 0) return Err(Status::FromErrno(errno, "msync"));
  if (::fsync(fd.get()) != 0) return Err(Status::FromErrno(errno, fmt::format("fsync {}", path)));
  if (map.addr != MAP_FAILED) {
    ::munmap(map.addr, map.len);
    map.addr = MAP_FAILED;
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  Fd rfd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  int reader = rfd.get();
  if (reader < 0) {
    reader = fd.get();
    run.note += std::string(run.note.empty() ? "" : "; ") +
                "read-back through the page cache after POSIX_FADV_DONTNEED: no O_DIRECT here";
  }
  alignas(4096) std::byte buf[kBlockSize];
  for (uint64_t b = 0; b < blocks; b++) {
    ssize_t n = ::pread(reader, buf, kBlockSize, static_cast<off_t>(b * kBlockSize));
    std::optional<std::string> bad;
    if (n < 0 && errno == EIO) {  // btrfs data checksums, T10 PI: the medium rejected it
      run.violations.integrity_errors++;
      bad = "eio";
    } else if (n < 0) {
      return Err(Status::FromErrno(errno, fmt::format("read-back of block {}", b)));
    } else if (n != static_cast<ssize_t>(kBlockSize)) {
      bad = "short";
    } else {
      bad = JudgeReadback(b, table.Last(b), buf);
    }
    if (!bad) continue;
    run.violations.readback_mismatch++;
    NoteBadBlock(run, b, "readback:" + *bad);
  }
  run.verdict = run.violations.total() > 0 ? "corrupt" : "clean";
  return run;
}

}  // namespace stablecache::wac
