// BlockDevice: the narrow interface every layer of a stack implements.
//
// A device accepts asynchronous bios (Submit), describes itself (Info), and
// forwards capability questions and registrations to the device below.
// Layers such as fault injection or a RAM disk are ordinary devices, not
// mocks. All methods are thread-safe; Submit may be called concurrently.
//
// Contract for Submit (checked by CheckBio): the range lies inside
// Info().size_bytes; offset and length are multiples of
// Info().logical_block_size; a flush bio has no segments.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "stablecache/bio.h"
#include "stablecache/status.h"

namespace stablecache {

struct DeviceInfo {
  std::string name;                 // e.g. "memory", "file:/tmp/x"
  uint64_t size_bytes = 0;          // usable bytes
  uint32_t logical_block_size = 4096;
  // What this layer itself needs from the bios it receives.
  Stability required_stability = Stability::kUnstable;
};

// Per-layer counters, collected top to bottom by CollectStats.
struct LayerStats {
  std::string name;
  uint64_t bios = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_bounced = 0;
  uint64_t errors = 0;
  uint64_t integrity_errors = 0;     // integrity: tag mismatches seen on read
  // verify: 512-byte blocks of a write changed while it was in flight
  // although the bio promised they would not (kDeclaredStable or kStable):
  // a broken promise. The byte offsets of the first 16 of them.
  uint64_t modified_in_flight = 0;
  std::vector<uint64_t> modified_offsets;
  // verify: blocks of unstable writes changed in flight (allowed: the
  // layers that need stable bytes bounced them).
  uint64_t unstable_modified = 0;
  uint64_t repairs = 0;              // mirror/parity: blocks rewritten from redundancy
  uint64_t degraded_reads = 0;       // mirror/parity: reads served despite a failed leg
  uint64_t mirror_divergence = 0;    // mirror: diverged blocks found by Scrub
  uint64_t parity_mismatch = 0;      // parity: mismatched stripes found by Scrub
  uint64_t metadata_writes = 0;      // blocks of this layer's own metadata written (integrity tags, records)
  uint64_t metadata_flushes = 0;     // flushes this layer issued for its own ordering (integrity commits)
};

// What a scrub found, summed over every redundant layer of a stack.
struct ScrubFinding {
  // kDegraded: one copy is unreadable but redundancy still holds the data
  // (a read repairs it); kUnreadable: no copy can be read or rebuilt.
  enum class Kind : uint8_t { kMirrorDivergence, kParityMismatch, kUnreadable, kDegraded };
  Kind kind;
  std::string layer;  // e.g. "mirror"
  uint64_t block;     // 4 KiB block number on that layer (a stripe number for parity)
  std::string detail;
};
// "diverged", "parity", "unreadable", "degraded": the name reports use.
const char* ScrubKindName(ScrubFinding::Kind k);
struct ScrubReport {
  // In: also rewrite the bad copies from a good one (md's "repair"): a
  // degraded block from the copy that reads, a diverged mirror block from
  // the first leg that reads, a mismatched stripe's parity from its data.
  bool repair = false;
  uint64_t repaired = 0;  // out: block copies (parity: stripes) rewritten
  uint64_t blocks_checked = 0;
  uint64_t mirror_divergence = 0;  // blocks whose legs differ
  uint64_t parity_mismatch = 0;    // stripes whose parity is not the XOR of their data
  uint64_t unreadable = 0;         // blocks no leg could read or rebuild (data lost)
  uint64_t degraded = 0;           // blocks (parity: stripes) with one unreadable copy that redundancy covers
  std::vector<ScrubFinding> findings;  // the first kMaxFindings, in the order found
  static constexpr size_t kMaxFindings = 1024;
  void Add(ScrubFinding f);
  bool clean() const { return mirror_divergence == 0 && parity_mismatch == 0 && unreadable == 0 && degraded == 0; }
};

// What the layers of a stack keep on the medium, for `stablecache info`:
// one entry per layer, top to bottom (a fan-out's legs follow it, their
// names prefixed "legN/"), each a list of (field, value) in display order.
struct MediumLayer {
  std::string name;
  std::vector<std::pair<std::string, std::string>> fields;
};
using MediumReport = std::vector<MediumLayer>;

// Lifetime: a device is owned by shared_ptr. A bio in flight keeps every
// device it has entered alive until it completes (each layer adds itself to
// the bio's keep_alive on entry), so a stack may be dropped with I/O in
// flight; the last device then goes when its last bio completes, possibly
// on a leaf's completion thread.
class BlockDevice : public std::enable_shared_from_this<BlockDevice> {
 public:
  virtual ~BlockDevice() = default;

