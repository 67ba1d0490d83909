// FaultDevice: a layer that fails (or, for negative controls, silently
// drops) chosen bios.
//
// A rule matches bios of an op (or any op) that overlap [offset, offset+len)
// (a flush matches any range). A matching rule first lets `skip` bios go on
// to the next rules, then fires `count` times (-1: forever): to fail the
// Nth matching bio, set skip = N-1 and count = 1 (dm-flakey and Linux's
// fail_make_request `times`/`interval`, made exact). Rules are tried in
// order; the first that fires decides. Non-matching bios pass through.
//
// Actions: kFail completes the bio with `error`. kDrop completes it with OK
// without passing it down: a device that lies (a write acknowledged and
// lost, dm-flakey's drop_writes). It exists so a checker can be shown to
// catch a layer that swallows an error; never use it to model a real fault.
//
// A rule with `heal_on_write` is a latent sector error: a write that passes
// through and overlaps its range disarms it (the drive remaps the sector),
// so a repair from redundancy really repairs.
//
// The layer counts every bio it sees, per op, so a test can run an
// operation once clean, count its I/O, and then fail each one in turn.
// Rules can change while I/O runs. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <vector>

#include "block/stacked_device.h"

namespace stablecache {

enum class FaultAction : uint8_t {
  kFail,  // complete with `error`
  kDrop,  // complete with OK, do nothing: a lying device (negative controls only)
};

struct FaultRule {
  std::optional<BioOp> op;  // nullopt: any op
  uint64_t offset = 0;
  uint64_t len = UINT64_MAX;
  int error = 5;  // EIO
  int64_t skip = 0;    // matching bios let through before the rule fires
  int64_t count = -1;  // times it fires; -1: forever
  FaultAction action = FaultAction::kFail;
  bool heal_on_write = false;  // a write overlapping the range disarms the rule
};

class FaultDevice final : public StackedDevice {
 public:
  explicit FaultDevice(std::shared_ptr<BlockDevice> lower) : StackedDevice(std::move(lower), "fault", Stability::kUnstable) {}
  void Submit(BioPtr bio) override;
  void AddRule(const FaultRule& r);
  void ClearRules();
  // Bios the layer fired a rule on (failed or dropped).
  uint64_t injected() const { return injected_.load(); }
  uint64_t injected(BioOp op) const { return injected_by_op_[static_cast<size_t>(op)].load(); }
  // Bios the layer has seen since it was built, of every op or of one.
  uint64_t seen() const;
  uint64_t seen(BioOp op) const { return seen_[static_cast<size_t>(op)].load(); }

 private:
  std::mutex mu_;
  std::vector<FaultRule> rules_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> injected_{0};
  std::array<std::atomic<uint64_t>, 3> injected_by_op_{};
  std::array<std::atomic<uint64_t>, 3> seen_{};
};

}  // namespace stablecache
