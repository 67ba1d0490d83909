#include "devices/file_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace stablecache {

namespace {
constexpr uint64_t kStopToken = 1;
constexpr uint64_t kDirectAlign = 4096;

bool Aligned(uint64_t v) { return v % kDirectAlign == 0; }

// The kernel hands an SQE's user data from the submitting thread to the
// reaper through the io_uring rings, an edge ThreadSanitizer cannot see.
// Tell it, so its reports stay about real races.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_release(void* addr);
extern "C" void __tsan_acquire(void* addr);
void HandToKernel(void* p) { __tsan_release(p); }
void TakeFromKernel(void* p) { __tsan_acquire(p); }
#else
void HandToKernel(void*) {}
void TakeFromKernel(void*) {}
#endif
}  // namespace

// One SQE's worth of a bio.
struct FileDevice::Op {
  Request* req;
  uint64_t offset;
  std::vector<iovec> iov;
  bool fixed;
};

struct FileDevice::Request {
  BioPtr bio;
  bool polled = false;
  int fd;
  std::vector<Op> ops;
  std::atomic<size_t> remaining{0};
  std::mutex mu;
  Status status;  // GUARDED_BY(mu)
};

Result<std::shared_ptr<FileDevice>> FileDevice::Open(const FileDeviceOptions& opts) {
  if (opts.path.empty()) return Err(Status::InvalidArgument("file device: empty path"));
  std::shared_ptr<FileDevice> dev(new FileDevice());
  dev->path_ = opts.path;
  int flags = O_RDWR | O_CLOEXEC | (opts.create ? O_CREAT : 0);
  dev->buffered_fd_ = open(opts.path.c_str(), flags, 0644);
  if (dev->buffered_fd_ < 0) return Err(Status::FromErrno(errno, fmt::format("open '{}'", opts.path)));
  struct stat st {};
  if (fstat(dev->buffered_fd_, &st) != 0) return Err(Status::FromErrno(errno, fmt::format("stat '{}'", opts.path)));
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(dev->buffered_fd_, BLKGETSIZE64, &size) != 0)
      return Err(Status::FromErrno(errno, fmt::format("BLKGETSIZE64 '{}'", opts.path)));
  } else if (opts.size_bytes > size) {
    if (ftruncate(dev->buffered_fd_, static_cast<off_t>(opts.size_bytes)) != 0)
      return Err(Status::FromErrno(errno, fmt::format("grow '{}' to {} bytes", opts.path, opts.size_bytes)));
    size = opts.size_bytes;
  }
  if (opts.size_bytes != 0 && opts.size_bytes < size) size = opts.size_bytes;
  size &= ~uint64_t{4095};
  if (size == 0)
    return Err(Status::NoSpace(fmt::format("file device '{}' is smaller than one 4096-byte block; give a size",
                                           opts.path)));
  if (opts.direct != DirectMode::kOff) {
    dev->direct_fd_ = open(opts.path.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT);
    if (dev->direct_fd_ < 0 && opts.direct == DirectMode::kOn)
      return Err(Status::FromErrno(errno, fmt::format("open '{}' with O_DIRECT", opts.path)));
  }
  int rc = io_uring_queue_init(opts.queue_depth, &dev->ring_, 0);
  if (rc < 0) return Err(Status::FromErrno(-rc, "io_uring_queue_init"));
  dev->info_.name = fmt::format("file:{}", opts.path);
  dev->info_.size_bytes = size;
  dev->info_.logical_block_size = 512;
  dev->can_poll_ = (dev->ring_.features & IORING_FEAT_EXT_ARG) != 0;
  dev->reaper_.Start([d = dev.get()] { d->Reap(); });
  return dev;
}

