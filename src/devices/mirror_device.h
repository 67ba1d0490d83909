// MirrorDevice: RAID-1 over N >= 2 legs, each a whole stack.
//
// On the medium (doc/mirror_parity_format.md): every leg starts with a
// member record ("SCMIRROR": set uuid, leg count, role, events) and a
// write-intent bitmap; data starts at data_offset(), so the device is that
// much smaller than its smallest leg. Create assembles the set
// (block/member_set.h): blank legs are formatted; otherwise another set's
// leg, a wrong leg count or two legs in one role is an error naming both;
// legs are placed by their recorded role; a blank or stale leg (fewer
// events) is rebuilt whole from a current leg, and the regions the bitmap
// marks dirty (a crash mid-write) are copied from one current leg to the
// others, all before Create returns (progress via MirrorOptions::progress).
//
// Writes set their regions' bits in the bitmap on every leg first (durable,
// group-committed), then go to every leg and complete when all have; the
// first leg error fails the write (the page cache keeps the page dirty and
// retries). A leg that failed a write is behind, and missing from then on
// (md's faulty member): it is recorded as faulty on the other legs before
// the write completes, and is never read, written, repaired or scrubbed
// again until the next assembly rebuilds it whole; later writes go to the
// other legs and succeed (acknowledged once that record is durable). With
// every leg behind, reads and writes fail naming that. Reads rotate over the
// legs. A read that fails on a leg (an integrity error from a layer below,
// an I/O error) is recovered block by block under a range lock that keeps
// writes out: each 4 KiB block comes from the first leg that can read it,
// and is written back over the copies that could not (a repair, counted
// per block copy). The read completes after its repairs, with the good
// data, unless some block has no readable copy. Reads take no lock: one
// racing a repair of its blocks gets the bad copy (and recovers under the
// lock) or the repaired one.
// Scrub reads every block from every leg and reports, by block number, the
// blocks whose legs differ (md's mismatch_cnt, with the blocks named),
// blocks some leg cannot read but another can (degraded), and blocks no
// leg can read (unreadable).
//
// Needs `required` stability (default kDeclaredStable): each leg reads the
// payload at its own time, so bytes that change during the write make the
// legs diverge. Bounces bios that carry less, once (block/bounce.h).
// Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "block/fanout_device.h"
#include "block/range_lock.h"

namespace stablecache {

struct MirrorOptions {
  Stability required = Stability::kDeclaredStable;
  bool format = true;         // every leg blank: format a new set (else an error)
  bool inspect = false;       // open without writing (no events bump, resync or rebuild)
  ResyncProgressFn progress;  // called while Create resyncs legs
};

class MirrorDevice final : public FanoutDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<MirrorDevice>> Create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                                    const MirrorOptions& opts = {});
  void Submit(BioPtr bio) override;

 private:
  struct Read;
  MirrorDevice(SetMembers m, const MirrorOptions& opts);
  ResyncHooks Hooks(size_t source, std::vector<bool> stale);
  Status CopyRange(size_t source, const std::vector<size_t>& to, const std::vector<bool>& stale, uint64_t off,
                   uint64_t len);
  void SubmitWrite(BioPtr bio);
  void WriteLegs(BioPtr parent, RangeLock::Ticket t, uint64_t r0, uint64_t r1);
  void FinishWrite(BioPtr parent, Status st, std::vector<size_t> failed, RangeLock::Ticket t, uint64_t r0,
                   uint64_t r1);
  void StartRecovery(std::shared_ptr<Read> r);
  void RecoverBlock(std::shared_ptr<Read> r);
  void BlockRead(std::shared_ptr<Read> r, size_t leg, Status st);
  void Repair(std::shared_ptr<Read> r, Status result);
  std::pair<uint64_t, uint64_t> LegRange(uint64_t offset, uint64_t len) const override { return {offset, len}; }
  Status ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) override;
  Status ScrubChunk(uint64_t offset, uint32_t len, ScrubReport& report);

  RangeLock locks_;
  std::atomic<uint64_t> next_leg_{0};
};

}  // namespace stablecache
