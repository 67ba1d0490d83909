// FileDevice: a leaf over a host file or block device, through io_uring.
//
// Bios are submitted with liburing; one bio becomes one SQE per segment
// (fixed-buffer reads/writes when the memory lies in a region registered
// with RegisterMemory) or a single readv/writev, all submitted in one
// io_uring_enter. Aligned bios use an O_DIRECT descriptor when the file
// system allows it; others use a buffered one. A reaper thread completes
// bios. Short transfers, and requests io_uring cancelled because the
// submitting thread exited, are finished synchronously; errors become Status
// values naming the file, op and offset. io_uring's transient refusals
// (EINTR, EAGAIN, EBUSY on submit; EAGAIN as a result) are retried, the
// latter synchronously. Destroying the device waits for its requests in
// flight; it may happen on the reaper thread itself (a completion dropped
// the last reference), which then finishes the rest inline. Thread-safe.
#pragma once

#include <liburing.h>

#include <atomic>
#include <memory>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "block/layer_counters.h"
#include "util/completion_thread.h"
#include "stablecache/block_device.h"

namespace stablecache {

enum class DirectMode { kAuto, kOn, kOff };

struct FileDeviceOptions {
  std::string path;
  uint64_t size_bytes = 0;  // 0: use the existing size; else grow/create to it
  bool create = false;
  DirectMode direct = DirectMode::kAuto;
  unsigned queue_depth = 256;
};

class FileDevice final : public BlockDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<FileDevice>> Open(const FileDeviceOptions& opts);
  ~FileDevice() override;

  const DeviceInfo& Info() const override { return info_; }
  void Submit(BioPtr bio) override;
  // The first region offered is registered as io_uring fixed buffers
  // (counted: each Register needs its Unregister); others use plain I/O.
  void RegisterMemory(std::span<std::byte> region) override;
  void UnregisterMemory(std::span<std::byte> region) override;
  void CollectStats(std::vector<LayerStats>& out) const override {
    out.push_back(counters_.Snapshot(info_.name));
  }
  // Reaps the ring on the calling thread (BlockDevice::PollUntil) when the
  // kernel can wait for completions with a timeout and no SQE
  // (IORING_FEAT_EXT_ARG); the reaper thread stands aside meanwhile.
  bool PollUntil(const std::function<bool()>& done) override;
  bool Pollable() const override { return can_poll_; }
  bool direct() const { return direct_fd_ >= 0; }
  bool fixed_buffers() const { return registered_.load(); }

 private:
  struct Request;
  struct Op;
  FileDevice() = default;
  void Reap();
  // Waits for one completion and finishes its op. False when the ring
  // failed for good, or on the stop token.
  bool ReapOne();
  void FinishOp(Op* op, int res);
  // Consumes the completion at the head of the ring, if any: its user data
  // and result. REQUIRES: cq_mu_ held (the reaper and pollers both take).
  bool TakeCqeLocked(uint64_t* data, int* res);
  void EnqueueLocked(Request* req);
  void SubmitQueuedLocked();

  DeviceInfo info_;
  std::string path_;
  int buffered_fd_ = -1;
  int direct_fd_ = -1;
  io_uring ring_{};
  std::mutex sq_mu_;
  std::atomic<bool> registered_{false};
  std::byte* reg_base_ = nullptr;  // GUARDED_BY(sq_mu_)
  size_t reg_len_ = 0;             // GUARDED_BY(sq_mu_)
  unsigned reg_users_ = 0;         // GUARDED_BY(sq_mu_)
  CompletionThread reaper_;
  // Who consumes completions: the reaper, unless a caller polls. A poller
  // first waits for the completion the reaper is finishing, so its done()
  // sees it; the reaper waits while any poller is in.
  std::mutex cq_mu_;
  std::condition_variable cq_cv_;
  unsigned pollers_ = 0;      // GUARDED_BY(cq_mu_)
  bool reaper_busy_ = false;  // GUARDED_BY(cq_mu_): finishing a completion it took
  bool stopping_ = false;     // GUARDED_BY(cq_mu_): the destructor's stop token is coming
  bool can_poll_ = false;
  // Requests whose submitter does not poll (Bio::polled false): while there
  // are none, the reaper stands aside (it looks every millisecond anyway),
  // so a polled I/O wakes one thread, its submitter, not two.
  std::atomic<uint64_t> unpolled_{0};
  std::atomic<bool> reaper_parked_{false};
  std::atomic<uint64_t> in_flight_{0};  // requests submitted and not yet completed
  mutable LayerCounters counters_;
};

}  // namespace stablecache
