// Shared by the integrity layer's tests: memory devices, versioned block
// patterns that name their block and version, and media rebuilt from images.
#pragma once

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "devices/memory_device.h"

namespace stablecache::integrity_test {

constexpr uint64_t kBlock = 4096;

inline std::shared_ptr<MemoryDevice> Mem(uint64_t size = 1 << 20) {
  return *MemoryDevice::Create({.size_bytes = size});
}

// A block's bytes for (block, version): the header names both, the rest is
// derived from them, so any other block's or version's bytes differ.
inline std::vector<std::byte> Pattern(uint64_t block, uint32_t version) {
  std::vector<std::byte> b(kBlock);
  std::mt19937_64 rng(block * 1000003 + version);
  for (size_t i = 0; i < kBlock; i += 8) {
    uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  std::memcpy(b.data(), &block, 8);
  std::memcpy(b.data() + 8, &version, 4);
  return b;
}

inline std::shared_ptr<MemoryDevice> FromImage(const std::vector<std::byte>& image) {
  auto m = Mem(image.size());
  m->WriteRaw(0, image.data(), image.size());
  return m;
}

}  // namespace stablecache::integrity_test
