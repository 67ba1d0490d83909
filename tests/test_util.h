// Helpers shared by the tests: temporary files and byte patterns.
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace stablecache::testing {

class TempFile {
 public:
  explicit TempFile(const char* tag = "t") {
    static std::atomic<int> n{0};
    path_ = (std::filesystem::temp_directory_path() / fmt::format("stablecache-{}-{}-{}", tag, getpid(), n++)).string();
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<std::byte> Pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = std::byte(x >> 24);
  }
  return v;
}

// Aborts the process if the test is still running after `seconds`: a hang
// is a failure, not a stuck CI job.
class Watchdog {
 public:
  explicit Watchdog(int seconds = 30) {
    t_ = std::thread([this, seconds] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, std::chrono::seconds(seconds), [this] { return done_; })) {
        fprintf(stderr, "watchdog: %s hung\n", ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread t_;
};

inline std::span<const std::byte> AsBytes(const std::string& s) { return std::as_bytes(std::span(s)); }

}  // namespace stablecache::testing
