// MemberSet: which legs of a mirror or parity set are current, md-style.
//
// Every leg starts with a member record (block/metadata_record.h, A/B
// slots at offset 0: "SCMIRROR" or "SCPARITY", payload format v2), then the
// write-intent bitmap (block/write_intent.h), then data from `data_offset`.
// The record names the set (uuid), its leg count, this leg's role (its
// index in the set: parity order matters), the geometry, and a data epoch:
//  - `events`, bumped on every assembly and whenever a leg fails a write,
//    written only to the legs that are current;
//  - `base_events`, the events before that bump: the bump was written while
//    no leg that lacked data could have been written to, so a leg that
//    holds at least `base_events` only missed the bump (a crash between two
//    legs' record writes), not data;
//  - `faulty_roles`, the roles known at that bump to have missed writes.
// Staleness: R = the valid record with the highest events; a leg is stale
// if it is blank, its role is in R.faulty_roles, or its events are below
// R.base_events (an image restored from an earlier stop). A v1 record reads
// as base_events = events, faulty_roles = none. Layout and every field's
// crash story: doc/mirror_parity_format.md.
//
// Assembly is two steps:
//  1. ReadMembers reads every leg's record and checks it against the spec
//     (no writes). Another set's legs, a leg count that disagrees (or above
//     64), two legs claiming one role, another layer's record, or a
//     non-blank leg without a valid record are errors naming the leg, the
//     spec and the medium. Legs are placed by their recorded role (swapped
//     legs are noted); blank legs take the free roles in spec order.
//  2. MemberSet::Assemble (all legs blank: format) bumps the events twice:
//     phase 1 (E+1, base E, faulty = the stale roles) on the current legs
//     before anything else is written; then it resyncs the regions the
//     bitmap marks dirty among the current legs, rebuilds every stale leg
//     whole from the current ones (synchronously, before the device serves
//     I/O, with progress reported), flushes, clears the bitmap; phase 2
//     (E+2, base E+1, faulty none) goes to the current legs first, then the
//     rebuilt ones. A crash between two legs' record writes of either phase
//     leaves a set that opens; a crash before a rebuilt leg's phase-2
//     record leaves it stale, so the next assembly starts its rebuild over.
//
// At run time a leg that fails a write is *behind* and, from that moment
// on, missing (md's faulty member): the layer neither reads nor writes it
// (nor its bitmap), and LegFailedWrite records it on the other legs
// (E+1, base E, faulty |= that role). Writes that skip a missing leg are
// acknowledged only after that record is durable (AfterRecorded); if it
// could not be written, they fail. In inspect mode the stale legs are
// missing too (they are not rebuilt).
// Thread-safe after Assemble.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "block/metadata_record.h"
#include "block/write_intent.h"
#include "stablecache/block_device.h"

