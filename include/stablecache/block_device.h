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
  uint64_t modified_in_flight = 0;   // verify: blocks changed during I/O
};

class BlockDevice {
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

  // Appends this layer's counters, then those of the layers below.
  virtual void CollectStats(std::vector<LayerStats>& out) const = 0;
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
