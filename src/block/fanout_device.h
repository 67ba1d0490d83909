// FanoutDevice: base for a layer over several lower devices ("legs"), such
// as mirror and parity. It forwards memory registration to every leg,
// reports the strongest stability any leg needs, lists each leg's counters
// after its own (names prefixed "legN/"), scrubs the legs before itself,
// and flushes every leg for a flush bio.
//
// It also holds what mirror and parity share on the medium: the member set
// (block/member_set.h: records, events, which legs are current) and the
// write-intent bitmap (block/write_intent.h). Every leg's data starts at
// data_offset(); a flush that completes lets the bitmap clear regions.
// Describe() says what is on the medium and what assembly did.
//
// A leg that failed a write (or, in inspect mode, a stale leg) is missing
// (MemberSet::missing): the flush, the bitmap and the scrub skip it, and
// the layer neither reads nor writes it (see its own header).
#pragma once

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "block/bio_join.h"
#include "block/layer_counters.h"
#include "block/member_set.h"
#include "block/write_intent.h"
#include "stablecache/block_device.h"

namespace stablecache {

inline std::string DescribeLeg(const LegDescription& l) {
  return fmt::format("{} (spec position {}): {}, events {} (base {}) at assembly{}{}; found {}", l.device,
                     l.spec_position, l.state, l.events, l.base_events, l.faulty ? ", recorded faulty" : "",
                     l.resynced ? ", resynced" : "", l.found);
}

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
    for (size_t i = 0; i < legs_.size(); i++)
      if (!members_->missing(i)) SC_RETURN_IF_ERROR(legs_[i]->ScrubRange(data_offset_ + leg_offset, leg_len, report));
    return ScrubSelf(offset, len, report);
  }
  size_t leg_count() const { return legs_.size(); }
  // Leg i in set order (its recorded role), not necessarily spec order.
  BlockDevice& leg(size_t i) const { return *legs_[i]; }
  // Bytes on every leg before the data: member record and bitmap.
  uint64_t data_offset() const { return data_offset_; }
  // What is on the medium: format, uuid, events, each leg's role and state.
  SetDescription Describe() const { return members_->Describe(); }
  // Regions the write-intent bitmap holds set right now.
  size_t DirtyRegions() const { return intent_->DirtyRegions(); }

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
  // This layer's own fields for DescribeMedium: what its member records
  // say and what assembly did.
  void DescribeSelf(std::vector<std::pair<std::string, std::string>>& fields) const {
    SetDescription d = Describe();
    fields.emplace_back("format", d.format);
    fields.emplace_back("set uuid", d.uuid);
    fields.emplace_back("events", std::to_string(d.events));
    fields.emplace_back("base events", fmt::format("{} (a leg below this missed writes)", d.base_events));
    fields.emplace_back("faulty roles", d.faulty_roles.empty() ? std::string("none")
                                                               : fmt::format("{}", fmt::join(d.faulty_roles, ", ")));
    fields.emplace_back("data offset", fmt::format("{} bytes on each leg, {} data bytes per leg", d.data_offset,
                                                   d.data_size_per_leg));
    if (d.chunk_bytes) fields.emplace_back("chunk", fmt::format("{} bytes", d.chunk_bytes));
    fields.emplace_back("bitmap", fmt::format("{} blocks, {} bytes per region", d.bitmap_blocks, d.region_bytes));
    fields.emplace_back("assembly", fmt::format("{}{} dirty regions resynced, {} bytes resynced",
                                                d.formatted ? "formatted now; " : "", d.dirty_regions_resynced,
                                                d.resynced_bytes));
    for (size_t i = 0; i < d.legs.size(); i++) fields.emplace_back(fmt::format("role {}", i), DescribeLeg(d.legs[i]));
    for (const auto& n : d.notes) fields.emplace_back("note", n);
  }
  // Checks this layer's redundancy for the range (clipped to the device).
  virtual Status ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) = 0;

  // Takes the legs in set order and sets up the member set and bitmap.
  void AttachSet(SetMembers m) {
    legs_ = m.legs;
    data_offset_ = m.layout.data_offset;
    intent_ = std::make_unique<WriteIntent>(
        this, legs_, m.layout.bitmap,
        LegHealth{[this](size_t leg) { return members_->missing(leg); },
                  [this](size_t leg) { members_->LegFailedWrite(leg); }});
    members_ = std::make_unique<MemberSet>(std::move(m));
  }

  // Sends a flush to every leg not missing; the bio completes when all
  // have (the first leg error fails it). A flush that succeeded lets the
  // bitmap clear regions whose writes ended before it, and completes once
  // that clear is written (its error fails the flush). If a leg is
  // missing, the clear waits until it is recorded on the others (a failed
  // record fails the flush and clears nothing).
  void FlushAll(BioPtr flush) {
    const uint64_t epoch = intent_->FlushStarted();
    auto join = BioJoin::Start(std::move(flush), [this, epoch](BioPtr p, Status st) {
      if (st.ok() && members_->missing_count() == legs_.size())
        st = Status::IoError(fmt::format("{}: every leg is behind (each failed a write)", info_.name));
      if (!st.ok()) return Bio::Complete(std::move(p), std::move(st));
      auto holder = std::make_shared<BioPtr>(std::move(p));
      auto clear = [this, holder, epoch] {
        intent_->FlushDone(epoch, [holder](Status cst) { Bio::Complete(std::move(*holder), std::move(cst)); });
      };
      if (!members_->any_missing()) return clear();
      // A region written while a leg was missing has its bit only on the
      // other legs; clearing it before the medium names that leg faulty
      // would let a crash leave the legs disagreeing with no bit set. So
      // the clear waits for the record, and never happens if it failed.
      members_->AfterRecorded([holder, clear, name = info_.name](Status bump) {
        if (bump.ok()) return clear();
        Bio::Complete(std::move(*holder),
                      bump.WithContext(fmt::format("{}: a leg is behind, and recording it on the other legs failed",
                                                   name)));
      });
    });
    for (size_t i = 0; i < legs_.size(); i++)
      if (!members_->missing(i)) legs_[i]->Submit(join->Child(BioOp::kFlush, 0, Stability::kStable));
    join->Arm();
  }

  // A leg is missing (behind, or stale in inspect mode): never read or written.
  bool Missing(size_t leg) const { return members_->missing(leg); }
  // The error for a chunk that lives on a missing leg.
  Status MissingLeg(size_t leg) const {
    return Status::IoError(fmt::format("{} leg {} ({}) is behind (it failed a write, or is stale): it is not read "
                                       "until the next assembly rebuilds it",
                                       info_.name, leg, legs_[leg]->Info().name));
  }

  std::vector<std::shared_ptr<BlockDevice>> legs_;
  uint64_t data_offset_ = 0;
  std::unique_ptr<MemberSet> members_;
  std::unique_ptr<WriteIntent> intent_;
  DeviceInfo info_;
  mutable LayerCounters counters_;
};

}  // namespace stablecache
