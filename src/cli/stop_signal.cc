#include "cli/stop_signal.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <cerrno>

#include <fmt/format.h>

namespace stablecache::cli {

namespace {
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

StopSignal::StopSignal() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  waiter_ = std::thread([this] { Run(); });
}

StopSignal::~StopSignal() {
  done_ = true;
  waiter_.join();
}

void StopSignal::Run() {
  const sigset_t set = StopSignals();
  const timespec tick{0, 50'000'000};  // how soon the destructor is noticed
  while (!done_.load()) {
    siginfo_t info;
    int sig = ::sigtimedwait(&set, &info, &tick);
    if (sig < 0) continue;  // EAGAIN (the tick) or EINTR
    if (int none = 0; signo_.compare_exchange_strong(none, sig)) {
      fmt::print(stderr, "\nstablecache: {}: stopping, removing what the run created\n", ::strsignal(sig));
      stop_ = true;
    } else {
      fmt::print(stderr, "stablecache: {} again: still cleaning up\n", ::strsignal(sig));
    }
  }
}

}  // namespace stablecache::cli
