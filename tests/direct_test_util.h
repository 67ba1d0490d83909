// Helpers shared by the direct-I/O tests.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "stablecache/cache.h"

namespace stablecache::directtest {

// A zeroed, 4 KiB-aligned buffer (direct I/O wants block-aligned memory).
class AlignedBuf {
 public:
  explicit AlignedBuf(size_t n)
      : n_(n), p_(static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096)), &std::free) {
    std::memset(p_.get(), 0, n_);
  }
  std::byte* data() const { return p_.get(); }
  size_t size() const { return n_; }
  std::span<std::byte> span(size_t n) const { return {p_.get(), n}; }
  std::span<std::byte> span(size_t off, size_t n) const { return {p_.get() + off, n}; }

 private:
  size_t n_;
  std::unique_ptr<std::byte, decltype(&std::free)> p_;
};

// A file over `dev` in a cache of its own (4 MiB, no periodic writeback:
// the tests drive it).
template <typename Device>
struct OpenedFile {
  std::shared_ptr<Device> dev;
  std::shared_ptr<Cache> cache;
  std::unique_ptr<File> file;
};

template <typename Device>
OpenedFile<Device> OpenOn(std::shared_ptr<Device> dev, uint64_t size, bool mappable = false) {
  OpenedFile<Device> o;
  o.dev = std::move(dev);
  CacheOptions co;
  co.capacity_bytes = 4 << 20;
  co.writeback_interval_ms = 600000;
  o.cache = *Cache::Create(co);
  auto f = o.cache->Open(o.dev, {.initial_size = size, .mappable = mappable});
  EXPECT_TRUE(f) << f.error().ToString();
  if (f) o.file = std::move(*f);
  return o;
}

inline std::vector<std::byte> ReadAll(File& f, uint64_t off, size_t n) {
  std::vector<std::byte> out(n);
  auto r = f.Read(off, out);
  EXPECT_TRUE(r) << r.error().ToString();
  return out;
}

}  // namespace stablecache::directtest