FileDevice::~FileDevice() {
  if (ring_.ring_fd > 0) {
    if (reaper_.OnThisThread()) {
      // A completion this reaper ran dropped the last reference: nobody
      // else reaps, so finish what is still in flight here.
      while (in_flight_.load() != 0 && ReapOne()) {
      }
    } else {
      // Dropped with I/O in flight: let it finish first.
      for (uint64_t n; (n = in_flight_.load()) != 0;) in_flight_.wait(n);
      {
        std::lock_guard lk(cq_mu_);
        stopping_ = true;
        cq_cv_.notify_all();
      }
      std::lock_guard lk(sq_mu_);
      io_uring_sqe* sqe;
      while ((sqe = io_uring_get_sqe(&ring_)) == nullptr) SubmitQueuedLocked();
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kStopToken);
      SubmitQueuedLocked();
    }
    reaper_.Stop();
    io_uring_queue_exit(&ring_);
  }
  if (direct_fd_ >= 0) close(direct_fd_);
  if (buffered_fd_ >= 0) close(buffered_fd_);
}

void FileDevice::RegisterMemory(std::span<std::byte> region) {
  std::lock_guard lk(sq_mu_);
  if (registered_.load()) {
    if (region.data() == reg_base_ && region.size() == reg_len_) reg_users_++;
    return;
  }
  if (region.size() > (1ull << 30)) return;
  iovec iov{region.data(), region.size()};
  if (io_uring_register_buffers(&ring_, &iov, 1) == 0) {
    reg_base_ = region.data();
    reg_len_ = region.size();
    reg_users_ = 1;
    registered_.store(true);
  }
}

void FileDevice::UnregisterMemory(std::span<std::byte> region) {
  std::lock_guard lk(sq_mu_);
  if (!registered_.load() || region.data() != reg_base_ || region.size() != reg_len_) return;
  if (--reg_users_ != 0) return;
  // Submit takes sq_mu_ to choose the fixed path, so none starts after this;
  // the kernel keeps the buffers of requests already queued until they end.
  io_uring_unregister_buffers(&ring_);
  registered_.store(false);
  reg_base_ = nullptr;
  reg_len_ = 0;
}

void FileDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  auto* req = new Request();
  in_flight_.fetch_add(1);
  Bio& b = *bio;
  req->polled = can_poll_ && b.polled;
  req->bio = std::move(bio);
  if (!req->polled) {
    unpolled_.fetch_add(1);
    if (reaper_parked_.load()) {
      std::lock_guard lk(cq_mu_);  // the reaper checks under it: no lost wake-up
      cq_cv_.notify_all();
    }
  }
  std::lock_guard lk(sq_mu_);
  if (b.op == BioOp::kFlush) {
    req->fd = buffered_fd_;
    req->ops.push_back(Op{req, 0, {}, false});
  } else {
    bool direct_ok = direct_fd_ >= 0 && Aligned(b.offset);
    bool all_registered = registered_.load();
    for (const auto& s : b.segments) {
      direct_ok &= Aligned(reinterpret_cast<uintptr_t>(s.data)) && Aligned(s.len);
      all_registered &= s.data >= reg_base_ && s.data + s.len <= reg_base_ + reg_len_;
    }
    req->fd = direct_ok ? direct_fd_ : buffered_fd_;
    if (all_registered) {
      uint64_t off = b.offset;
      for (const auto& s : b.segments) {
        req->ops.push_back(Op{req, off, {iovec{s.data, s.len}}, true});
        off += s.len;
      }
    } else {
      Op op{req, b.offset, {}, false};
      for (const auto& s : b.segments) op.iov.push_back(iovec{s.data, s.len});
      req->ops.push_back(std::move(op));
    }
  }
  EnqueueLocked(req);
}

void FileDevice::EnqueueLocked(Request* req) {
  req->remaining.store(req->ops.size());
  const BioOp kind = req->bio->op;
  for (Op& op : req->ops) {
    io_uring_sqe* sqe;
    while ((sqe = io_uring_get_sqe(&ring_)) == nullptr) SubmitQueuedLocked();  // back-pressure
    if (kind == BioOp::kFlush) {
      io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
    } else if (op.fixed) {
      auto* base = op.iov[0].iov_base;
      auto len = static_cast<unsigned>(op.iov[0].iov_len);
      if (kind == BioOp::kWrite)
        io_uring_prep_write_fixed(sqe, req->fd, base, len, op.offset, 0);
      else
        io_uring_prep_read_fixed(sqe, req->fd, base, len, op.offset, 0);
    } else if (kind == BioOp::kWrite) {
      io_uring_prep_writev(sqe, req->fd, op.iov.data(), static_cast<unsigned>(op.iov.size()), op.offset);
    } else {
      io_uring_prep_readv(sqe, req->fd, op.iov.data(), static_cast<unsigned>(op.iov.size()), op.offset);
    }
    io_uring_sqe_set_data(sqe, &op);
    HandToKernel(&op);
  }
  SubmitQueuedLocked();
}

