// Files over memory devices that hold writes (late copy with manual
// release): Open of a blank device formats its file size record and waits
// for that write, which such a device holds. So the medium is formatted
// first: the same stack is built over plain memory devices of the same
// sizes, a file is opened and closed there, and each medium is copied into
// the held device. Open of the real stack then only reads the record.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "devices/memory_device.h"
#include "stablecache/cache.h"

namespace stablecache::testing {

using StackBuilder = std::function<std::shared_ptr<BlockDevice>(const std::vector<std::shared_ptr<BlockDevice>>&)>;

inline void PreformatHeld(const std::vector<MemoryDevice*>& held, const StackBuilder& build,
                          uint64_t initial_size = 0) {
  std::vector<std::shared_ptr<MemoryDevice>> plain;
  std::vector<std::shared_ptr<BlockDevice>> leaves;
  for (MemoryDevice* m : held) {
    plain.push_back(*MemoryDevice::Create({.size_bytes = m->Info().size_bytes}));
    leaves.push_back(plain.back());
  }
  {
    auto cache = *Cache::Create({.capacity_bytes = 1 << 20, .io_reserve_frames = 16});
    auto f = cache->Open(build(leaves), {.initial_size = initial_size});
    if (!f || !(*f)->Close().ok()) return;  // the test's own Open reports it
  }
  for (size_t i = 0; i < held.size(); i++) {
    std::vector<std::byte> image(held[i]->Info().size_bytes);
    plain[i]->ReadRaw(0, image.data(), image.size());
    held[i]->WriteRaw(0, image.data(), image.size());
  }
}

// A single held memory device with nothing above it.
inline void PreformatHeld(MemoryDevice& held, uint64_t initial_size = 0) {
  PreformatHeld({&held}, [](const auto& leaves) { return leaves[0]; }, initial_size);
}

}  // namespace stablecache::testing
