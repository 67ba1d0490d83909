// LoopMount: an ext4 filesystem on a loop device over a temporary image,
// with the device's stable_writes set before mkfs and mount (it only takes
// effect then). For the kernel baseline of `stablecache bench`. Needs root
// and the losetup, mkfs.ext4 and mount tools. The image and the mount point
// go in $TMPDIR (default /var/tmp, the disk our file leg writes to).
// Unmounts, detaches and removes both on destruction.
//
// With direct_io the loop device is set up with `losetup --direct-io=on`, so
// the kernel writes to the backing file's medium with O_DIRECT, as our file
// leg does, instead of completing into the backing file's page cache. When
// the kernel or losetup refuses (a backing filesystem without O_DIRECT, a
// block size it cannot align to), the device runs buffered: direct_io()
// then reads false and io_note() says why. direct_io() is what the kernel
// reports in /sys/block/loopN/loop/dio, not what was asked for.
#pragma once

#include <memory>
#include <string>

#include "stablecache/status.h"

namespace stablecache::cli {

class LoopMount {
 public:
  [[nodiscard]] static Result<std::unique_ptr<LoopMount>> Create(bool stable_writes, uint64_t image_bytes,
                                                                 bool direct_io = true);
  ~LoopMount();
  const std::string& dir() const { return dir_; }
  const std::string& device() const { return loop_; }
  // The loop device reads and writes its backing file with O_DIRECT.
  bool direct_io() const { return direct_io_; }
  // Why a loop asked to use direct I/O runs buffered; empty otherwise.
  const std::string& io_note() const { return io_note_; }

 private:
  LoopMount() = default;
  std::string image_, loop_, dir_, io_note_;
  bool mounted_ = false;
  bool direct_io_ = false;
};

}  // namespace stablecache::cli