// Hands every queued SQE to the kernel. EINTR, EAGAIN (no memory for the
// request now) and EBUSY (the completion queue is full until the reaper
// drains it) pass: retry. Anything else means the ring itself is unusable,
// which no caller can recover from; say so rather than hang silently.
void FileDevice::SubmitQueuedLocked() {
  for (;;) {
    int rc = io_uring_submit(&ring_);
    if (rc >= 0 && io_uring_sq_ready(&ring_) == 0) return;
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      fmt::print(stderr, "stablecache: io_uring_submit on {} failed: {}\n", path_, std::strerror(-rc));
      std::abort();
    }
    std::this_thread::yield();
  }
}

void FileDevice::Reap() {
  while (ReapOne()) {
    if (CompletionThread::OwnerGone()) return;  // that completion destroyed us
  }
}

bool FileDevice::ReapOne() {
  for (;;) {
    {
      // Stand aside while a caller polls, and while only polled requests
      // are in flight (their submitters reap them); look every millisecond
      // in case one does not.
      std::unique_lock lk(cq_mu_);
      auto mine = [&] { return stopping_ || (pollers_ == 0 && unpolled_.load() > 0); };
      while (!mine()) {
        reaper_parked_.store(true);
        const bool woken = cq_cv_.wait_for(lk, std::chrono::milliseconds(1), mine);
        reaper_parked_.store(false);
        if (!woken && pollers_ == 0 && in_flight_.load() > 0) break;  // nobody polled: reap it
      }
    }
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
    if (rc < 0) {
      fmt::print(stderr, "stablecache: io_uring_wait_cqe on {} failed: {}\n", path_, std::strerror(-rc));
      return false;
    }
    uint64_t data;
    int res;
    {
      std::lock_guard lk(cq_mu_);
      if (pollers_ > 0) continue;  // a poller came meanwhile: it reaps this one
      if (!TakeCqeLocked(&data, &res)) continue;
      if (data == kStopToken) return false;
      reaper_busy_ = true;
    }
    TakeFromKernel(reinterpret_cast<Op*>(data));
    FinishOp(reinterpret_cast<Op*>(data), res);
    if (CompletionThread::OwnerGone()) return true;  // that completion destroyed the device
    {
      std::lock_guard lk(cq_mu_);
      reaper_busy_ = false;
    }
    cq_cv_.notify_all();
    return true;
  }
}

bool FileDevice::TakeCqeLocked(uint64_t* data, int* res) {
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(&ring_, &cqe) != 0) return false;
  *data = io_uring_cqe_get_data64(cqe);
  *res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return true;
}

bool FileDevice::PollUntil(const std::function<bool()>& done) {
  if (!can_poll_) return false;
  // A completion run here may drop the last other reference (another
  // thread's Close returned once the op ended in it, and dropped the stack).
  // The device must not be destroyed under its poller: its destructor would
  // wait for a reaper that leaves the stop token to the poller, and this
  // frame would touch freed memory. It goes when this returns.
  const std::shared_ptr<BlockDevice> self = shared_from_this();
  {
    std::unique_lock lk(cq_mu_);
    pollers_++;
    // The completion the reaper is running finishes first, so done() sees
    // it; unless this is that completion, polling from the reaper thread.
    if (!reaper_.OnThisThread()) cq_cv_.wait(lk, [&] { return !reaper_busy_; });
  }
  bool ok = true;
  std::vector<std::pair<Op*, int>> batch;
  while (!done()) {
    // Waits for any completion, consuming none; a completion another
    // poller took is noticed within the millisecond.
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{.tv_sec = 0, .tv_nsec = 1'000'000};
    int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
      ok = false;  // the reaper takes over; the caller waits as usual
      break;
    }
    {
      std::lock_guard lk(cq_mu_);
      uint64_t data;
      int res;
      while (TakeCqeLocked(&data, &res)) {
        if (data == kStopToken) {
          // Sent only by a destructor, which a poller's reference rules out.
          fmt::print(stderr, "stablecache: {} polled while being destroyed\n", path_);
          std::abort();
        }
        batch.emplace_back(reinterpret_cast<Op*>(data), res);
      }
    }
    for (auto [op, res] : batch) {
      TakeFromKernel(op);
      FinishOp(op, res);
    }
    batch.clear();
  }
  {
    std::lock_guard lk(cq_mu_);
    pollers_--;
    if (pollers_ == 0 && unpolled_.load() > 0) cq_cv_.notify_all();  // the reaper's turn
  }
  return ok;
}

