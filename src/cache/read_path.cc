// The read side of the page cache: lookups, misses and readahead.
#include <vector>

#include <fmt/format.h>

#include "cache/file_handle.h"

namespace stablecache {

namespace {

// A page exists but is not uptodate: someone is filling it, or a fill failed.
Result<bool> WaitOrFill(AddressSpace& as, Page* p, uint64_t idx) {
  p->Lock();
  if (p->Test(Page::kDetached)) {
    p->Unlock();
    return false;  // gone: look again
  }
  Status st;
  if (!p->Test(Page::kUptodate)) {
    Page* run[1] = {p};
    st = as.FillLocked(run, idx);
    if (!st.ok()) as.DetachLocked(p);
  }
  p->Unlock();
  if (!st.ok()) return Err(st);
  return true;
}

// Creates the missing page at idx plus a readahead window, fills them with
// one bio per contiguous run, and returns the page at idx.
Result<PageRef> FillMiss(AddressSpace& as, PageRef first, uint64_t idx) {
  std::vector<PageRef> run;
  run.push_back(std::move(first));
  const uint64_t eof = as.EofPages();
  const uint32_t window = as.ReadaheadWindow(idx);
  for (uint32_t k = 1; k < window && idx + k < eof; k++) {
    PageRef q = as.TryCreate(idx + k);
    if (!q) break;  // cached already, or no free frame: readahead is optional
    run.push_back(std::move(q));
  }
  std::vector<Page*> pages;
  for (auto& r : run) pages.push_back(r.get());
  Status st = as.FillLocked(pages, idx);
  as.cache().counters().readahead_pages.fetch_add(run.size() - 1, std::memory_order_relaxed);
  for (auto& r : run) {
    if (r->Test(Page::kError)) as.DetachLocked(r.get());
    r->Unlock();
  }
  if (run[0]->Test(Page::kError)) return Err(st);
  return std::move(run[0]);
}

}  // namespace

Result<PageRef> GetUptodatePage(AddressSpace& as, uint64_t idx) {
  auto& c = as.cache().counters();
  for (;;) {
    PageRef p = as.FindGet(idx);
    if (p && p->Test(Page::kUptodate)) {
      c.hits.fetch_add(1, std::memory_order_relaxed);
      return p;
    }
    c.misses.fetch_add(1, std::memory_order_relaxed);
    if (p) {
      auto ok = WaitOrFill(as, p.get(), idx);
      if (!ok) return Err(ok.error());
      if (*ok) return p;
      continue;
    }
    bool created = false;
    auto np = as.FindOrCreate(idx, &created);
    if (!np) return Err(np.error());
    if (!created) continue;  // raced with another filler
    return FillMiss(as, std::move(*np), idx);
  }
}

}  // namespace stablecache