  virtual const DeviceInfo& Info() const = 0;

  // Starts the I/O; completion via Bio::Complete. Never blocks on the I/O.
  virtual void Submit(BioPtr bio) = 0;

  // The strongest stability any layer from here down needs.
  virtual Stability StackRequiredStability() const { return Info().required_stability; }

  // Offers a long-lived memory region (the cache's frame arena) that bios
  // will often point into, so leaf devices can register it (io_uring fixed
  // buffers). Default: forward to the layers below.
  virtual void RegisterMemory(std::span<std::byte> region) { (void)region; }
  // Withdraws a region offered by RegisterMemory, once per RegisterMemory
  // call, before the memory is unmapped: a leaf must never keep pinned
  // pages that a later mapping at the same address would alias. REQUIRES:
  // no bio pointing into the region is in flight. Default: forward down.
  virtual void UnregisterMemory(std::span<std::byte> region) { (void)region; }

  // Completion polling, for a caller that waits for its own bio (direct
  // I/O): reaps and runs completions of this stack on the calling thread
  // until done() holds, as an io_uring user that submits and waits on one
  // thread does, instead of sleeping until a device thread completes the
  // bio and wakes it (a second wake-up per I/O). Completions of other bios
  // may run on the caller's thread meanwhile. Returns false at once, having
  // done nothing, when the stack cannot complete bios that way (a layer
  // completes on threads of its own): the caller then waits as usual.
  // Default: false. Layers that complete inline forward it down.
  virtual bool PollUntil(const std::function<bool()>& done) {
    (void)done;
    return false;
  }
  // Whether PollUntil works on this stack: only then may a submitter mark
  // its bios Bio::polled (a leaf that sees the mark stands its own
  // completion thread aside for them).
  virtual bool Pollable() const { return false; }

  // Appends this layer's counters, then those of the layers below.
  virtual void CollectStats(std::vector<LayerStats>& out) const = 0;

  // Appends what this layer keeps on the medium (format, version, uuid,
  // geometry, generations, state), then the layers below. Default: the
  // name and size only (a leaf with no metadata).
  virtual void DescribeMedium(MediumReport& out) const {
    out.push_back({Info().name, {{"size", std::to_string(Info().size_bytes)}}});
  }

  // Checks every redundant layer from here down (mirror legs agree, parity
  // matches its data) for the blocks of [offset, offset + len), and adds
  // what it finds to `report`. Reports, never repairs. Each redundant layer
  // holds its own range lock over what it checks, so writes elsewhere (a
  // parity stripe's other blocks) may run meanwhile. Layers without
  // redundancy forward it down; leaves do nothing. REQUIRES: no write of
  // the range itself in flight (it would look like a divergence). Returns
  // an error only when the scrub itself could not run.
  virtual Status ScrubRange(uint64_t offset, uint64_t len, ScrubReport& report) {
    (void)offset, (void)len, (void)report;
    return Status::Ok();
  }
  // The whole device.
  Status Scrub(ScrubReport& report) { return ScrubRange(0, Info().size_bytes, report); }
};

// Validates a bio against a device's Info: range, alignment, segment sizes.
Status CheckBio(const BlockDevice& dev, const Bio& bio);

// Submits and waits for completion (futex wait, no polling).
Status SubmitAndWait(BlockDevice& dev, BioPtr bio);
// Convenience wrappers over SubmitAndWait for a flat buffer.
Status ReadSync(BlockDevice& dev, uint64_t offset, void* buf, uint32_t len);
Status WriteSync(BlockDevice& dev, uint64_t offset, const void* buf, uint32_t len,
                 Stability s = Stability::kStable);
Status FlushSync(BlockDevice& dev);

}  // namespace stablecache
