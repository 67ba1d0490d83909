// LoopMount: an ext4 filesystem on a loop device over a temporary image,
// with the device's stable_writes set before mkfs and mount (it only takes
// effect then). For the kernel baseline of `stablecache bench`. Needs root
// and the losetup, mkfs.ext4 and mount tools. The image and the mount point
// go in $TMPDIR (default /var/tmp). Unmounts, detaches and removes both on
// destruction.
#pragma once

#include <memory>
#include <string>

#include "stablecache/status.h"

namespace stablecache::cli {

class LoopMount {
 public:
  [[nodiscard]] static Result<std::unique_ptr<LoopMount>> Create(bool stable_writes, uint64_t image_bytes);
  ~LoopMount();
  const std::string& dir() const { return dir_; }
  const std::string& device() const { return loop_; }

 private:
  LoopMount() = default;
  std::string image_, loop_, dir_;
  bool mounted_ = false;
};

}  // namespace stablecache::cli
