// LayerCounters: the atomic counters behind a device's LayerStats.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "stablecache/block_device.h"

namespace stablecache {

struct LayerCounters {
  std::atomic<uint64_t> bios{0}, bytes_read{0}, bytes_written{0}, bytes_bounced{0};
  std::atomic<uint64_t> errors{0}, integrity_errors{0}, modified_in_flight{0}, unstable_modified{0};
  std::atomic<uint64_t> repairs{0}, degraded_reads{0}, mirror_divergence{0}, parity_mismatch{0};
  std::atomic<uint64_t> metadata_writes{0}, metadata_flushes{0};

  void CountBio(const Bio& bio) {
    bios.fetch_add(1, std::memory_order_relaxed);
    if (bio.op == BioOp::kRead) bytes_read.fetch_add(bio.Length(), std::memory_order_relaxed);
    if (bio.op == BioOp::kWrite) bytes_written.fetch_add(bio.Length(), std::memory_order_relaxed);
  }
  LayerStats Snapshot(std::string name) const {
    LayerStats s;
    s.name = std::move(name);
    s.bios = bios.load();
    s.bytes_read = bytes_read.load();
    s.bytes_written = bytes_written.load();
    s.bytes_bounced = bytes_bounced.load();
    s.errors = errors.load();
    s.integrity_errors = integrity_errors.load();
    s.modified_in_flight = modified_in_flight.load();
    s.unstable_modified = unstable_modified.load();
    s.repairs = repairs.load();
    s.degraded_reads = degraded_reads.load();
    s.mirror_divergence = mirror_divergence.load();
    s.parity_mismatch = parity_mismatch.load();
    s.metadata_writes = metadata_writes.load();
    s.metadata_flushes = metadata_flushes.load();
    return s;
  }
};

// The prologue of a device's Submit: checks the bio against the device
// (CheckBio) and counts it. Returns false after completing a bad bio with
// the error; the caller then returns.
// The bio keeps `dev` alive until it completes (see BlockDevice). Devices
// not owned by a shared_ptr (a test's stack object) are left alone.
inline void HoldDeviceWhileInFlight(const BlockDevice& dev, Bio& bio) {
  if (auto self = dev.weak_from_this().lock()) bio.keep_alive.push_back(std::const_pointer_cast<BlockDevice>(self));
}

inline bool AdmitBio(const BlockDevice& dev, BioPtr& bio, LayerCounters& counters) {
  HoldDeviceWhileInFlight(dev, *bio);
  if (Status st = CheckBio(dev, *bio); !st.ok()) {
    counters.errors.fetch_add(1, std::memory_order_relaxed);
    Bio::Complete(std::move(bio), st);
    return false;
  }
  counters.CountBio(*bio);
  return true;
}

}  // namespace stablecache
