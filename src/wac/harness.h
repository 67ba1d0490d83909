// What both wac targets share: the per-block table that orders writers and
// remembers the last content of every block, the writer threads, and the
// judgement of a block read back.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "wac/block_format.h"
#include "wac/latency_histogram.h"
#include "wac/wac.h"

namespace stablecache::wac {

class BlockTable {
 public:
  explicit BlockTable(uint64_t blocks) : slots_(new Slot[blocks]), blocks_(blocks) {}
  uint64_t blocks() const { return blocks_; }
  // Runs store(id) with the block locked and, if it returns OK, records id
  // as the block's last content. The id's seq is the block's next one.
  Status Store(uint64_t block, uint32_t writer, const std::function<Status(const BlockId&)>& store);
  // A scribbled direct write: runs store(id, ScribbleOf(id)) with the block
  // locked and, if it returns OK, records id as the block's last content
  // and the scribble as its alternative (any byte-wise mix of the two is
  // what the write may have left), until the block's next store.
  Status StoreScribbled(uint64_t block, uint32_t writer,
                        const std::function<Status(const BlockId& id, const BlockId& scribble)>& store);
  // The last content stored, if any. Call after the writers stopped.
  std::optional<BlockId> Last(uint64_t block) const;
  // The scribble alternative of the last store, when it was scribbled.
  std::optional<BlockId> LastScribble(uint64_t block) const;
  // Runs fn() with the block locked: no store of it starts or is under way.
  void WithBlockLocked(uint64_t block, const std::function<void()>& fn);

 private:
  struct Slot {
    std::mutex mu;
    BlockId last;      // GUARDED_BY(mu); seq 0: never written
    BlockId scribble;  // GUARDED_BY(mu); seq 0: the last store was not scribbled
  };
  std::unique_ptr<Slot[]> slots_;
  uint64_t blocks_;
};

struct WriterStats {
  uint64_t ops = 0;
  LatencyHistogram store_latency;  // of the store itself, the writer's wait
  double elapsed_s = 0;
};

// One writer step: store one block. Returns an error to stop the run.
using WriterStep = std::function<Status(uint32_t writer, std::mt19937_64& rng, LatencyHistogram& latency)>;

// Runs `threads` writers until `duration_s` passes, one fails or *cancel
// becomes true (polled every 10 ms; writers stop at their next op); reports
// progress once a second. The first error wins.
Result<WriterStats> RunWriters(uint32_t threads, double duration_s, const Progress& progress, const WriterStep& step,
                               const std::atomic<bool>* cancel = nullptr);

// Judges a block read back against the last content stored in it. Returns
// the violation kind, or nothing when it matches. With `scribble` (the last
// store was a scribbled direct write) any byte-wise mix of the last content
// and its scribble matches too.
std::optional<std::string> JudgeReadback(uint64_t block, const std::optional<BlockId>& last,
                                         std::span<const std::byte> got,
                                         const std::optional<BlockId>& scribble = std::nullopt);

// The scribbling of a direct writer: while in_flight() is true, overwrites
// `buf` alternately with `scribble` and `content` (whole blocks, as fast as
// it can, so the write's device copy and any checksum taken of the buffer
// while it is in flight see different bytes). It yields the CPU after each
// scribble, holding it: the completion threads of the I/O still run when
// every core has a scribbler, and while the writer waits for a core the
// device copies bytes that differ from the content (yielding holding the
// content made policy none's corruption rare). Returns the overwrites.
uint64_t ScribbleWhile(std::span<std::byte> buf, std::span<const std::byte> content,
                       std::span<const std::byte> scribble, const std::function<bool()>& in_flight);

// Judges device content seen while the run goes on: any complete content
// of this block (or zeros) is fine, since the device may lag the cache.
std::optional<std::string> JudgeLive(uint64_t block, std::span<const std::byte> got);

// memcpy into a mapping that may raise SIGBUS (a page the device cannot
// read: under policy none, a block the integrity layer rejects). Returns
// false, with nothing stored, when the copy raised SIGBUS; the page never
// became accessible, so no byte landed. Installs a process-wide SIGBUS
// handler on first use that jumps back here in a thread inside this call
// and otherwise passes the signal to the handler it replaced.
bool StoreCatchingSigbus(std::byte* dst, const std::byte* src, size_t n);

// Adds a bad block to the run (keeps the first 32).
void NoteBadBlock(WacRun& run, uint64_t block, std::string kind);

// How a writer stores one op, the same on both targets: A write()s, B
// stores through a mapping, C: odd writers mapped, even ones write(); D:
// odd mapped, even direct; E direct; F picks mapped or direct per op.
enum class WriterHow { kWrite, kMapped, kDirect };
inline WriterHow HowFor(Profile p, uint32_t writer, std::mt19937_64& rng) {
  switch (p) {
    case Profile::kA: return WriterHow::kWrite;
    case Profile::kB: return WriterHow::kMapped;
    case Profile::kC: return writer % 2 == 1 ? WriterHow::kMapped : WriterHow::kWrite;
    case Profile::kD: return writer % 2 == 1 ? WriterHow::kMapped : WriterHow::kDirect;
    case Profile::kE: return WriterHow::kDirect;
    case Profile::kF: return rng() % 2 == 0 ? WriterHow::kMapped : WriterHow::kDirect;
  }
  return WriterHow::kWrite;
}
inline bool AnyMapped(Profile p) { return p != Profile::kA && p != Profile::kE; }
inline bool AnyDirect(Profile p) { return p == Profile::kD || p == Profile::kE || p == Profile::kF; }

// Nanoseconds since an arbitrary epoch.
uint64_t NowNs();

}  // namespace stablecache::wac
