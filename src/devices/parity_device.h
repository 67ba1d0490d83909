// ParityDevice: RAID-5 over N >= 3 legs: k = N - 1 data chunks and one
// parity chunk per stripe, 4 KiB chunks, parity rotating left-symmetric
// over the legs (stripe s keeps parity on leg N-1 - s%N). Parity is the XOR
// of the stripe's data, computed and checked with ISA-L's raid kernels
// (xor_gen, xor_check).
//
// Writes lock their stripes (an asynchronous range lock, so two writes to
// one stripe never interleave their parity updates), read the data chunks
// of each stripe they do not cover (reconstruct-write), compute parity over
// the new data in place, and write the data chunks and the parity. If one
// of those reads fails, the chunk is rebuilt from the stripe's old contents
// and old parity and written back with it (a degraded write). The first
// leg error on a write, or two unreadable chunks in a stripe, fail it. Reads go straight to the data legs. A
// read that fails on one leg (an integrity error below, an I/O error)
// reconstructs the lost chunks from the other legs of their stripe under
// the stripe lock, returns them, and writes them back to the failed leg (a
// repair). Two failures in one stripe fail the read. Reads of healthy
// chunks take no lock; one racing a repair gets the bad copy (and rebuilds
// under the lock) or the repaired one. Scrub reads every
// stripe and reports, by stripe number, those whose parity is not the XOR
// of their data (md's mismatch_cnt, with the stripes named).
//
// On the medium (doc/mirror_parity_format.md): every leg starts with a
// member record ("SCPARITY": set uuid, leg count, role, events) and a
// write-intent bitmap; chunks start at data_offset(). Legs are placed by
// their recorded role (the parity rotation depends on it). Create
// assembles the set (block/member_set.h) before serving I/O: it recomputes
// the parity of every region the bitmap marks dirty (a crash mid-stripe:
// the write hole), and rebuilds one blank or stale leg whole from the
// others. A set that is both dirty and missing a leg fails to assemble
// (the lost chunks of dirty stripes cannot be rebuilt).
//
// A leg that fails a write is behind and missing from then on (md's
// degraded mode): recorded as faulty on the other legs before the write
// completes (block/member_set.h), never read (its chunks are rebuilt from
// the rest of their stripes), never written (a write computes parity over
// its intended data and skips the missing leg's chunk, so with that leg
// left out every stripe it wrote is consistent). Writes that skip it
// succeed; with two legs missing every write fails naming them, and a read
// needing a chunk of either fails naming the stripe.
//
// No write hole at runtime: every write sets its regions' bits durably
// first. A write that fails on a leg while another is already missing, or
// a dirty stripe assembly could not resync, leaves the stripe "parity may
// be stale": remembered in memory and held set in the bitmap. Rebuilding a
// chunk of such a stripe (a degraded read, or a degraded write) fails with
// an error naming the stripe instead of XORing old and new chunks; the
// next write of the stripe that reads or covers every data chunk
// recomputes its parity and clears the mark. Multi-block reads that fail
// on a leg are re-read block by block, so only the blocks that really fail
// are rebuilt and repaired.
//
// Needs `required` stability (default kDeclaredStable): parity is computed
// from the payload before the legs read it, so bytes that change during the
// write leave parity that does not match the data. Bounces bios that carry
// less, once. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "block/fanout_device.h"
#include "block/leg_runs.h"
#include "block/range_lock.h"

namespace stablecache {

struct ParityOptions {
  Stability required = Stability::kDeclaredStable;
  bool format = true;         // every leg blank: format a new set (else an error)
  bool inspect = false;       // open without writing (no events bump, resync or rebuild)
  ResyncProgressFn progress;  // called while Create resyncs
};

class ParityDevice final : public FanoutDevice {
 public:
  [[nodiscard]] static Result<std::shared_ptr<ParityDevice>> Create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                                    const ParityOptions& opts = {});
  void Submit(BioPtr bio) override;

  // Where a chunk lives: a leg and a byte offset on it.
  struct Place {
    size_t leg;
    uint64_t offset;
  };
  Place DataPlace(uint64_t block) const;    // 4 KiB data block of this device
  Place ParityPlace(uint64_t stripe) const;
  size_t data_legs() const { return legs_.size() - 1; }
  // Stripes whose parity may be stale (a write to them failed).
  bool StripeStale(uint64_t stripe) const;
  size_t StaleStripes() const;

 private:
  struct WriteOp;
  struct ReadOp;
  ParityDevice(SetMembers m, const ParityOptions& opts);
  ResyncHooks Hooks();
  Status ResyncStripes(uint64_t s0, uint64_t s1);
  Status RebuildLeg(size_t leg, uint64_t s0, uint64_t s1);
  // Marks stripes [s0, s1) parity-may-be-stale (held in the bitmap) or clears them.
  void MarkStale(uint64_t s0, uint64_t s1);
  void ClearStale(uint64_t s0, uint64_t s1);
  std::optional<uint64_t> FirstStale(uint64_t s0, uint64_t s1) const;
  // An error naming the legs if two or more are missing (writes are refused).
  Status TwoLegsMissing() const;
  void EndWrite(std::shared_ptr<WriteOp> op, Status st, BioPtr parent);
  void SubmitWrite(BioPtr bio);
  void ReadRestOfStripes(std::shared_ptr<WriteOp> op);
  void RebuildForWrite(std::shared_ptr<WriteOp> op);
  void WriteDataAndParity(std::shared_ptr<WriteOp> op);
  void FailWrite(std::shared_ptr<WriteOp> op, const Status& st);
  void SubmitRead(BioPtr bio);
  void Rebuild(std::shared_ptr<ReadOp> op);
  void FindFailedBlocks(std::shared_ptr<ReadOp> op);
  void RebuildRead(std::shared_ptr<ReadOp> op);
  void FinishRebuild(std::shared_ptr<ReadOp> op);
  std::pair<uint64_t, uint64_t> StripeRange(uint64_t offset, uint64_t len) const;  // [first, end)
  std::pair<uint64_t, uint64_t> LegRange(uint64_t offset, uint64_t len) const override;
  Status ScrubSelf(uint64_t offset, uint64_t len, ScrubReport& report) override;
  // One child bio of `join` per run; `decorate` may wrap its completion.
  void SubmitRuns(const std::shared_ptr<BioJoin>& join, BioOp op, Stability level, LegRuns& runs,
                  const std::function<void(Bio&, LegRuns::Run&)>& decorate = {});

  RangeLock stripe_locks_;  // ranges in stripe numbers
  mutable std::mutex stale_mu_;
  std::set<uint64_t> stale_stripes_;  // GUARDED_BY(stale_mu_)
  std::vector<uint64_t> stale_at_assembly_;  // dirty stripes assembly could not resync
};

}  // namespace stablecache
