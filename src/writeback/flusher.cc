#include "writeback/flusher.h"

#include "cache/cache_impl.h"
#include "writeback/writeback.h"

namespace stablecache {

Flusher::Flusher(CacheImpl& cache, unsigned threads, std::chrono::milliseconds interval)
    : cache_(cache), interval_(interval) {
  for (unsigned i = 0; i < std::max(1u, threads); i++) threads_.emplace_back([this] { Run(); });
}

Flusher::~Flusher() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void Flusher::Wake() {
  {
    std::lock_guard lk(mu_);
    if (kicked_) return;
    kicked_ = true;
  }
  cv_.notify_one();
}

size_t Flusher::Pass() {
  size_t n = 0;
  for (auto& as : cache_.Spaces())
    n += WritebackRange(*as, 0, UINT64_MAX, WritebackMode::kBackground, 16 * cache_.Options().max_bio_pages);
  return n;
}

void Flusher::Run() {
  auto& c = cache_.counters();
  std::unique_lock lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, interval_, [&] { return stop_ || kicked_; });
    if (stop_) break;
    kicked_ = false;
    lk.unlock();
    for (;;) {
      uint64_t errors = c.writeback_errors.load(std::memory_order_relaxed);
      uint32_t ev = cache_.pool().free_event().load(std::memory_order_acquire);
      size_t n = Pass();
      if (c.writeback_errors.load(std::memory_order_relaxed) != errors) break;
      if (static_cast<uint64_t>(std::max<int64_t>(0, c.dirty.load())) <= cache_.background_limit()) break;
      // Over the limit with nothing we could submit: wait for I/O to end.
      if (n == 0 && c.writeback.load(std::memory_order_relaxed) > 0)
        cache_.pool().free_event().wait(ev, std::memory_order_acquire);
      else if (n == 0)
        break;
    }
    cache_.ReleaseIdleSpaces();
    lk.lock();
  }
}

}  // namespace stablecache