void FileDevice::FinishOp(Op* op, int res) {
  Request* req = op->req;
  const BioOp kind = req->bio->op;
  Status st;
  if (res == -EAGAIN && kind != BioOp::kFlush) {
    res = 0;  // the kernel would not wait for it (no memory now): the loop below does it all
  } else if (res == -EAGAIN) {
    res = fdatasync(req->fd) == 0 ? 0 : -errno;
  } else if (res == -ECANCELED) {
    // io_uring cancels work it punted to its io-wq workers when the thread
    // that submitted it exits (a writer thread that ran a sync_range, then
    // ended). The bio is still ours to finish: do it here, synchronously.
    if (kind == BioOp::kFlush) res = fdatasync(req->fd) == 0 ? 0 : -errno;
    else res = 0;  // nothing transferred: the loop below does it all
  }
  if (res < 0) {
    st = Status::FromErrno(-res, fmt::format("{} {} at offset {}", kind == BioOp::kWrite ? "write" : kind == BioOp::kRead ? "read" : "fdatasync", path_, op->offset));
  } else if (kind != BioOp::kFlush) {
    // Finish a short transfer synchronously (rare: signals, EOF of a file,
    // a cancelled request).
    uint64_t want = 0;
    for (auto& v : op->iov) want += v.iov_len;
    uint64_t done = static_cast<uint64_t>(res);
    while (done < want && st.ok()) {
      std::vector<iovec> rest;
      uint64_t skip = done;
      for (auto& v : op->iov) {
        if (skip >= v.iov_len) {
          skip -= v.iov_len;
          continue;
        }
        rest.push_back(iovec{static_cast<char*>(v.iov_base) + skip, v.iov_len - skip});
        skip = 0;
      }
      ssize_t n = kind == BioOp::kWrite
                      ? pwritev(buffered_fd_, rest.data(), static_cast<int>(rest.size()), static_cast<off_t>(op->offset + done))
                      : preadv(buffered_fd_, rest.data(), static_cast<int>(rest.size()), static_cast<off_t>(op->offset + done));
      if (n < 0) {
        st = Status::FromErrno(errno, fmt::format("finishing short I/O on {} at offset {}", path_, op->offset + done));
      } else if (n == 0) {
        if (kind == BioOp::kRead) {  // past the end of a host file: zeros
          for (auto& v : rest) std::memset(v.iov_base, 0, v.iov_len);
          done = want;
        } else {
          st = Status::NoSpace(fmt::format("write to {} at offset {} made no progress", path_, op->offset + done));
        }
      } else {
        done += static_cast<uint64_t>(n);
      }
    }
  }
  if (!st.ok()) {
    counters_.errors.fetch_add(1);
    std::lock_guard lk(req->mu);
    req->status.Update(st);
  }
  if (req->remaining.fetch_sub(1) != 1) return;
  std::unique_ptr<Request> owned(req);
  Status final_status;
  {
    std::lock_guard lk(req->mu);
    final_status = req->status;
  }
  BioPtr bio = std::move(req->bio);
  const bool polled = req->polled;
  owned.reset();
  if (!polled) unpolled_.fetch_sub(1);
  // Counted out before the completion, which may destroy this device.
  if (in_flight_.fetch_sub(1) == 1) in_flight_.notify_all();
  Bio::Complete(std::move(bio), final_status);
}

}  // namespace stablecache
