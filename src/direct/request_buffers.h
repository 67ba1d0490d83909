// RequestBuffers: the caller's buffers of a direct request seen as one flat
// range of request bytes [0, total), for the pieces that go to bios, to
// cached pages and to zero fill.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "stablecache/bio.h"

namespace stablecache {

class RequestBuffers {
 public:
  RequestBuffers() = default;
  explicit RequestBuffers(std::vector<std::span<std::byte>> buffers);

  const std::vector<std::span<std::byte>>& buffers() const { return buffers_; }
  uint64_t total() const { return starts_.empty() ? 0 : starts_.back(); }
  // Appends segments for request bytes [from, to) to `bio`, no copy.
  void AddSegments(Bio& bio, uint64_t from, uint64_t to) const;
  // Copies request bytes [from, from + n) out to `dst`.
  void CopyOut(uint64_t from, std::byte* dst, uint64_t n) const;
  // Copies `n` bytes from `src` into request bytes [from, from + n).
  void CopyIn(uint64_t from, const std::byte* src, uint64_t n) const;
  // Zeroes request bytes [from, to).
  void Zero(uint64_t from, uint64_t to) const;

 private:
  // Calls fn(pointer, length) for each piece of [from, to), in order.
  template <typename Fn>
  void ForEach(uint64_t from, uint64_t to, Fn fn) const;

  std::vector<std::span<std::byte>> buffers_;
  std::vector<uint64_t> starts_;  // request offset of each buffer, then the total
};

}  // namespace stablecache
