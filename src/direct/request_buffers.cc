#include "direct/request_buffers.h"

#include <algorithm>
#include <cstring>

namespace stablecache {

RequestBuffers::RequestBuffers(std::vector<std::span<std::byte>> buffers) : buffers_(std::move(buffers)) {
  uint64_t at = 0;
  for (const auto& b : buffers_) {
    starts_.push_back(at);
    at += b.size();
  }
  starts_.push_back(at);
}

template <typename Fn>
void RequestBuffers::ForEach(uint64_t from, uint64_t to, Fn fn) const {
  if (from >= to) return;
  // The buffer holding `from`: the last start at or below it.
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end() - 1, from) - starts_.begin()) - 1;
  for (uint64_t at = from; at < to; i++) {
    const uint64_t in = at - starts_[i];
    const uint64_t n = std::min<uint64_t>(buffers_[i].size() - in, to - at);
    if (n > 0) fn(buffers_[i].data() + in, n);
    at += n;
  }
}

void RequestBuffers::AddSegments(Bio& bio, uint64_t from, uint64_t to) const {
  ForEach(from, to, [&](std::byte* p, uint64_t n) { bio.AddSegment(p, static_cast<uint32_t>(n)); });
}

void RequestBuffers::CopyOut(uint64_t from, std::byte* dst, uint64_t n) const {
  ForEach(from, from + n, [&](std::byte* p, uint64_t k) {
    std::memcpy(dst, p, k);
    dst += k;
  });
}

void RequestBuffers::CopyIn(uint64_t from, const std::byte* src, uint64_t n) const {
  ForEach(from, from + n, [&](std::byte* p, uint64_t k) {
    std::memcpy(p, src, k);
    src += k;
  });
}

void RequestBuffers::Zero(uint64_t from, uint64_t to) const {
  ForEach(from, to, [](std::byte* p, uint64_t k) { std::memset(p, 0, k); });
}

}  // namespace stablecache
