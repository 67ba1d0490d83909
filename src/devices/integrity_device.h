// IntegrityDevice: T10-PI-style protection information per 4 KiB block.
//
// Each data block gets a guard tag (CRC16 T10-DIF or CRC32C, from ISA-L)
// and a reference tag (block number + 1; 0 marks a block never written),
// 8 bytes, kept in a metadata region at the end of the device below. Tags
// are generated at submission and checked on every read: a mismatch fails
// the read with kIntegrityError and counts it; the data is never passed up
// as good. The tag table lives in memory (loaded at open) and is written to
// the metadata region on every flush, before the flush goes down, so a
// synced stack reopens with its tags.
//
// It needs `required` stability (default kDeclaredStable) and bounces bios
// that carry less, once (block/bounce.h).
// REQUIRES: no read of a block concurrent with a write of it (as on a disk,
// the result of such a read is undefined). Thread-safe.
#pragma once

#include <mutex>
#include <set>
#include <vector>

#include "block/stacked_device.h"

namespace stablecache {

enum class GuardType { kCrc16T10Dif, kCrc32c };

struct IntegrityOptions {
  GuardType guard = GuardType::kCrc16T10Dif;
  Stability required = Stability::kDeclaredStable;
};

class IntegrityDevice final : public StackedDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<IntegrityDevice>> Create(std::shared_ptr<BlockDevice> lower,
                                                                       const IntegrityOptions& opts);
  void Submit(BioPtr bio) override;
  uint32_t Guard(const std::byte* block) const;

 private:
  struct Tag {
    uint32_t guard;
    uint32_t ref;
  };
  static constexpr uint32_t kTagsPerBlock = 4096 / sizeof(Tag);
  IntegrityDevice(std::shared_ptr<BlockDevice> lower, const IntegrityOptions& opts, uint64_t data_blocks);
  Status LoadTags();
  void SubmitWrite(BioPtr bio);
  void SubmitRead(BioPtr bio);
  void SubmitFlush(BioPtr bio);
  void StartTagPhase();

  IntegrityOptions opts_;
  uint64_t data_blocks_;
  uint64_t tag_offset_;  // byte offset of the metadata region below
  std::mutex mu_;
  std::vector<Tag> tags_;            // GUARDED_BY(mu_)
  std::set<uint64_t> dirty_tag_blocks_;  // GUARDED_BY(mu_)
  std::vector<BioPtr> queued_flushes_;   // GUARDED_BY(mu_): waiting for a tag phase
  bool flush_running_ = false;           // GUARDED_BY(mu_): a tag phase is under way
};

}  // namespace stablecache
