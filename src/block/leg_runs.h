// LegRuns: groups 4 KiB chunk I/Os by leg into runs of consecutive leg
// offsets, so a fan-out layer sends one bio per run instead of one per
// chunk. Each chunk carries a caller tag (e.g. its block index) so a failed
// run can be mapped back to the chunks it held. Not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "stablecache/bio.h"

namespace stablecache {

class LegRuns {
 public:
  struct Run {
    size_t leg;
    uint64_t offset;  // on the leg
    std::vector<BioSegment> segments;
    std::vector<uint64_t> tags;
    uint64_t end() const { return offset + segments.size() * uint64_t{4096}; }
  };

  explicit LegRuns(size_t legs) : open_(legs, SIZE_MAX) {}

  void Add(size_t leg, uint64_t offset, std::byte* chunk, uint64_t tag) {
    size_t& o = open_[leg];
    if (o == SIZE_MAX || runs_[o].end() != offset) {
      o = runs_.size();
      runs_.push_back(Run{leg, offset, {}, {}});
    }
    runs_[o].segments.push_back(BioSegment{chunk, 4096});
    runs_[o].tags.push_back(tag);
  }
  std::vector<Run>& runs() { return runs_; }

 private:
  std::vector<size_t> open_;  // per leg: index of the run still growing
  std::vector<Run> runs_;
};

}  // namespace stablecache
