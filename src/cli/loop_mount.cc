#include "cli/loop_mount.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace stablecache::cli {

namespace {
// Runs a shell command; returns its stdout, or an error with its status.
Result<std::string> Run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return Err(Status::FromErrno(errno, "popen " + cmd));
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) return Err(Status::IoError(fmt::format("'{}' failed ({}): {}", cmd, rc, out)));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}
}  // namespace

Result<std::unique_ptr<LoopMount>> LoopMount::Create(bool stable_writes, uint64_t image_bytes, bool direct_io) {
  if (::geteuid() != 0) return Err(Status::NotSupported("the kernel baseline needs root (loop devices, mount)"));
  std::unique_ptr<LoopMount> m(new LoopMount);
  const char* tmpdir = std::getenv("TMPDIR");
  const auto base = std::filesystem::path(tmpdir && *tmpdir ? tmpdir : "/var/tmp") /
                    fmt::format("stablecache-bench-{}-{}", getpid(), stable_writes);
  m->image_ = base.string() + ".img";
  m->dir_ = base.string() + ".mnt";
  {
    std::ofstream f(m->image_, std::ios::binary | std::ios::trunc);
    if (!f) return Err(Status::IoError("cannot create " + m->image_));
  }
  std::filesystem::resize_file(m->image_, image_bytes);
  Result<std::string> loop = Err(Status::NotSupported("direct I/O not asked for"));
  if (direct_io) {
    loop = Run("losetup --direct-io=on -f --show " + m->image_);
    if (!loop) m->io_note_ = loop.error().message();
  }
  if (!loop) loop = Run("losetup -f --show " + m->image_);
  if (!loop) return Err(loop.error());
  m->loop_ = *loop;
  const std::string sys = fmt::format("/sys/block/{}", std::filesystem::path(m->loop_).filename().string());
  // losetup may set the device up buffered when LOOP_CONFIGURE with direct
  // I/O fails, with only a warning: the kernel's own word decides.
  {
    std::ifstream d(sys + "/loop/dio");
    std::string v;
    m->direct_io_ = (d >> v) && v == "1";
  }
  if (direct_io && !m->direct_io_ && m->io_note_.empty())
    m->io_note_ = fmt::format("the kernel set {} up without direct I/O on {} ({}/loop/dio is not 1)", m->loop_,
                              m->image_, sys);
  if (m->direct_io_) m->io_note_.clear();
  const std::string knob = sys + "/queue/stable_writes";
  {
    std::ofstream k(knob);
    if (!(k << (stable_writes ? "1" : "0")) || !k.flush())
      return Err(Status::NotSupported(fmt::format("cannot set {}", knob)));
  }
  if (auto r = Run("mkfs.ext4 -q -F " + m->loop_); !r) return Err(r.error());
  std::filesystem::create_directories(m->dir_);
  if (::mount(m->loop_.c_str(), m->dir_.c_str(), "ext4", 0, nullptr) != 0)
    return Err(Status::FromErrno(errno, fmt::format("mount {} on {}", m->loop_, m->dir_)));
  m->mounted_ = true;
  return m;
}

LoopMount::~LoopMount() {
  // A busy filesystem (a writer that did not stop) is detached lazily.
  if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  if (!loop_.empty()) (void)Run("losetup -d " + loop_);
  std::error_code ec;
  std::filesystem::remove(dir_, ec);
  std::filesystem::remove(image_, ec);
}

}  // namespace stablecache::cli
