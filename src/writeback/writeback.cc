#include "writeback/writeback.h"

#include <cstring>
#include <memory>
#include <vector>

#include "cache/address_space.h"
#include "cache/cache_impl.h"

namespace stablecache {

namespace {

struct WritebackEntry {
  Page* page;       // one reference, held until completion
  uint32_t bounce;  // kNoFrame unless policy bounce copied it
};

struct WritebackBatch {
  std::shared_ptr<AddressSpace> as;
  std::shared_ptr<InFlightBatches> tracker;  // keeps the cache from going before we are done
  uint64_t first_idx = 0;
  std::vector<WritebackEntry> entries;
};

void EndBatch(WritebackBatch& b, const Status& st) {
  AddressSpace& as = *b.as;
  PagePool& pool = as.pool();
  if (!st.ok()) as.RecordWritebackError(st);
  as.set_writeback_failing(!st.ok());
  for (const WritebackEntry& e : b.entries) {
    if (!st.ok()) as.Redirty(e.page);
    if (e.bounce != kNoFrame) pool.FreeIoFrame(e.bounce);
    as.RemoveInFlight(e.page->Index());
    e.page->EndWriteback();
    pool.Put(e.page);
  }
  as.cache().counters().writeback.fetch_sub(static_cast<int64_t>(b.entries.size()),
                                            std::memory_order_relaxed);
  as.cache().NotifyProgress();
}

void SubmitBatch(std::unique_ptr<WritebackBatch> batch) {
  AddressSpace& as = *batch->as;
  PagePool& pool = as.pool();
  auto bio = Bio::Make(BioOp::kWrite, batch->first_idx << 12, Stability::kStable);
  for (const WritebackEntry& e : batch->entries)
    bio->AddSegment(e.bounce != kNoFrame ? pool.FrameData(e.bounce) : pool.Data(e.page), kFrameSize);
  auto& c = as.cache().counters();
  c.pages_written.fetch_add(batch->entries.size(), std::memory_order_relaxed);
  c.writeback.fetch_add(static_cast<int64_t>(batch->entries.size()), std::memory_order_relaxed);
  WritebackBatch* raw = batch.release();
  raw->tracker = as.cache().batches();
  raw->tracker->Start();
  bio->on_complete = [raw](BioPtr, Status st) {
    std::unique_ptr<WritebackBatch> b(raw);
    EndBatch(*b, st);
    // The space may go with this reference (its pages go back to the
    // pool), so before we tell the cache we are done with it.
    b->as.reset();
    std::shared_ptr<InFlightBatches> tracker = std::move(b->tracker);
    tracker->Done();
  };
  as.device().Submit(std::move(bio));
}

}  // namespace

size_t WritebackRange(AddressSpace& as, uint64_t first, uint64_t last, WritebackMode mode,
                      size_t max_pages) {
  const bool sync = mode == WritebackMode::kSync;
  const size_t max_bio = as.cache().Options().max_bio_pages;
  PagePool& pool = as.pool();
  std::unique_ptr<WritebackBatch> batch;
  size_t submitted = 0;
  auto flush_batch = [&] {
    if (batch && !batch->entries.empty()) SubmitBatch(std::move(batch));
    batch.reset();
  };

  for (uint64_t idx : as.DirtyIndices(first, last, max_pages)) {
    PageRef p = as.FindGet(idx);
    if (!p) continue;
    // 1. Lock.
    if (!p->TryLock()) {
      if (!sync) continue;
      // The holder may be a flusher asleep for a bounce frame that our own
      // unsubmitted batch holds: submit it before we sleep.
      flush_batch();
      p->Lock();
    }
    if (p->Test(Page::kDetached)) {
      p->Unlock();
      continue;
    }
    // 2. One write per page number in flight.
    bool skip = false;
    while (PageRef prior = as.InFlight(idx)) {
      if (!sync) {
        skip = true;
        break;
      }
      flush_batch();  // our own batch may hold the write we wait for
      prior->WaitWriteback();
    }
    // 3. Only dirty pages; pages past EOF are truncated data.
    if (skip || !p->Test(Page::kDirty)) {
      p->Unlock();
      continue;
    }
    if (idx >= as.EofPages()) {
      as.TakeDirty(p.get());
      p->Unlock();
      continue;
    }
    // 4. Bounce policy: the I/O gets a private copy. The page stays Dirty
    //    (and locked) while we may sleep for a frame, so a Sync meanwhile
    //    finds it dirty and waits on its lock.
    // page_mkclean: a mapped page is write-protected in every mapping
    //    before its bytes are taken, so a later store faults, and its
    //    page_mkwrite (which needs this page's lock) marks it dirty again.
    if (as.mappable()) as.WriteProtectViews(idx);
    uint32_t bounce = kNoFrame;
    if (as.BouncesWriteback()) {
      bounce = pool.TryAllocIoFrame();
      if (bounce == kNoFrame) {
        flush_batch();  // never sleep on the reserve while holding frames of it
        bounce = pool.AllocIoFrame();
      }
      std::memcpy(pool.FrameData(bounce), pool.Data(p.get()), kFrameSize);
      as.cache().counters().bytes_bounced.fetch_add(kFrameSize, std::memory_order_relaxed);
    }
    // 5. Writeback on and in flight before Dirty clears: at every instant a
    //    Sync sees the page as dirty or as in flight. Then unlock.
    p->StartWriteback();
    as.AddInFlight(idx, p.get());
    as.TakeDirty(p.get());
    as.MarkValid(idx);
    p->Unlock();
    // 6. Batch.
    if (batch && (idx != batch->first_idx + batch->entries.size() || batch->entries.size() >= max_bio))
      flush_batch();
    if (!batch) {
      batch = std::make_unique<WritebackBatch>();
      batch->as = as.shared_from_this();
      batch->first_idx = idx;
    }
    batch->entries.push_back(WritebackEntry{p.release(), bounce});
    submitted++;
  }
  flush_batch();
  return submitted;
}

void WaitWritebackRange(AddressSpace& as, uint64_t first, uint64_t last) {
  for (PageRef& p : as.InFlightRange(first, last)) p->WaitWriteback();
}

}  // namespace stablecache
