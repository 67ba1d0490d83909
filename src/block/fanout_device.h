// FanoutDevice: base for a layer over several lower devices ("legs"), such
// as mirror and parity. It forwards memory registration to every leg,
// reports the strongest stability any leg needs, lists each leg's counters
// after its own (names prefixed "legN/"), scrubs the legs before itself,
// and flushes every leg for a flush bio.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "block/bio_join.h"
#include "block/layer_counters.h"
#include "stablecache/block_device.h"

namespace stablecache {

class FanoutDevice : public BlockDevice {
 public:
  const DeviceInfo& Info() const override { return info_; }
  Stability StackRequiredStability() const override {
    Stability s = info_.required_stability;
    for (const auto& l : legs_) s = std::max(s, l->StackRequiredStability());
    return s;
  }
  void RegisterMemory(std::span<std::byte> region) override {
    for (const auto& l : legs_) l->RegisterMemory(region);
  }
  void UnregisterMemory(std::span<std::byte> region) override {
    for (const auto& l : legs_) l->UnregisterMemory(region);
  }
  void CollectStats(std::vector<LayerStats>& out) const override {
    out.push_back(counters_.Snapshot(info_.name));
    for (size_t i = 0; i < legs_.size(); i++) {
      std::vector<LayerStats> leg;
      legs_[i]->CollectStats(leg);
      for (auto& s : leg) {
        s.name = fmt::format("leg{}/{}", i, s.name);
        out.push_back(std::move(s));
      }
    }
  }
  void DescribeMedium(MediumReport& out) const override {
    out.push_back({info_.name, {}});
    DescribeSelf(out.back().fields);
    for (size_t i = 0; i < legs_.size(); i++) {
      MediumReport leg;
      legs_[i]->DescribeMedium(leg);
      for (auto& l : leg) {
        l.name = fmt::format("leg{}/{}", i, l.name);
        out.push_back(std::move(l));
      }
    }
  }
  Status ScrubRange(uint64_t offset, uint64_t len, ScrubReport& report) override {
    len = std::min(len, info_.size_bytes - std::min(offset, info_.size_bytes));
    if (len == 0) return Status::Ok();
    auto [leg_offset, leg_len] = LegRange(offset, len);
    for (const auto& l : legs_) SC_RETURN_IF_ERROR(l->ScrubRange(leg_offset, leg_len, report));
    return ScrubSelf(offset, len, report);
  }
  size_t leg_count() const { return legs_.size(); }
  BlockDevice& leg(size_t i) const { return *legs_[i]; }

 protected:
  FanoutDevice(std::vector<std::shared_ptr<BlockDevice>> legs, std::string name, Stability required)
      : legs_(std::move(legs)) {
    info_.name = std::move(name);
    info_.required_stability = required;
    info_.logical_block_size = 4096;
    for (const auto& l : legs_) info_.logical_block_size = std::max(info_.logical_block_size, l->Info().logical_block_size);
  }
  // The byte range on every leg that holds [offset, offset + len).
  virtual std::pair<uint64_t, uint64_t> LegRange(uint64_t offset, uint64_t len) const = 0;
  // This layer's own fields for DescribeMedium.
  virtual void DescribeSelf(std::vector<std::pair<std::string, std::string>>& fields) const {
    fields.emplace_back("metadata", "none");
  }
  // Checks this layer's redundancy for the range (clipped to the device).
  virtual Status ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) = 0;

  // Sends a flush to every leg; the bio completes when all have.
  void FlushAll(BioPtr flush) {
    auto join = BioJoin::Start(std::move(flush));
    for (const auto& l : legs_) l->Submit(join->Child(BioOp::kFlush, 0, Stability::kStable));
    join->Arm();
  }

  std::vector<std::shared_ptr<BlockDevice>> legs_;
  DeviceInfo info_;
  mutable LayerCounters counters_;
};

}  // namespace stablecache
