// VerifyDevice: the debug layer of seeds/000. It checksums every block of a
// write at submission and again at completion, and reports each block whose
// bytes changed while the I/O was in flight although the bio promised they
// would not (kDeclaredStable: a direct-I/O caller that scribbled on a buffer
// it declared stable; kStable: the page cache under kNone), with its byte
// offset (LayerStats::modified_in_flight, modified_offsets). Changes to an
// unstable bio are allowed and only counted (unstable_modified). It needs
// nothing itself and bounces nothing: it watches.
// Thread-safe.
#pragma once

#include <mutex>
#include <vector>

#include "block/stacked_device.h"

namespace stablecache {

class VerifyDevice final : public StackedDevice {
 public:
  explicit VerifyDevice(std::shared_ptr<BlockDevice> lower)
      : StackedDevice(std::move(lower), "verify", Stability::kUnstable) {}
  void Submit(BioPtr bio) override;
  void CollectStats(std::vector<LayerStats>& out) const override;
  // Its completions run inline on the lower device's: pollable if it is.
  bool PollUntil(const std::function<bool()>& done) override { return lower_->PollUntil(done); }
  bool Pollable() const override { return lower_->Pollable(); }
  // Byte offsets of the blocks seen modified in flight (first 1024).
  std::vector<uint64_t> ModifiedOffsets() const;

 private:
  mutable std::mutex mu_;
  std::vector<uint64_t> modified_;  // GUARDED_BY(mu_)
};

}  // namespace stablecache
