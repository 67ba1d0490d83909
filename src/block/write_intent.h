// WriteIntent: the write-intent bitmap of a mirror or parity set (md's
// bitmap, simplified): one bit per region of leg data, the same bitmap on
// every leg, so a crash leaves a record of the regions whose legs may
// disagree and assembly resyncs only those (doc/mirror_parity_format.md).
//
// Contract:
//  - BeginWrite(r0, r1, go) calls go(Ok) once the bits of regions [r0, r1)
//    are durable on every leg (written and flushed), or go(error) when the
//    bitmap could not be written (the caller fails its write). Either way
//    the caller calls EndWrite(r0, r1) when its write has finished. Writers
//    arriving while a bitmap write is in flight are group-committed by the
//    next one; a region already set on the medium costs no I/O.
//  - Bits are cleared lazily: a region whose writes have all ended is
//    cleared once a flush that started after its last write ended has
//    completed (FlushStarted / FlushDone around every flush of the legs).
//    Clearing late is always safe; clearing early never happens.
//  - Pin / Unpin hold a region set like an unending write (a stripe whose
//    parity may be stale, a mirror block a leg missed), so the next
//    assembly resyncs it even if no one rewrites it before a crash.
//  - LegHealth: a leg for which `missing` says true is neither written nor
//    flushed (its bitmap is stale with the rest of it). A leg that fails a
//    bitmap write or flush fails the commit (its writers see the error) and
//    is reported to `failed` (which makes it missing), so a retry goes on
//    with the other legs; when every leg fails at once none is reported.
//  - All I/O is asynchronous (bios on the legs); go() may run inline in
//    BeginWrite or on a leg's completion thread. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "stablecache/block_device.h"

namespace stablecache {

struct LegHealth {
  std::function<bool(size_t)> missing;  // skip this leg
  std::function<void(size_t)> failed;   // this leg failed a bitmap write or flush
};

struct BitmapGeometry {
  uint64_t bitmap_offset = 0;  // bytes on each leg
  uint32_t bitmap_blocks = 0;  // 4 KiB blocks
  uint64_t region_bytes = 0;   // leg data bytes per bit
  uint64_t regions = 0;
};

class WriteIntent {
 public:
  using Go = std::function<void(Status)>;

  // `owner` (the mirror or parity device) is kept alive while a bitmap
  // write runs, so a lazy clear may outlive the flush that started it.
  WriteIntent(const BlockDevice* owner, std::vector<std::shared_ptr<BlockDevice>> legs, BitmapGeometry g,
              LegHealth health = {});

  // Regions [first, end) covering leg data bytes [offset, offset + len).
  std::pair<uint64_t, uint64_t> Regions(uint64_t offset, uint64_t len) const;

  void BeginWrite(uint64_t r0, uint64_t r1, Go go);
  void EndWrite(uint64_t r0, uint64_t r1);
  void Pin(uint64_t r0, uint64_t r1, Go go) { BeginWrite(r0, r1, std::move(go)); }
  void Unpin(uint64_t r0, uint64_t r1) { EndWrite(r0, r1); }

  // Returns the flush's epoch; pass it to FlushDone when the flush of every
  // leg completed successfully. FlushDone clears the regions the flush
  // made clean and calls `done` once that bitmap write has ended (at once
  // if nothing clears), with its status: a leg that cannot take the clear
  // fails the flush, so no failed write goes unreported.
  uint64_t FlushStarted();
  void FlushDone(uint64_t epoch, Go done);

  // Regions set in memory (for tests and Describe).
  size_t DirtyRegions() const;
  // Bitmap writes issued (each a group commit), for tests.
  uint64_t commits() const;

  // ---- assembly (synchronous, before any I/O is served) ----
  // The union of the bitmaps of `legs`, one bool per region.
  [[nodiscard]] static Result<std::vector<bool>> ReadDirty(const std::vector<BlockDevice*>& legs,
                                                           const BitmapGeometry& g);
  // Writes an all-clear bitmap to `legs` and flushes them.
  // Writes a bitmap with only the regions `keep` set (regions assembly
  // could not resync stay marked across a crash), and flushes.
  [[nodiscard]] static Status WriteClean(const std::vector<BlockDevice*>& legs, const BitmapGeometry& g,
                                         const std::vector<uint64_t>& keep = {});

 private:
  struct Waiter {
    uint64_t r0, r1;
    Go go;
  };
  bool ReadyLocked(uint64_t r0, uint64_t r1) const;
  void StartCommitLocked(std::unique_lock<std::mutex>& lk);  // unlocks
  void CommitDone(Status st);

  const BlockDevice* const owner_;
  const std::vector<std::shared_ptr<BlockDevice>> legs_;
  const BitmapGeometry g_;
  bool Skip(size_t leg) const { return health_.missing && health_.missing(leg); }
  // A bitmap write or flush on every leg not missing; `then` gets the status.
  void OnEveryLeg(BioOp op, const std::shared_ptr<std::byte>& buf, const std::vector<uint64_t>& blocks,
                  std::function<void(Status)> then);
  const LegHealth health_;
  mutable std::mutex mu_;
  std::vector<uint32_t> active_;     // GUARDED_BY(mu_) writes (and pins) running per region
  std::vector<uint64_t> last_end_;   // GUARDED_BY(mu_) flush epoch when the last write ended
  std::vector<uint8_t> want_;        // GUARDED_BY(mu_) the bitmap we want on the medium
  std::vector<uint8_t> disk_;        // GUARDED_BY(mu_) what is durably there
  std::vector<uint8_t> inflight_;    // GUARDED_BY(mu_) what the commit in flight writes
  std::set<uint64_t> set_regions_;   // GUARDED_BY(mu_) regions with want_ set
  bool committing_ = false;          // GUARDED_BY(mu_)
  std::vector<Waiter> waiters_;      // GUARDED_BY(mu_)
  std::vector<std::pair<uint64_t, Go>> flush_waiters_;  // GUARDED_BY(mu_) (commit number, done)
  uint64_t flush_epoch_ = 0;         // GUARDED_BY(mu_)
  uint64_t commits_ = 0;             // GUARDED_BY(mu_)
};

}  // namespace stablecache
