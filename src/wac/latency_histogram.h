// LatencyHistogram: log-linear buckets (16 per power of two) of durations in
// nanoseconds. One per thread, merged at the end; percentiles are accurate
// to about 6 %. Not thread-safe.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace stablecache::wac {

class LatencyHistogram {
 public:
  void Add(uint64_t ns) {
    counts_[Bucket(ns)]++;
    total_++;
  }
  void Merge(const LatencyHistogram& o) {
    for (size_t i = 0; i < kBuckets; i++) counts_[i] += o.counts_[i];
    total_ += o.total_;
  }
  uint64_t count() const { return total_; }
  // The upper bound of the bucket holding the q-quantile, in nanoseconds.
  uint64_t Percentile(double q) const {
    if (total_ == 0) return 0;
    uint64_t want = static_cast<uint64_t>(q * static_cast<double>(total_ - 1)) + 1, seen = 0;
    for (size_t i = 0; i < kBuckets; i++) {
      seen += counts_[i];
      if (seen >= want) return UpperBound(i);
    }
    return UpperBound(kBuckets - 1);
  }

 private:
  static constexpr unsigned kSub = 4;  // 2^4 = 16 buckets per octave
  static constexpr size_t kBuckets = 64 << kSub;
  static size_t Bucket(uint64_t v) {
    if (v < (1u << kSub)) return static_cast<size_t>(v);
    unsigned msb = 63 - static_cast<unsigned>(std::countl_zero(v));
    uint64_t sub = (v >> (msb - kSub)) & ((1u << kSub) - 1);
    return ((msb - kSub + 1) << kSub) + sub;
  }
  static uint64_t UpperBound(size_t b) {
    if (b < (1u << kSub)) return b;
    unsigned msb = static_cast<unsigned>(b >> kSub) + kSub - 1;
    uint64_t sub = b & ((1u << kSub) - 1);
    return ((uint64_t{1} << kSub) + sub + 1) << (msb - kSub);
  }
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
};

}  // namespace stablecache::wac
