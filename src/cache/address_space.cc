#include "cache/address_space.h"

#include <cassert>
#include <cstring>

#include <fmt/format.h>

#include "cache/cache_impl.h"

namespace stablecache {

AddressSpace::AddressSpace(CacheImpl& cache, std::shared_ptr<BlockDevice> dev, const SizeRecordState& record,
                           StablePolicy policy, std::unique_ptr<FileStore> store)
    : cache_(cache),
      pool_(cache.pool()),
      dev_(std::move(dev)),
      policy_(policy),
      device_pages_(FileLimit(dev_->Info().size_bytes) >> 12),
      size_(record.size),
      size_record_(record),
      index_(cache.pool(), device_pages_),
      store_(std::move(store)) {
  size_t words = (device_pages_ + 63) / 64;
  valid_bits_ = std::make_unique<std::atomic<uint64_t>[]>(words);
  for (size_t i = 0; i < words; i++) valid_bits_[i].store(0, std::memory_order_relaxed);
  for (uint64_t p = 0; p < EofPages(); p++) MarkValid(p);
}

AddressSpace::~AddressSpace() { DropAllPages(); }

// ---------------------------------------------------------------- index

// A fresh page (one reference, from the pool) becomes locked with a second
// reference for the index. Relative updates only, never a store: a lookup
// still holding this descriptor from its previous life may have taken a
// reference the moment the pool handed it out (get-unless-zero sees one),
// and a store would erase it (ABA).
void AddressSpace::PrepareNewPage(Page* p) {
  p->word.fetch_add(Page::kLocked + Page::kRefOne, std::memory_order_acq_rel);
}

bool AddressSpace::Insert(uint64_t idx, Page* p) {
  if (!store_) return index_.Insert(idx, p);
  p->data = store_->Page(idx);
  {
    std::lock_guard lk(store_mu_);  // after the punch of a page evicted from idx
    if (!index_.Insert(idx, p)) return false;
  }
  std::lock_guard lk(views_mu_);
  for (MappedView* v : views_) v->PageIndexed(idx);
  return true;
}

bool AddressSpace::RemoveAndPunch(uint64_t idx, Page* p) {
  if (!store_) return index_.Remove(idx, p);
  std::lock_guard lk(store_mu_);
  if (!index_.Remove(idx, p)) return false;
  store_->Punch(idx);
  return true;
}

// Undoes PrepareNewPage for a page that never made it into the index.
void AddressSpace::AbandonNewPage(Page* p) {
  p->word.fetch_sub(Page::kLocked + Page::kRefOne, std::memory_order_acq_rel);
  pool_.Put(p);
}

Result<PageRef> AddressSpace::FindOrCreate(uint64_t idx, bool* created) {
  for (;;) {
    if (Page* p = index_.FindGet(idx)) {
      *created = false;
      return pool_.Adopt(p);
    }
    auto np = cache_.AllocPage();
    if (!np) return Err(np.error());
    Page* p = *np;
    p->owner.store(this, std::memory_order_relaxed);
    p->SetIndex(idx);
    PrepareNewPage(p);
    if (!Insert(idx, p)) {
      AbandonNewPage(p);  // lost the race
      continue;
    }
    if (WithdrawIfDirectWrite(p)) {
      direct_.WaitUnblocked(idx);
      continue;
    }
    *created = true;
    return pool_.Adopt(p);
  }
}

PageRef AddressSpace::TryCreate(uint64_t idx) {
  Page* p = cache_.TryAllocPage();
  if (p == nullptr) return {};
  p->owner.store(this, std::memory_order_relaxed);
  p->SetIndex(idx);
  PrepareNewPage(p);
  if (!Insert(idx, p)) {
    AbandonNewPage(p);
    return {};
  }
  if (WithdrawIfDirectWrite(p)) return {};  // readahead is optional
  return pool_.Adopt(p);
}

// A page indexed inside a direct write in flight could be filled from the
// device before the write lands and then hide it: take it out again (it is
// still locked and !Uptodate, so whoever found it meanwhile retries).
bool AddressSpace::WithdrawIfDirectWrite(Page* p) {
  if (!direct_.Blocks(p->Index())) return false;
  DetachLocked(p);
  p->Unlock();
  pool_.Put(p);  // the creator's reference
  return true;
}

bool AddressSpace::ReplacePage(Page* old_page, Page* copy) {
  copy->owner.store(this, std::memory_order_relaxed);
  copy->SetIndex(old_page->Index());
  if (!index_.Replace(old_page->Index(), old_page, copy)) return false;
  old_page->SetFlags(Page::kDetached);
  pool_.Put(old_page);  // the index's reference
  return true;
}

void AddressSpace::DetachLocked(Page* p) {
  if (RemoveAndPunch(p->Index(), p)) {
    p->SetFlags(Page::kDetached);
    pool_.Put(p);
  }
}

// The scanner found `p` without a reference, so its descriptor may have
// been freed and handed out again since: it may be a fresh page its creator
// has not indexed yet. Claiming it then (setting Detached|Locked on a page
// that is not in the slot) poisoned it for good: the creator indexed a
// detached page that every lookup spun on, and its own "+Locked" carried
// into Uptodate. So the evictor first takes a reference through the index,
// which proves the page is indexed here and keeps it from being recycled,
// and claims it only if the index's reference and its own are the only
// ones. A claimed page holds Locked, so no other remover (they all hold the
// page lock) can take it out of the slot first.
bool AddressSpace::TryEvict(Page* p) {
  const uint64_t idx = p->Index();
  PageRef held = FindGet(idx);
  if (held.get() != p) return false;
  uint64_t w = p->Load();
  constexpr uint64_t kBusy = Page::kLocked | Page::kDirty | Page::kWriteback | Page::kDetached;
  if ((w & kBusy) || Page::Refs(w) != 2 || Page::Pins(w) != 0) return false;
  if (!p->word.compare_exchange_strong(w, w | Page::kDetached | Page::kLocked, std::memory_order_acq_rel))
    return false;
  const bool removed = RemoveAndPunch(idx, p);
  assert(removed && "a claimed page leaves the slot only through its claimer");
  if (removed) pool_.Put(p);  // the index's reference; `held` drops ours
  return removed;
}

// ---------------------------------------------------------------- views

void AddressSpace::AddView(MappedView* v) {
  std::lock_guard lk(views_mu_);
  views_.push_back(v);
}

void AddressSpace::RemoveView(MappedView* v) {
  std::lock_guard lk(views_mu_);
  std::erase(views_, v);
}

void AddressSpace::WriteProtectViews(uint64_t idx) {
  std::lock_guard lk(views_mu_);
  for (MappedView* v : views_) v->WriteProtect(idx);
}

Status AddressSpace::ResizeStore(uint64_t size_bytes) { return store_ ? store_->Resize(size_bytes) : Status::Ok(); }

// ---------------------------------------------------------------- filling

Status AddressSpace::FillLocked(std::span<Page* const> run, uint64_t first) {
  const uint64_t size = this->size();
  Status result;
  size_t i = 0;
  while (i < run.size()) {
    uint64_t idx = first + i;
    if (store_ && idx >= store_->pages()) {
      // Past the memfd's end: touching it would raise SIGBUS here. Only a
      // page past EOF can be there, and no caller fills one.
      run[i]->SetFlags(Page::kError);
      result.Update(Status::OutOfRange(fmt::format("page {} is past the end of the file's page store", idx)));
      i++;
      continue;
    }
    if (IsHole(idx) || (idx << 12) >= size) {
      std::memset(pool_.Data(run[i]), 0, kFrameSize);
      run[i]->SetFlags(Page::kUptodate);
      i++;
      continue;
    }
    size_t j = i;
    auto bio = Bio::Make(BioOp::kRead, idx << 12, Stability::kStable);
    while (j < run.size() && !IsHole(first + j) && ((first + j) << 12) < size) {
      bio->AddSegment(pool_.Data(run[j]), kFrameSize);
      j++;
    }
    Status st = SubmitAndWait(*dev_, std::move(bio));
    for (size_t k = i; k < j; k++) {
      if (!st.ok()) {
        run[k]->SetFlags(Page::kError);
        continue;
      }
      uint64_t page_start = (first + k) << 12;
      if (page_start + kFrameSize > size) {
        // Bytes past EOF are never file data: keep them zero in the cache.
        std::memset(pool_.Data(run[k]) + (size - page_start), 0, page_start + kFrameSize - size);
      }
      run[k]->SetFlags(Page::kUptodate);
    }
    result.Update(st);
    i = j;
  }
  return result;
}

// ---------------------------------------------------------------- dirty

// The Dirty flag of a page changes only under state_mu_, together with the
// dirty set and the cache's count, so the three never disagree. A detached
// page (a fork's old frame, a page truncated away) is never dirtied: a
// failed write re-dirtying it races the fork that detaches it, and the
// count it took would never be given back.
bool AddressSpace::MarkDirty(Page* p) {
  if (p->Test(Page::kDirty)) return true;
  std::lock_guard lk(state_mu_);
  uint64_t w = p->Load();
  do {
    if (w & Page::kDetached) return false;
    if (w & Page::kDirty) return true;
  } while (!p->word.compare_exchange_weak(w, w | Page::kDirty, std::memory_order_acq_rel));
  dirty_.insert(p->Index());
  cache_.counters().dirty.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool AddressSpace::TakeDirty(Page* p) {
  if (!p->Test(Page::kDirty)) return false;
  std::lock_guard lk(state_mu_);
  if (!(p->TestAndClear(Page::kDirty) & Page::kDirty)) return false;
  dirty_.erase(p->Index());
  cache_.counters().dirty.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void AddressSpace::Redirty(Page* p) {
  // A fork copy supersedes a detached page; MarkDirty refuses it atomically.
  (void)MarkDirty(p);
}

std::vector<uint64_t> AddressSpace::DirtyIndices(uint64_t first, uint64_t last, size_t limit) {
  std::vector<uint64_t> out;
  std::lock_guard lk(state_mu_);
  for (auto it = dirty_.lower_bound(first); it != dirty_.end() && *it <= last && out.size() < limit; ++it)
    out.push_back(*it);
  return out;
}

size_t AddressSpace::dirty_count() const {
  std::lock_guard lk(state_mu_);
  return dirty_.size();
}

// ---------------------------------------------------------------- in flight

PageRef AddressSpace::InFlight(uint64_t idx) {
  std::lock_guard lk(state_mu_);
  auto it = writeback_.find(idx);
  if (it == writeback_.end()) return {};
  it->second->Get();
  return pool_.Adopt(it->second);
}

void AddressSpace::AddInFlight(uint64_t idx, Page* p) {
  p->Get();
  std::lock_guard lk(state_mu_);
  writeback_.emplace(idx, p);
}

void AddressSpace::RemoveInFlight(uint64_t idx) {
  Page* p = nullptr;
  {
    std::lock_guard lk(state_mu_);
    auto it = writeback_.find(idx);
    if (it == writeback_.end()) return;
    p = it->second;
    writeback_.erase(it);
  }
  pool_.Put(p);
}

bool AddressSpace::NothingInFlight() const {
  std::lock_guard lk(state_mu_);
  return writeback_.empty();
}

std::vector<PageRef> AddressSpace::InFlightRange(uint64_t first, uint64_t last) {
  std::vector<PageRef> out;
  std::lock_guard lk(state_mu_);
  for (auto it = writeback_.lower_bound(first); it != writeback_.end() && it->first <= last; ++it) {
    it->second->Get();
    out.push_back(pool_.Adopt(it->second));
  }
  return out;
}

// ---------------------------------------------------------------- holes

bool AddressSpace::IsHole(uint64_t idx) const {
  if (idx >= device_pages_) return true;
  return !(valid_bits_[idx / 64].load(std::memory_order_acquire) & (1ull << (idx % 64)));
}

void AddressSpace::MarkValid(uint64_t idx) {
  if (idx < device_pages_) valid_bits_[idx / 64].fetch_or(1ull << (idx % 64), std::memory_order_acq_rel);
}

void AddressSpace::MarkHoles(uint64_t first, uint64_t end) {
  for (uint64_t i = first; i < end && i < device_pages_; i++)
    valid_bits_[i / 64].fetch_and(~(1ull << (i % 64)), std::memory_order_acq_rel);
}

// ---------------------------------------------------------------- errors

void AddressSpace::RecordWritebackError(const Status& st) {
  errseq_.Set(st.err() != 0 ? st.err() : EIO);
  writeback_errors_.fetch_add(1, std::memory_order_acq_rel);
  cache_.counters().writeback_errors.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk(err_mu_);
  last_error_ = st;
}

Status AddressSpace::LastWritebackError() const {
  std::lock_guard lk(err_mu_);
  return last_error_;
}

// ---------------------------------------------------------------- readahead

uint32_t AddressSpace::ReadaheadWindow(uint64_t idx) {
  const uint32_t max = cache_.Options().readahead_pages;
  if (max <= 1) return 1;
  uint64_t expected = ra_last_.load(std::memory_order_relaxed);
  uint32_t w = 1;
  if (idx == expected) {
    w = std::min<uint32_t>(max, std::max<uint32_t>(4, ra_window_.load(std::memory_order_relaxed) * 2));
  } else if (idx > 0 && FindGet(idx - 1)) {
    w = 4;  // a sequential start: the previous page is cached
  }
  ra_window_.store(w, std::memory_order_relaxed);
  ra_last_.store(idx + w, std::memory_order_relaxed);
  return w;
}

// ---------------------------------------------------------------- teardown

void AddressSpace::DropPagesFrom(uint64_t first) {
  for (uint64_t idx : index_.IndicesFrom(first)) {
    PageRef p = FindGet(idx);
    if (!p) continue;
    p->Lock();
    p->WaitWriteback();
    TakeDirty(p.get());
    DetachLocked(p.get());
    p->Unlock();
  }
  for (PageRef& p : InFlightRange(first, UINT64_MAX)) p->WaitWriteback();
}

}  // namespace stablecache
