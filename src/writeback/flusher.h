// Flusher: background threads that write dirty pages back.
//
// They wake every `interval`, when kicked (dirty pages passed the
// background limit, or a reclaimer found nothing clean), and keep writing
// while the cache is over its background limit. After a pass that met
// writeback errors they wait for the next interval instead of spinning on a
// failing device. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace stablecache {

class CacheImpl;

class Flusher {
 public:
  Flusher(CacheImpl& cache, unsigned threads, std::chrono::milliseconds interval);
  ~Flusher();  // stops and joins the threads
  void Wake();

 private:
  void Run();
  size_t Pass();

  CacheImpl& cache_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // GUARDED_BY(mu_)
  bool kicked_ = false;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace stablecache
