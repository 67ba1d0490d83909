// Helpers shared by the mapping tests: catching SIGBUS from a mapped access
// (in any thread), and the caches, devices and options they open.
#pragma once

#include <setjmp.h>
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include <gtest/gtest.h>

#include "devices/memory_device.h"
#include "stablecache/cache.h"

namespace stablecache::maptest {

// The jump target of this thread's SIGBUS, while it makes an access that
// may fault. One handler for the whole binary, installed once and never
// restored: threads of a test catch SIGBUS concurrently.
inline thread_local sigjmp_buf* t_bus_jump = nullptr;

inline void OnBus(int) {
  if (t_bus_jump == nullptr) std::abort();
  siglongjmp(*t_bus_jump, 1);
}

inline void InstallBusHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = OnBus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, nullptr);
  });
}

// Whether reading the byte at `p` raises SIGBUS.
inline bool LoadFaults(const std::byte* p) {
  InstallBusHandler();
  sigjmp_buf jb;
  t_bus_jump = &jb;
  volatile bool bus = true;
  if (sigsetjmp(jb, 1) == 0) {
    volatile std::byte b = *reinterpret_cast<const volatile std::byte*>(p);
    (void)b;
    bus = false;
  }
  t_bus_jump = nullptr;
  return bus;
}

// Stores `v` at `p`; false if the store raised SIGBUS.
inline bool StoreOk(std::byte* p, std::byte v) {
  InstallBusHandler();
  sigjmp_buf jb;
  t_bus_jump = &jb;
  volatile bool ok = false;
  if (sigsetjmp(jb, 1) == 0) {
    *reinterpret_cast<volatile std::byte*>(p) = v;
    ok = true;
  }
  t_bus_jump = nullptr;
  return ok;
}

inline std::shared_ptr<Cache> NewCache(uint64_t capacity = 64ull << 20, StablePolicy policy = StablePolicy::kAuto,
                                       uint32_t interval_ms = 500) {
  CacheOptions co;
  co.capacity_bytes = capacity;
  co.policy = policy;
  co.writeback_interval_ms = interval_ms;
  return *Cache::Create(co);
}

inline FileOptions Mappable(uint64_t initial_size = 0) {
  FileOptions fo;
  fo.initial_size = initial_size;
  fo.mappable = true;
  return fo;
}

inline std::shared_ptr<MemoryDevice> NewMemory(uint64_t bytes = 4 << 20) {
  return *MemoryDevice::Create({.size_bytes = bytes});
}

inline std::vector<std::byte> ReadFile(File& f, uint64_t off, size_t n) {
  std::vector<std::byte> b(n);
  auto r = f.Read(off, b);
  EXPECT_TRUE(r) << r.error().ToString();
  if (r) b.resize(*r);
  return b;
}

}  // namespace stablecache::maptest
