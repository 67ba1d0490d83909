#include "cache/page_index.h"

#include "cache/page_pool.h"

namespace stablecache {

PageIndex::PageIndex(PagePool& pool, uint64_t max_pages)
    : pool_(pool),
      max_pages_(max_pages),
      nleaves_((max_pages + kLeafSize - 1) >> kLeafBits),
      leaves_(std::make_unique<std::atomic<Leaf*>[]>(nleaves_)) {
  for (size_t i = 0; i < nleaves_; i++) leaves_[i].store(nullptr, std::memory_order_relaxed);
}

PageIndex::~PageIndex() {
  for (size_t i = 0; i < nleaves_; i++) delete leaves_[i].load();
}

std::atomic<Page*>* PageIndex::SlotFor(uint64_t index, bool create) {
  if (index >= max_pages_) return nullptr;
  std::atomic<Leaf*>& top = leaves_[index >> kLeafBits];
  Leaf* leaf = top.load(std::memory_order_acquire);
  if (leaf == nullptr) {
    if (!create) return nullptr;
    auto fresh = std::make_unique<Leaf>();
    if (top.compare_exchange_strong(leaf, fresh.get(), std::memory_order_acq_rel))
      leaf = fresh.release();
  }
  return &leaf->slot[index & (kLeafSize - 1)];
}

Page* PageIndex::FindGet(uint64_t index) {
  std::atomic<Page*>* slot = SlotFor(index, false);
  if (slot == nullptr) return nullptr;
  for (;;) {
    Page* p = slot->load(std::memory_order_acquire);
    if (p == nullptr) return nullptr;
    // Get unless zero: a page with no references is being freed.
    uint64_t w = p->word.load(std::memory_order_acquire);
    bool got = false;
    while (Page::Refs(w) != 0) {
      if (p->word.compare_exchange_weak(w, w + Page::kRefOne, std::memory_order_acq_rel)) {
        got = true;
        break;
      }
    }
    if (!got) continue;  // freed under us: the slot has changed by now
    if (slot->load(std::memory_order_acquire) == p && !p->Test(Page::kDetached)) return p;
    pool_.Put(p);  // moved or removed meanwhile: look again
  }
}

bool PageIndex::Insert(uint64_t index, Page* p) {
  std::atomic<Page*>* slot = SlotFor(index, true);
  if (slot == nullptr) return false;
  Page* expected = nullptr;
  if (!slot->compare_exchange_strong(expected, p, std::memory_order_acq_rel)) return false;
  count_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool PageIndex::Replace(uint64_t index, Page* old_page, Page* new_page) {
  std::atomic<Page*>* slot = SlotFor(index, false);
  if (slot == nullptr) return false;
  return slot->compare_exchange_strong(old_page, new_page, std::memory_order_acq_rel);
}

bool PageIndex::Remove(uint64_t index, Page* p) {
  std::atomic<Page*>* slot = SlotFor(index, false);
  if (slot == nullptr) return false;
  Page* expected = p;
  if (!slot->compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel)) return false;
  count_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

std::vector<uint64_t> PageIndex::IndicesFrom(uint64_t from) const {
  std::vector<uint64_t> out;
  for (size_t l = from >> kLeafBits; l < nleaves_; l++) {
    Leaf* leaf = leaves_[l].load(std::memory_order_acquire);
    if (leaf == nullptr) continue;
    for (uint64_t i = 0; i < kLeafSize; i++) {
      uint64_t idx = (uint64_t{l} << kLeafBits) | i;
      if (idx >= from && leaf->slot[i].load(std::memory_order_acquire) != nullptr) out.push_back(idx);
    }
  }
  return out;
}

}  // namespace stablecache