namespace stablecache {

// Resync progress, reported once per step (a few MiB) while assembly runs.
struct ResyncProgress {
  std::string layer;     // "mirror" or "parity"
  std::string what;      // e.g. "rebuilding leg 1 (blank)", "resyncing dirty regions"
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
};
using ResyncProgressFn = std::function<void(const ResyncProgress&)>;

// What `info` prints about a set: the medium as found at assembly, and
// what assembly did about it. A plain struct.
struct LegDescription {
  size_t spec_position = 0;  // where the spec lists this leg
  size_t role = 0;           // its index in the set
  std::string device;        // the leg's top device name
  std::string found;         // its record at assembly (DescribeRecord)
  uint64_t events = 0;       // its events at assembly (0: blank)
  std::string state;         // "current", "blank", "stale"; "behind" after a failed write
  bool resynced = false;     // rebuilt at assembly
  uint64_t base_events = 0;  // its record's base_events at assembly
  bool faulty = false;       // listed in the newest record's faulty_roles at assembly
};
struct SetDescription {
  std::string layer;     // "mirror" or "parity"
  std::string format;    // e.g. "SCMIRROR v2"
  std::string uuid;
  uint64_t events = 0;   // now
  uint64_t base_events = 0;          // now: the events before the last bump
  std::vector<size_t> faulty_roles;  // now: roles recorded as having missed writes
  bool formatted = false;  // the legs were blank and were formatted now
  uint64_t data_offset = 0, data_size_per_leg = 0, region_bytes = 0;
  uint32_t chunk_bytes = 0, bitmap_blocks = 0;
  uint64_t dirty_regions_resynced = 0;  // at assembly, from the bitmap
  uint64_t resynced_bytes = 0;          // at assembly: dirty regions and rebuilt legs
  std::vector<LegDescription> legs;     // by role
  std::vector<std::string> notes;       // swapped legs, rebuilt legs, ...
};

struct SetLayout {
  uint32_t leg_count = 0;
  uint32_t chunk_bytes = 4096;
  uint64_t data_offset = 0;  // bytes on each leg where data starts
  uint64_t data_size = 0;    // data bytes per leg
  BitmapGeometry bitmap;
};

// How the spec describes the set.
struct SetSpec {
  std::string_view magic;  // "SCMIRROR" / "SCPARITY"
  std::string layer;       // "mirror" / "parity"
  uint32_t chunk_bytes = 4096;
  size_t max_stale = 1;    // legs that can be rebuilt at once
  bool format = true;      // every leg blank: format a new set (else an error)
  bool inspect = false;    // assemble without writing: no events bump, resync or rebuild
};

// The legs as found, checked against the spec and placed by role.
struct SetMembers {
  std::vector<std::shared_ptr<BlockDevice>> legs;  // by role
  SetLayout layout;
  Uuid uuid;
  uint64_t events = 0;      // the highest events found (0: fresh)
  uint64_t base_events = 0; // that record's base_events
  uint64_t faulty = 0;      // that record's faulty_roles (bit per role)
  bool fresh = false;       // every leg blank: format
  bool inspect = false;     // SetSpec::inspect: assembly writes nothing
  std::vector<bool> stale;  // by role
  SetDescription description;
};

[[nodiscard]] Result<SetMembers> ReadMembers(std::vector<std::shared_ptr<BlockDevice>> legs, const SetSpec& spec);

// A layer's side of a resync, run synchronously during assembly with no
// other I/O. Offsets are leg data bytes (from data_offset).
struct ResyncHooks {
  // Makes the current legs agree over [off, off + len) (a dirty region):
  // mirror copies one current leg over the others, parity recomputes parity.
  std::function<Status(uint64_t off, uint64_t len)> resync_dirty;
  // Rewrites role `leg` over [off, off + len) from the current legs.
  std::function<Status(size_t leg, uint64_t off, uint64_t len)> rebuild;
  // Parity: a stale leg cannot be rebuilt where parity may be stale.
  bool stale_leg_needs_clean_regions = false;
  // Regions whose bits must stay set when the bitmap is cleared at the end
  // of assembly (parity: dirty stripes it could not resync).
  std::function<std::vector<uint64_t>()> keep_regions;
};

class MemberSet {
 public:
  explicit MemberSet(SetMembers m);
  // Formats blank legs or brings the set current; see the top comment.
  [[nodiscard]] Status Assemble(const ResyncHooks& hooks, const ResyncProgressFn& progress);
  const SetLayout& layout() const { return layout_; }
  // Inspect mode: the regions the bitmap marks dirty (not resynced).
  const std::vector<uint64_t>& dirty_at_open() const { return dirty_at_open_; }

  // A leg failed a write: it is behind, and missing from now on (marked
  // before this returns). Starts the bump (E+1, base E, faulty |= leg) on
  // the legs not missing (records written and flushed, asynchronously). A
  // leg already behind costs nothing. Wait with AfterRecorded.
  void LegFailedWrite(size_t leg);
  // Calls go once every bump started so far has ended: Ok, or the error of
  // a bump that failed (sticky: the medium may not record a missing leg,
  // so no write that skipped it may be acknowledged). Inline when none runs.
  void AfterRecorded(std::function<void(Status)> go);
  // The error of a failed bump so far (Ok if none): a layer refuses new
  // writes with it, before writing anything.
  Status RecordError() const;
  bool behind(size_t leg) const;
  // Neither read nor written at run time: behind, or stale in inspect mode.
  bool missing(size_t leg) const { return (missing_mask_.load(std::memory_order_acquire) >> leg) & 1; }
  bool any_missing() const { return missing_mask_.load(std::memory_order_acquire) != 0; }
  size_t missing_count() const;

  SetDescription Describe() const;

 private:
  MetadataRecord RecordFor(size_t role, uint64_t events, uint64_t base, uint64_t faulty) const;
  Status WriteRecordSync(size_t role);
  void BumpDone(Status st);

  const std::vector<std::shared_ptr<BlockDevice>> legs_;
  const SetLayout layout_;
  const Uuid uuid_;
  const std::string magic_;
  const bool fresh_;
  const bool inspect_;
  std::vector<uint64_t> dirty_at_open_;
  const uint64_t found_events_;
  const uint64_t found_base_;
  const uint64_t found_faulty_;
  std::vector<bool> stale_;
  std::atomic<uint64_t> missing_mask_{0};  // bit per role
  mutable std::mutex mu_;
  uint64_t events_ = 0;       // GUARDED_BY(mu_)
  uint64_t base_events_ = 0;  // GUARDED_BY(mu_)
  uint64_t faulty_ = 0;       // GUARDED_BY(mu_) bit per role
  std::vector<bool> behind_;  // GUARDED_BY(mu_)
  size_t bumps_running_ = 0;  // GUARDED_BY(mu_)
  Status bump_error_;         // GUARDED_BY(mu_) sticky
  std::vector<std::function<void(Status)>> bump_waiters_;  // GUARDED_BY(mu_)
  SetDescription desc_;       // GUARDED_BY(mu_)
};

}  // namespace stablecache
