// MemoryDevice: a RAM disk leaf.
//
// By default a bio is copied and completed inside Submit. In late-copy mode
// a write is held and its bytes are copied from the bio's memory only at
// completion, after `delay` (like slow DMA) or, with `manual_release`, when a
// test calls ReleaseWrites(). That widens the window in which a writer that
// scribbles on a page under writeback changes what reaches the medium, so
// race tests are deterministic instead of hopeful. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "block/layer_counters.h"
#include "util/completion_thread.h"
#include "stablecache/block_device.h"

namespace stablecache {

struct MemoryDeviceOptions {
  uint64_t size_bytes = 64ull << 20;
  bool late_copy = false;
  std::chrono::microseconds delay{0};
  bool manual_release = false;  // late copy waits for ReleaseWrites()
  // Only writes at or past this offset are copied late; earlier ones (a
  // layer's own metadata, e.g. mirror/parity member records and bitmap)
  // are copied at once.
  uint64_t late_copy_from = 0;
};

class MemoryDevice final : public BlockDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<MemoryDevice>> Create(const MemoryDeviceOptions& opts);
  ~MemoryDevice() override;

  const DeviceInfo& Info() const override { return info_; }
  void Submit(BioPtr bio) override;
  void CollectStats(std::vector<LayerStats>& out) const override {
    out.push_back(counters_.Snapshot(info_.name));
  }

  // Test hooks for late-copy mode.
  size_t PendingWrites() const { return pending_count_.load(); }
  void WaitForPendingWrites(size_t n);  // blocks until at least n are held
  void ReleaseWrites(size_t n = SIZE_MAX);
  void WaitForPendingAtMost(size_t n);  // blocks until released writes have been copied
  // Direct access to the medium, bypassing every layer; each call is atomic
  // with respect to the device's own I/O (rot injected while I/O runs).
  // Like a disk's sector, a read racing a write of the same bytes returns
  // the old or the new bytes, never a mix: writes hold the medium alone.
  void ReadRaw(uint64_t offset, void* buf, size_t len) const;
  void WriteRaw(uint64_t offset, const void* buf, size_t len);

 private:
  MemoryDevice(const MemoryDeviceOptions& opts, std::byte* mem);
  void Run();
  void CopyWrite(const Bio& bio);

  MemoryDeviceOptions opts_;
  DeviceInfo info_;
  std::byte* mem_;
  mutable std::shared_mutex medium_mu_;  // reads share it; writes and ReadRaw/WriteRaw take it alone
  mutable LayerCounters counters_;

  struct Held {
    BioPtr bio;
    std::chrono::steady_clock::time_point due;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Held> held_;  // GUARDED_BY(mu_)
  size_t release_budget_ = 0;  // GUARDED_BY(mu_)
  bool stop_ = false;          // GUARDED_BY(mu_)
  std::atomic<uint32_t> pending_count_{0};
  CompletionThread worker_;
};

}  // namespace stablecache
