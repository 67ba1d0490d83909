// IntegrityDevice: per-block protection information, crash-consistent.
//
// Each 4 KiB data block has a guard (CRC16 T10-DIF or CRC32C from ISA-L,
// seeded with the block number, so a block's bytes written at another
// block fail the check). Guards live in a tag table on the device below;
// the layout, the entry format and the crash story are in
// doc/integrity_format.md. In short:
//
//   lower device: [record A][record B][tag block 0 … tag block T-1][data …]
//
//  - The record (an "SCINTEG1" MetadataRecord) holds the geometry and the
//    guard type. Create formats a blank device, opens a formatted one with
//    the recorded geometry, and refuses a device that holds anything else,
//    a guard or size that disagrees with the record, or a device below that
//    shrank or grew (format v1 cannot move its tag table).
//  - Tags are written AHEAD of data. A write waits in a group commit: the
//    tag blocks it dirties are written with an entry that accepts both the
//    block's durable content and the new one, and flushed; only then does
//    the data go down. After a crash at any instant a block therefore holds
//    bytes its durable entry accepts: never a false integrity error, and
//    Sync has nothing to add (a flush is passed down behind the next
//    commit, then waits for one more commit that writes, collapsed to the
//    one content they now hold, the entries of the writes it made durable,
//    so a lost or stale block is caught from then on).
//  - A block holds at most one unsettled write: a second write of a block
//    waits until a flush has covered the first (the commit issues one when
//    nothing else would). A failed write leaves the block's content
//    uncertain; it is read back after a flush before the block is written
//    again, so the entry always names what the medium may hold.
//  - Reads accept a block whose guard matches one of its entry's contents;
//    a block never written must read as zeros. Anything else fails the
//    read with kIntegrityError naming the block; the bytes are never passed
//    up as good. A corrupt tag block makes its blocks unreadable until
//    they are rewritten.
//
// Costs: one tag-block write per 254 data blocks a commit touches, plus one
// flush per commit; commits pipeline with data I/O (measured in README).
//
// It needs `required` stability (default kDeclaredStable) and bounces bios
// that carry less, once (block/bounce.h).
// REQUIRES: no read of a block concurrent with a write of it (as on a disk,
// the result of such a read is undefined). Thread-safe.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "block/metadata_record.h"
#include "block/stacked_device.h"

namespace stablecache {

enum class GuardType : uint32_t { kCrc16T10Dif = 1, kCrc32c = 2 };
const char* GuardName(GuardType g);

struct IntegrityOptions {
  // Unset: crc16 for a new volume, the recorded one for an existing volume.
  std::optional<GuardType> guard;
  Stability required = Stability::kDeclaredStable;
  bool format = true;  // format a blank device (else: an error)
};

// What the record says (for `stablecache info`).
struct IntegrityGeometry {
  GuardType guard = GuardType::kCrc16T10Dif;
  uint64_t data_blocks = 0;
  uint64_t tag_start = 0;   // first tag block, in 4 KiB blocks of the device below
  uint64_t tag_blocks = 0;
  uint64_t data_start = 0;  // first data block, in 4 KiB blocks of the device below
  uint64_t lower_bytes = 0; // size of the device below at format
};

class IntegrityDevice final : public StackedDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<IntegrityDevice>> Create(std::shared_ptr<BlockDevice> lower,
                                                                       const IntegrityOptions& opts);
  ~IntegrityDevice() override;
  void Submit(BioPtr bio) override;
  void DescribeMedium(MediumReport& out) const override;

  uint32_t Guard(uint64_t block, const std::byte* data) const;
  const IntegrityGeometry& geometry() const { return geo_; }
  const Uuid& uuid() const { return uuid_; }
  bool formatted_now() const { return formatted_now_; }
  // Byte offset on the device below of data block `block` (tests that rot
  // the medium behind this layer).
  uint64_t LowerOffset(uint64_t block) const { return (geo_.data_start + block) * 4096; }

  static constexpr uint32_t kEntriesPerTagBlock = 254;

 private:
  struct BlockState;
  struct PendingWrite;
  struct Commit;
  IntegrityDevice(std::shared_ptr<BlockDevice> lower, const IntegrityOptions& opts);
  Status OpenOrFormat(const IntegrityOptions& opts);
  Status Format();
  Status LoadTags();
  void SubmitWrite(BioPtr bio);
  void SubmitRead(BioPtr bio);
  void SubmitFlush(BioPtr bio);
  // The group-commit loop; called with mu_ held, may release it.
  void Kick(std::unique_lock<std::mutex>& lk);
  void KickOnce(std::unique_lock<std::mutex>& lk);
  bool Admissible(uint64_t first, uint64_t count, bool* need_flush);
  bool SettleCovered(std::vector<uint64_t>* read_backs);  // true if it collapsed an entry
  void TagsWritten(std::shared_ptr<Commit> c, Status st);
  void CommitFlushed(std::shared_ptr<Commit> c, Status st);
  void AbortCommit(std::shared_ptr<Commit> c, const Status& st);
  void SubmitData(std::unique_ptr<PendingWrite> w);
  void DataWritten(uint64_t first, uint64_t count, bool ok);
  void ReadBack(uint64_t block);
  void ResolveReadBack(uint64_t block, const std::byte* data, bool ok);
  std::vector<std::byte> EncodeTagBlock(uint64_t tb) const;  // REQUIRES: mu_
  Status CheckBlock(uint64_t block, uint32_t guard) const;  // REQUIRES: mu_

  IntegrityOptions opts_;
  GuardType guard_ = GuardType::kCrc16T10Dif;
  IntegrityGeometry geo_;
  Uuid uuid_;
  bool formatted_now_ = false;

  mutable std::mutex mu_;
  std::vector<BlockState> blocks_;       // GUARDED_BY(mu_)
  std::set<uint64_t> dirty_tag_blocks_;  // GUARDED_BY(mu_)
  std::deque<std::unique_ptr<PendingWrite>> waiting_writes_;  // GUARDED_BY(mu_): not yet in a commit
  std::vector<BioPtr> waiting_flushes_;  // GUARDED_BY(mu_)
  std::vector<BioPtr> finishing_flushes_;  // GUARDED_BY(mu_): durable, waiting for their collapses
  bool committing_ = false;              // GUARDED_BY(mu_): one commit at a time
  uint64_t data_in_flight_ = 0;          // GUARDED_BY(mu_): data writes of commits, not yet completed
  bool kicking_ = false;                 // GUARDED_BY(mu_): a Kick is running (maybe up this stack)
  bool rekick_ = false;                  // GUARDED_BY(mu_): it must go round again
  std::set<uint64_t> unsettled_;         // GUARDED_BY(mu_): written (or failed), awaiting a flush
  uint64_t flushes_submitted_ = 0;       // GUARDED_BY(mu_)
  uint64_t flushed_upto_ = 0;            // GUARDED_BY(mu_): highest successful flush
  uint64_t swept_at_ = 0;                // GUARDED_BY(mu_): flushed_upto_ at the last SettleCovered
};

}  // namespace stablecache
