// StopSignal: turns SIGINT and SIGTERM into a flag a run polls, so that a
// Ctrl-C stops the run cleanly: it removes what it created (temporary
// images, loop mounts) and prints its partial report, instead of dying with
// them left behind.
//
// No handler runs async-signal-unsafe code because there is no handler:
// the constructor blocks both signals in the calling thread (construct it
// before any other thread starts, so every thread inherits the mask, and
// child processes started with popen do too) and a thread takes them with
// sigtimedwait and sets the flag. The signals stay blocked for the rest of
// the process, so one that arrives while the report is printed cannot kill
// it halfway. Not copyable; one per process.
#pragma once

#include <atomic>
#include <thread>

namespace stablecache::cli {

class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // Becomes true at the first SIGINT or SIGTERM.
  const std::atomic<bool>& flag() const { return stop_; }
  bool stopped() const { return stop_.load(); }
  // The first signal taken, or 0.
  int signal() const { return signo_.load(); }

  // The exit status of an interrupted command (130, as for Ctrl-C, whichever
  // of the two signals it was: README and DESIGN.md section 4).
  static constexpr int kExitCode = 130;

 private:
  void Run();
  std::atomic<bool> stop_{false};
  std::atomic<int> signo_{0};
  std::atomic<bool> done_{false};
  std::thread waiter_;
};

}  // namespace stablecache::cli
