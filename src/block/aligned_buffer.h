// Page-aligned scratch memory for layers (bounce copies, scrub and parity
// buffers). Aligned to 4 KiB so O_DIRECT leaves and SIMD kernels take it.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace stablecache {

inline std::shared_ptr<std::byte> AllocAligned(size_t len) {
  void* p = std::aligned_alloc(4096, (len + 4095) & ~size_t{4095});
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

}  // namespace stablecache
