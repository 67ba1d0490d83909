#include "cache/page_index.h"

#include <algorithm>

namespace stablecache {

Page* PageIndex::FindGet(uint64_t index) {
  Shard& s = ShardOf(index);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(index);
  if (it == s.map.end()) return nullptr;
  it->second->Get();
  return it->second;
}

bool PageIndex::Insert(uint64_t index, Page* p) {
  Shard& s = ShardOf(index);
  std::lock_guard lk(s.mu);
  return s.map.emplace(index, p).second;
}

bool PageIndex::Replace(uint64_t index, Page* old_page, Page* new_page) {
  Shard& s = ShardOf(index);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(index);
  if (it == s.map.end() || it->second != old_page) return false;
  it->second = new_page;
  return true;
}

bool PageIndex::RemoveIf(uint64_t index, Page* p, const std::function<bool()>& precondition) {
  Shard& s = ShardOf(index);
  std::lock_guard lk(s.mu);
  auto it = s.map.find(index);
  if (it == s.map.end() || it->second != p) return false;
  if (!precondition()) return false;
  s.map.erase(it);
  return true;
}

std::vector<uint64_t> PageIndex::IndicesFrom(uint64_t from) const {
  std::vector<uint64_t> out;
  for (const Shard& s : shards_) {
    std::lock_guard lk(s.mu);
    for (const auto& [idx, p] : s.map)
      if (idx >= from) out.push_back(idx);
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t PageIndex::Size() const {
  size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard lk(s.mu);
    n += s.map.size();
  }
  return n;
}

}  // namespace stablecache
