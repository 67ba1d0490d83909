// The write side of the page cache: the stable-write policies, extension and
// truncation.
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "cache/file_handle.h"
#include "writeback/writeback.h"

namespace stablecache {

namespace {

// Returns the page at idx, locked, referenced and attached to the index.
// It is uptodate unless `full` (the caller overwrites all of it).
Result<PageRef> LockPageForWrite(AddressSpace& as, uint64_t idx, bool full) {
  for (;;) {
    bool created = false;
    auto r = as.FindOrCreate(idx, &created);
    if (!r) return Err(r.error());
    PageRef p = std::move(*r);
    if (!created) {
      p->Lock();
      if (p->Test(Page::kDetached)) {
        p->Unlock();
        continue;
      }
    }
    if (!full && !p->Test(Page::kUptodate)) {
      Page* run[1] = {p.get()};
      Status st = as.FillLocked(run, idx);
      if (!st.ok()) {
        as.DetachLocked(p.get());
        p->Unlock();
        return Err(st);
      }
    }
    return p;
  }
}

// Fork: give the writer a copy; the old frame stays with the I/O and is
// freed when its last reference (the bio's) goes. Returns an empty ref when
// no frame is free right now (the caller waits instead).
PageRef ForkPage(AddressSpace& as, Page* old_page, bool full) {
  CacheImpl& cache = as.cache();
  Page* copy = cache.TryAllocPage();
  if (copy == nullptr) return {};
  // The copy is published locked; a full overwrite publishes it !Uptodate so
  // that lock-free readers wait for our bytes instead of reading garbage.
  as.PrepareNewPage(copy);
  if (!full) copy->SetFlags(Page::kUptodate);
  if (full) {
    cache.counters().fork_copies_skipped.fetch_add(1, std::memory_order_relaxed);
  } else {
    std::memcpy(as.pool().Data(copy), as.pool().Data(old_page), kFrameSize);
  }
  bool replaced = as.ReplacePage(old_page, copy);
  (void)replaced;  // we hold the old page's lock and it is attached
  // A failed write may have re-dirtied the old page; the copy carries it
  // now. Detached first, so no completion can dirty the old frame again.
  as.TakeDirty(old_page);
  cache.counters().forks.fetch_add(1, std::memory_order_relaxed);
  return as.pool().Adopt(copy);
}

// Applies the stable-write policy to a locked page before the writer stores
// into it. Returns the page to write (the same one, or a fork copy).
PageRef StableWritePrepare(AddressSpace& as, PageRef p, bool full) {
  uint64_t w = p->Load();
  if (!(w & Page::kWriteback)) return p;
  auto& c = as.cache().counters();
  switch (as.policy()) {
    case StablePolicy::kNone:
    case StablePolicy::kBounce:
    case StablePolicy::kAuto:  // resolved at open; never seen here
      return p;
    case StablePolicy::kFork:  // never on a mappable file (Open makes it kBounce)
      if (Page::Pins(w) == 0) {
        if (PageRef copy = ForkPage(as, p.get(), full)) {
          p->Unlock();
          return copy;
        }
      }
      [[fallthrough]];  // pinned by someone outside the cache, or no frame
    case StablePolicy::kWait:
      c.stable_waits.fetch_add(1, std::memory_order_relaxed);
      p->WaitWriteback();
      return p;
  }
  return p;
}

}  // namespace

Status WritePagesLocked(AddressSpace& as, uint64_t offset, std::span<const std::byte> data) {
  PagePool& pool = as.pool();
  size_t done = 0;
  while (done < data.size()) {
    uint64_t pos = offset + done;
    uint64_t idx = pos >> 12;
    size_t in_page = pos & (kFrameSize - 1);
    size_t chunk = std::min<size_t>(kFrameSize - in_page, data.size() - done);
    bool full = chunk == kFrameSize;
    auto locked = LockPageForWrite(as, idx, full);
    if (!locked) return locked.error();
    PageRef p = StableWritePrepare(as, std::move(*locked), full);
    std::memcpy(pool.Data(p.get()) + in_page, data.data() + done, chunk);
    p->SetFlags(Page::kUptodate | Page::kReferenced);
    as.MarkDirty(p.get());
    p->Unlock();
    done += chunk;
  }
  return Status::Ok();
}

Status ExtendLocked(AddressSpace& as, uint64_t new_size) {
  const uint64_t old = as.size();
  // Bytes past the old EOF must read as zero, from the cache and, once
  // synced, from the device. A cached last page holds zeros there, but only
  // in memory, and an uncached one may have stale bytes on the device; so
  // the tail is written as zeros either way, which dirties the page.
  if ((old & (kFrameSize - 1)) != 0) {
    static const std::byte kZeros[kFrameSize] = {};
    SC_RETURN_IF_ERROR(WritePagesLocked(as, old, {kZeros, kFrameSize - (old & (kFrameSize - 1))}));
  }
  if (((new_size + kFrameSize - 1) >> 12) > as.EofPages()) as.MarkHolesExposed();
  SC_RETURN_IF_ERROR(as.ResizeStore(new_size));  // a mappable file's memfd first
  as.set_size(new_size);
  return Status::Ok();
}

Status MaterializeHoles(AddressSpace& as) {
  // One materializer at a time, and the exposed mark is cleared only once
  // every hole is on its way: a Sync that stops early (a failed write, the
  // dirty limit under failing writeback) leaves it for the next Sync, and a
  // second Sync never returns before the first one's holes are dirty.
  std::lock_guard lk(as.holes_mu());
  if (!as.holes_exposed().load()) return Status::Ok();
  const uint64_t eof = as.EofPages();
  size_t batch = 0;
  for (uint64_t idx = 0; idx < eof; idx++) {
    if (!as.IsHole(idx)) continue;
    // The fill of a hole is zeros; a cached page keeps its bytes. Either
    // way the page goes out dirty. The valid bit changes only under the
    // page lock (writeback), so the re-check below is exact.
    auto p = LockPageForWrite(as, idx, false);
    if (!p) return p.error();
    if (as.IsHole(idx)) {
      (*p)->SetFlags(Page::kUptodate);
      as.MarkDirty(p->get());
    }
    (*p)->Unlock();
    if (++batch % as.cache().Options().max_bio_pages == 0) {
      SC_RETURN_IF_ERROR(as.cache().BalanceDirtyPages(as));
    }
  }
  as.holes_exposed().store(false);
  return Status::Ok();
}

Status TruncateLocked(AddressSpace& as, uint64_t new_size) {
  const uint64_t old_pages = as.EofPages();
  // 1. The partial last page: zero its tail, in the cache and on the device.
  //    First, while the size is unchanged: this is the step that can fail
  //    (the page may have to be read), and a failed truncate changes
  //    nothing.
  if ((new_size & (kFrameSize - 1)) != 0) {
    static const std::byte kZeros[kFrameSize] = {};
    const uint64_t tail_end = std::min<uint64_t>((new_size | (kFrameSize - 1)) + 1, as.size());
    SC_RETURN_IF_ERROR(WritePagesLocked(as, new_size, {kZeros, tail_end - new_size}));
  }
  // A Sync under way must not record a size above this one: bytes past it
  // stop being file data, and if the file grows again before that Sync's
  // flush, the medium may still hold the old bytes there
  // (cache/size_record.h).
  as.size_record().NoteTruncate(new_size);
  as.set_size(new_size);
  // 2. Whole pages past EOF leave the cache, dirty or not; fork copies
  //    still under I/O there land before the hole does.
  const uint64_t first = as.EofPages();
  as.DropPagesFrom(first);
  // A mappable file's memfd shrinks once its pages are gone: mapped
  // accesses past the new end now get SIGBUS, as on Linux. Shrinking
  // cannot fail on a memfd; if it did, accesses there still fault to the
  // mapping's handler, which finds them past EOF.
  (void)as.ResizeStore(new_size);
  // 3. Their device blocks are no longer file data.
  as.MarkHoles(first, std::max(old_pages, first));
  return Status::Ok();
}

}  // namespace stablecache
