// Direct I/O: reads and writes between the caller's memory and the device,
// past the cache where it holds no pages, coherent with it where it does.
//
// Alignment: the offset, and the address and length of every buffer, are
// multiples of the device's logical block size (BlockDevice::Info()); a
// call that is not gets kInvalidArgument naming what is misaligned. A read
// is short at end of file (the bytes of the last block past EOF are zero);
// a write past EOF extends the file. It runs to its completion inside the
// submitting call, holding the file's invalidate lock exclusive (no other
// I/O of the file starts meanwhile), and if it fails the file keeps its old
// size, as Linux sets i_size only when an extending direct write completes.
// A buffer that is a mapping (File::Map) of a file of the same cache is
// faulted in and pinned before the I/O holds anything.
//
// Coherency with buffered and mapped I/O (seed 002):
//  - A direct write holds its page range while it is in flight: nobody else
//    creates a page there (a buffered read or write, a mapping fault, a
//    readahead wait for it or skip it), so no page can be filled from the
//    device with bytes the write is about to replace. Pages already cached
//    in the range take the bytes (through the stable-write policy, as a
//    buffered write would) and are written back before the call completes;
//    pages not cached are written from the caller's buffer with no copy.
//    Overlapping direct writes run one after the other.
//  - A direct read copies from pages cached in its range (dirty ones
//    included, so it never returns bytes older than an acknowledged write)
//    and reads the others from the device into the caller's buffer.
//  - Truncate waits for direct I/O in flight; Close waits for it too.
//  Cost: a cached page in a direct write's range is written back before the
//  write completes (a 4 KiB page write and its wait); in a read's range it
//  costs a memcpy.
//
// Stability (seed 000): each call carries the caller's promise about its
// buffer while the I/O is in flight. kUnstable (the default): the caller
// may change it, so a layer that needs stable bytes (integrity, mirror,
// parity) bounces it, once for the whole stack (block/bounce.h).
// kDeclaredStable: the caller promises not to touch it, and nothing is
// copied; a verify layer reports a caller that broke the promise, with the
// offset. kStable is for trusted callers. Under StablePolicy::kNone the
// cache vouches for every buffer (the unsafe baseline) and nothing is
// bounced.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "stablecache/bio.h"
#include "stablecache/status.h"

namespace stablecache {

class File;

enum class DirectOp : uint8_t { kRead, kWrite };

// One direct I/O: the file range [offset, offset + total length of
// `buffers`) to or from the buffers in order (a vectored I/O). The buffers
// belong to the caller and must stay valid until the completion runs.
struct DirectRequest {
  DirectOp op = DirectOp::kRead;
  uint64_t offset = 0;
  std::vector<std::span<std::byte>> buffers;
  Stability stability = Stability::kUnstable;
  // The caller will wait for this I/O with File::PollDirect (DirectIo and
  // DirectQueue do): the stack's device threads stand aside for it, and
  // its completion runs on the polling thread. If nobody polls, it still
  // completes within about a millisecond.
  bool polled = false;

  uint64_t Length() const {
    uint64_t n = 0;
    for (const auto& b : buffers) n += b.size();
    return n;
  }
};

// Gets the bytes transferred (short for a read at EOF) or the error. Runs
// on a completion thread of the stack (or inline in SubmitDirect): it must
// not block on I/O of the same file.
using DirectCallback = std::function<void(Result<size_t>)>;

// A queue of asynchronous direct I/O over one File, the way a direct-I/O
// user drives a device: up to `depth` requests in flight; Submit blocks
// while the queue is full; Reap returns completions in the order they
// finished. The destructor waits for everything in flight. Thread-safe.
class DirectQueue {
 public:
  struct Completion {
    uint64_t tag = 0;
    Result<size_t> result = size_t{0};
  };

  DirectQueue(File& file, uint32_t depth);
  ~DirectQueue();
  DirectQueue(const DirectQueue&) = delete;
  DirectQueue& operator=(const DirectQueue&) = delete;

  // Submits `req` (its completion is reported with `tag`). An error found
  // before any I/O (misalignment, a closed file) is returned here and no
  // completion is queued.
  Status Submit(DirectRequest req, uint64_t tag);
  // Waits until at least `min_complete` completions are ready, or nothing
  // is in flight any more, then returns every ready one. Where the stack
  // allows (File::PollDirect), the completions run on this thread.
  std::vector<Completion> Reap(size_t min_complete = 1);
  // Waits for every request in flight; returns the first error among the
  // completions it reaped (the completions are dropped).
  Status Drain();
  // Requests submitted whose completion has not run yet. Completions that
  // ran but were not reaped are not counted: loop on Reap until it returns
  // what was submitted, not on InFlight() alone.
  uint32_t InFlight() const;
  uint32_t depth() const { return depth_; }

 private:
  // Shared with every request in flight: a completion wakes the waiters
  // after it unlocks (so the woken thread does not block again on the
  // mutex the completion still holds), and its reference keeps the state
  // alive past the destructor, which may run as soon as in_flight drops.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    uint32_t in_flight = 0;        // GUARDED_BY(mu)
    std::deque<Completion> ready;  // GUARDED_BY(mu)
  };
  template <typename Pred>
  void WaitUntil(std::unique_lock<std::mutex>& lk, Pred pred);

  File& file_;
  const uint32_t depth_;
  std::shared_ptr<State> s_;
};

}  // namespace stablecache
