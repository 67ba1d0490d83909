// wac on a kernel filesystem: the same profiles through syscalls on a file
// in a directory (ext4, xfs, btrfs). The kernel's own stable-page machinery
// is what runs; the tool checks the result from outside.
//
// Direct writers (D, E, F) write with O_DIRECT through a small io_uring per
// writer, so the write is in flight while its writer scribbles the buffer
// (block_format.h) until the completion arrives. F maps the buffered fd and
// writes directly through a second, O_DIRECT fd on the same file.
#include <fcntl.h>
#include <liburing.h>
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


// One writer's io_uring, for its direct writes.
struct Ring {
  io_uring ring{};
  bool ok = false;
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    if (ok) io_uring_queue_exit(&ring);
  }
};

// pwrite of one block through `r`, scribbling `buf` until it completes.
Status ScribbledPwrite(Ring& r, int fd, std::span<std::byte> buf, std::span<const std::byte> content,
                       std::span<const std::byte> scribble, off_t off, uint64_t& overwrites) {
  io_uring_sqe* sqe = io_uring_get_sqe(&r.ring);
  if (!sqe) return Status::IoError("io_uring: no free submission entry");
  io_uring_prep_write(sqe, fd, buf.data(), static_cast<unsigned>(buf.size()), static_cast<uint64_t>(off));
  int n = io_uring_submit(&r.ring);
  if (n < 0) return Status::FromErrno(-n, "io_uring_submit");
  io_uring_cqe* cqe = nullptr;
  overwrites += ScribbleWhile(buf, content, scribble, [&] {
    int rc = io_uring_peek_cqe(&r.ring, &cqe);
    return rc == -EAGAIN;
  });
  if (!cqe) {
    int rc = io_uring_wait_cqe(&r.ring, &cqe);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_wait_cqe");
  }
  const int res = cqe->res;
  io_uring_cqe_seen(&r.ring, cqe);
  if (res < 0) return Status::FromErrno(-res, fmt::format("O_DIRECT write at offset {}", off));
  if (static_cast<size_t>(res) != buf.size())
    return Status::IoError(fmt::format("O_DIRECT write at offset {}: short write of {} bytes", off, res));
  return Status::Ok();
}

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
  Fd dfd(AnyDirect(cfg.profile) ? ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC) : -1);
  if (AnyDirect(cfg.profile) && dfd.get() < 0) {
    if (errno != EINVAL) return Err(Status::FromErrno(errno, fmt::format("open {} with O_DIRECT", path)));
    run.verdict = "unsupported";
    run.note = fmt::format("the filesystem under {} does not support O_DIRECT", cfg.target);
    return run;
  }
  // write() writers use the buffered fd, direct writers the O_DIRECT one
  // through their ring; mapped writers map the buffered fd.
  std::vector<std::unique_ptr<Ring>> rings;
  if (AnyDirect(cfg.profile)) {
    for (uint32_t w = 0; w < cfg.threads; w++) {
      rings.push_back(std::make_unique<Ring>());
      int rc = io_uring_queue_init(2, &rings.back()->ring, 0);
      if (rc < 0) return Err(Status::FromErrno(-rc, "io_uring_queue_init for the direct writers"));
      rings.back()->ok = true;
    }
  }
  Mapping map;
  map.len = cfg.file_size;
  const bool any_mapped = AnyMapped(cfg.profile);
  if (any_mapped) {
    map.addr = ::mmap(nullptr, map.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (map.addr == MAP_FAILED) return Err(Status::FromErrno(errno, fmt::format("mmap {}", path)));
  }

  const uint64_t blocks = cfg.file_size / kBlockSize;
  BlockTable table(blocks);
  std::atomic<uint64_t> direct_writes{0}, scribbles{0};
  auto step = [&](uint32_t w, std::mt19937_64& rng, LatencyHistogram& lat) -> Status {
    alignas(4096) std::byte buf[kBlockSize];
    const uint64_t b = rng() % blocks;
    const off_t off = static_cast<off_t>(b * kBlockSize);
    const WriterHow how = HowFor(cfg.profile, w, rng);
    if (how == WriterHow::kDirect) {
      SC_RETURN_IF_ERROR(table.StoreScribbled(b, w, [&](const BlockId& id, const BlockId& alt) -> Status {
        std::byte content[kBlockSize], scribble[kBlockSize];
        FillBlock(id, content);
        FillBlock(alt, scribble);
        std::memcpy(buf, content, kBlockSize);
        uint64_t n = 0;
        uint64_t t0 = NowNs();
        Status st = ScribbledPwrite(*rings[w], dfd.get(), buf, content, scribble, off, n);
        lat.Add(NowNs() - t0);
        direct_writes.fetch_add(1, std::memory_order_relaxed);
        scribbles.fetch_add(n, std::memory_order_relaxed);
        return st;
      }));
      return Status::Ok();
    }
    const bool mapped = how == WriterHow::kMapped;
    const int io = fd.get();
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
  run.direct_writes = direct_writes.load();
  run.scribble_overwrites = scribbles.load();

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
      bad = JudgeReadback(b, table.Last(b), buf, table.LastScribble(b));
    }
    if (!bad) continue;
    run.violations.readback_mismatch++;
    NoteBadBlock(run, b, "readback:" + *bad);
  }
  run.verdict = run.violations.total() > 0 ? "corrupt" : "clean";
  return run;
}

}  // namespace stablecache::wac
