// StackedDevice: base for a layer that sits on one device below it. It
// forwards capability questions and memory registration down, and reports
// its counters before those of the layers below.
#pragma once

#include <memory>

#include "block/layer_counters.h"
#include "stablecache/block_device.h"

namespace stablecache {

class StackedDevice : public BlockDevice {
 public:
  StackedDevice(std::shared_ptr<BlockDevice> lower, std::string name, Stability required)
      : lower_(std::move(lower)) {
    info_ = lower_->Info();
    info_.name = std::move(name);
    info_.required_stability = required;
  }
  const DeviceInfo& Info() const override { return info_; }
  Stability StackRequiredStability() const override {
    return std::max(info_.required_stability, lower_->StackRequiredStability());
  }
  void RegisterMemory(std::span<std::byte> region) override { lower_->RegisterMemory(region); }
  void UnregisterMemory(std::span<std::byte> region) override { lower_->UnregisterMemory(region); }
  void CollectStats(std::vector<LayerStats>& out) const override {
    out.push_back(counters_.Snapshot(info_.name));
    lower_->CollectStats(out);
  }
  void DescribeMedium(MediumReport& out) const override {
    out.push_back({info_.name, {{"metadata", "none"}}});
    lower_->DescribeMedium(out);
  }
  Status ScrubRange(uint64_t offset, uint64_t len, ScrubReport& report) override {
    return lower_->ScrubRange(offset, len, report);
  }
  BlockDevice& lower() const { return *lower_; }

 protected:
  std::shared_ptr<BlockDevice> lower_;
  DeviceInfo info_;
  mutable LayerCounters counters_;
};

}  // namespace stablecache
