// FaultDevice: a layer that fails chosen bios with a chosen errno.
//
// A rule matches bios of an op (or any op) that overlap [offset, offset+len),
// `count` times (-1: forever). Non-matching bios pass through untouched.
// Rules can change while I/O runs. Thread-safe.
#pragma once

#include <mutex>
#include <optional>
#include <vector>

#include "block/stacked_device.h"

namespace stablecache {

struct FaultRule {
  std::optional<BioOp> op;  // nullopt: any op
  uint64_t offset = 0;
  uint64_t len = UINT64_MAX;
  int error = 5;  // EIO
  int64_t count = -1;
};

class FaultDevice final : public StackedDevice {
 public:
  explicit FaultDevice(std::shared_ptr<BlockDevice> lower) : StackedDevice(std::move(lower), "fault", Stability::kUnstable) {}
  void Submit(BioPtr bio) override;
  void AddRule(const FaultRule& r);
  void ClearRules();
  uint64_t injected() const { return injected_.load(); }

 private:
  std::mutex mu_;
  std::vector<FaultRule> rules_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> injected_{0};
};

}  // namespace stablecache
