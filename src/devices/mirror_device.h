// MirrorDevice: RAID-1 over N >= 2 legs, each a whole stack.
//
// Writes go to every leg and complete when all have; the first leg error
// fails the write (the page cache keeps the page dirty and retries), so no
// leg is ever silently behind an acknowledged write. Reads rotate over the
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
#include <vector>

#include "block/fanout_device.h"
#include "block/range_lock.h"

namespace stablecache {

struct MirrorOptions {
  Stability required = Stability::kDeclaredStable;
};

class MirrorDevice final : public FanoutDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<MirrorDevice>> Create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                                    const MirrorOptions& opts = {});
  void Submit(BioPtr bio) override;

 private:
  struct Read;
  MirrorDevice(std::vector<std::shared_ptr<BlockDevice>> legs, const MirrorOptions& opts);
  void SubmitWrite(BioPtr bio);
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
