// Helpers shared by the direct-I/O tests.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

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

}  // namespace stablecache::directtest
