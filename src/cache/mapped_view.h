// MappedView: what the cache needs from a user mapping of a file
// (mapping/mapping.h implements it). The cache calls it; it never calls back
// up into the mapping's owner.
#pragma once

#include <cstdint>

namespace stablecache {

class MappedView {
 public:
  virtual ~MappedView() = default;
  // page_mkclean: write-protects file page `idx` in this view if the view
  // covers it, so that the next store faults (and runs page_mkwrite) before
  // it lands. Returns once no store can land without that fault.
  virtual void WriteProtect(uint64_t idx) = 0;
  // File page `idx` is in the cache again (its page was just indexed): a
  // SIGBUS the view raised for it (a read error) must not outlive that.
  virtual void PageIndexed(uint64_t idx) = 0;
};

}  // namespace stablecache
