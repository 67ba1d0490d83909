#include "devices/memory_device.h"

#include <sys/mman.h>

#include <cstring>

#include <fmt/format.h>

namespace stablecache {

Result<std::shared_ptr<MemoryDevice>> MemoryDevice::Create(const MemoryDeviceOptions& opts) {
  if (opts.size_bytes < 4096 || opts.size_bytes % 4096 != 0)
    return Err(Status::InvalidArgument(
        fmt::format("memory device size {} must be a positive multiple of 4096", opts.size_bytes)));
  void* p = mmap(nullptr, opts.size_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Err(Status::FromErrno(errno, fmt::format("mmap {} bytes for a memory device", opts.size_bytes)));
  return std::shared_ptr<MemoryDevice>(new MemoryDevice(opts, static_cast<std::byte*>(p)));
}

MemoryDevice::MemoryDevice(const MemoryDeviceOptions& opts, std::byte* mem) : opts_(opts), mem_(mem) {
  info_.name = fmt::format("memory:{}", opts.size_bytes);
  info_.size_bytes = opts.size_bytes;
  info_.logical_block_size = 512;
  if (opts_.late_copy) worker_.Start([this] { Run(); });
}

MemoryDevice::~MemoryDevice() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    release_budget_ = SIZE_MAX;
  }
  cv_.notify_all();
  if (worker_.OnThisThread()) {
    // A completion the worker ran dropped us: it will not loop again, so
    // the writes still held land now.
    std::unique_lock lk(mu_);
    while (!held_.empty()) {
      Held h = std::move(held_.front());
      held_.pop_front();
      lk.unlock();
      CopyWrite(*h.bio);
      Bio::Complete(std::move(h.bio), Status::Ok());
      lk.lock();
    }
  }
  worker_.Stop();
  munmap(mem_, opts_.size_bytes);
}

void MemoryDevice::CopyWrite(const Bio& bio) {
  std::unique_lock medium(medium_mu_);
  std::byte* dst = mem_ + bio.offset;
  for (const auto& s : bio.segments) {
    std::memcpy(dst, s.data, s.len);
    dst += s.len;
  }
}

void MemoryDevice::Submit(BioPtr bio) {
  if (!AdmitBio(*this, bio, counters_)) return;
  switch (bio->op) {
    case BioOp::kFlush:
      break;
    case BioOp::kRead: {
      std::shared_lock medium(medium_mu_);
      const std::byte* src = mem_ + bio->offset;
      for (const auto& s : bio->segments) {
        std::memcpy(s.data, src, s.len);
        src += s.len;
      }
      break;
    }
    case BioOp::kWrite:
      if (opts_.late_copy && bio->offset >= opts_.late_copy_from) {
        // All under the lock: once the worker completes the bio its owner
        // may destroy the device.
        std::lock_guard lk(mu_);
        held_.push_back(Held{std::move(bio), std::chrono::steady_clock::now() + opts_.delay});
        pending_count_.fetch_add(1);
        pending_count_.notify_all();
        cv_.notify_all();
        return;
      }
      CopyWrite(*bio);
      break;
  }
  Bio::Complete(std::move(bio), Status::Ok());
}

void MemoryDevice::Run() {
  std::unique_lock lk(mu_);
  for (;;) {
    if (held_.empty()) {
      if (stop_) return;
      cv_.wait(lk);
      continue;
    }
    if (opts_.manual_release && release_budget_ == 0) {
      cv_.wait(lk);
      continue;
    }
    auto due = held_.front().due;
    if (!opts_.manual_release && std::chrono::steady_clock::now() < due && !stop_) {
      cv_.wait_until(lk, due);
      continue;
    }
    Held h = std::move(held_.front());
    held_.pop_front();
    if (opts_.manual_release && release_budget_ != SIZE_MAX) release_budget_--;
    lk.unlock();
    CopyWrite(*h.bio);  // the late DMA: whatever the memory holds now
    pending_count_.fetch_sub(1);
    pending_count_.notify_all();
    Bio::Complete(std::move(h.bio), Status::Ok());
    if (CompletionThread::OwnerGone()) return;  // that completion destroyed us
    lk.lock();
  }
}

void MemoryDevice::WaitForPendingWrites(size_t n) {
  for (;;) {
    uint32_t c = pending_count_.load();
    if (c >= n) return;
    pending_count_.wait(c);
  }
}

void MemoryDevice::WaitForPendingAtMost(size_t n) {
  for (;;) {
    uint32_t c = pending_count_.load();
    if (c <= n) return;
    pending_count_.wait(c);
  }
}

void MemoryDevice::ReleaseWrites(size_t n) {
  {
    std::lock_guard lk(mu_);
    release_budget_ = (n == SIZE_MAX || release_budget_ > SIZE_MAX - n) ? SIZE_MAX : release_budget_ + n;
  }
  cv_.notify_all();
}

void MemoryDevice::ReadRaw(uint64_t offset, void* buf, size_t len) const {
  std::unique_lock medium(medium_mu_);
  std::memcpy(buf, mem_ + offset, len);
}
void MemoryDevice::WriteRaw(uint64_t offset, const void* buf, size_t len) {
  std::unique_lock medium(medium_mu_);
  std::memcpy(mem_ + offset, buf, len);
}

}  // namespace stablecache
