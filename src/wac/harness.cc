#include "wac/harness.h"

#include <setjmp.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace stablecache::wac {

Status BlockTable::Store(uint64_t block, uint32_t writer, const std::function<Status(const BlockId&)>& store) {
  Slot& s = slots_[block];
  std::lock_guard lk(s.mu);
  BlockId id{block, writer, s.last.seq + 1};
  SC_RETURN_IF_ERROR(store(id));
  s.last = id;
  s.scribble = BlockId{};
  return Status::Ok();
}

Status BlockTable::StoreScribbled(uint64_t block, uint32_t writer,
                                  const std::function<Status(const BlockId&, const BlockId&)>& store) {
  Slot& s = slots_[block];
  std::lock_guard lk(s.mu);
  BlockId id{block, writer, s.last.seq + 1};
  BlockId scribble = ScribbleOf(id);
  SC_RETURN_IF_ERROR(store(id, scribble));
  s.last = id;
  s.scribble = scribble;
  return Status::Ok();
}

std::optional<BlockId> BlockTable::LastScribble(uint64_t block) const {
  Slot& s = slots_[block];
  std::lock_guard lk(s.mu);
  if (s.scribble.seq == 0) return std::nullopt;
  return s.scribble;
}

void BlockTable::WithBlockLocked(uint64_t block, const std::function<void()>& fn) {
  std::lock_guard lk(slots_[block].mu);
  fn();
}

uint64_t ScribbleWhile(std::span<std::byte> buf, std::span<const std::byte> content,
                       std::span<const std::byte> scribble, const std::function<bool()>& in_flight) {
  uint64_t n = 0;
  while (in_flight()) {
    // Even overwrites put the scribble in, odd ones the content back.
    std::memcpy(buf.data(), (n % 2 == 0 ? scribble : content).data(), buf.size());
    // Yield holding the scribble: while this writer waits for a core, the
    // device copies a buffer that differs from what was checksummed.
    if (n++ % 2 == 0) std::this_thread::yield();
  }
  return n;
}

std::optional<BlockId> BlockTable::Last(uint64_t block) const {
  Slot& s = slots_[block];
  std::lock_guard lk(s.mu);
  if (s.last.seq == 0) return std::nullopt;
  return s.last;
}

uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

Result<WriterStats> RunWriters(uint32_t threads, double duration_s, const Progress& progress, const WriterStep& step,
                               const std::atomic<bool>* cancel) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::mutex mu;
  Status first_error;
  WriterStats total;
  const uint64_t start = NowNs();
  std::vector<std::thread> ts;
  for (uint32_t w = 0; w < threads; w++)
    ts.emplace_back([&, w] {
      std::mt19937_64 rng(0x5eed + w);
      LatencyHistogram h;
      uint64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        Status st = step(w, rng, h);
        if (!st.ok()) {
          std::lock_guard lk(mu);
          first_error.Update(st);
          stop = true;
          break;
        }
        if (++mine % 64 == 0) ops.fetch_add(64, std::memory_order_relaxed);
      }
      ops.fetch_add(mine % 64, std::memory_order_relaxed);
      std::lock_guard lk(mu);
      total.store_latency.Merge(h);
      total.ops += mine;
    });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(duration_s);
  auto next_report = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  auto cancelled = [cancel] { return cancel && cancel->load(std::memory_order_relaxed); };
  while (!stop.load() && !cancelled() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (progress && std::chrono::steady_clock::now() >= next_report) {
      progress(static_cast<double>(NowNs() - start) / 1e9, ops.load(std::memory_order_relaxed));
      next_report += std::chrono::seconds(1);
    }
  }
  stop = true;
  for (auto& t : ts) t.join();
  total.elapsed_s = static_cast<double>(NowNs() - start) / 1e9;
  if (!first_error.ok()) return Err(first_error);
  return total;
}

std::optional<std::string> JudgeReadback(uint64_t block, const std::optional<BlockId>& last,
                                         std::span<const std::byte> got, const std::optional<BlockId>& scribble) {
  if (last && scribble) {
    std::byte a[kBlockSize], a2[kBlockSize];
    FillBlock(*last, a);
    FillBlock(*scribble, a2);
    if (IsByteMix(got, a, a2)) return std::nullopt;
  }
  ParsedBlock p = ParseBlock(got);
  switch (p.state) {
    case BlockState::kZero: return last ? std::optional<std::string>("lost") : std::nullopt;
    case BlockState::kTorn: return "torn";
    case BlockState::kValid: break;
  }
  if (p.id.block != block) return "misdirected";
  if (!last || p.id != *last) return "stale";
  return std::nullopt;
}

std::optional<std::string> JudgeLive(uint64_t block, std::span<const std::byte> got) {
  ParsedBlock p = ParseBlock(got);
  if (p.state == BlockState::kTorn) return "torn";
  if (p.state == BlockState::kValid && p.id.block != block) return "misdirected";
  return std::nullopt;
}

namespace {
// volatile: the compiler must not drop the stores around the memcpy.
thread_local sigjmp_buf* volatile t_bus_jump = nullptr;
struct sigaction g_previous_bus {};

void OnBus(int sig, siginfo_t* info, void* ctx) {
  if (t_bus_jump != nullptr) siglongjmp(*t_bus_jump, 1);
  // Not ours: the handler we replaced, or the default action.
  if (g_previous_bus.sa_flags & SA_SIGINFO) {
    if (g_previous_bus.sa_sigaction) return g_previous_bus.sa_sigaction(sig, info, ctx);
  } else if (g_previous_bus.sa_handler != SIG_DFL && g_previous_bus.sa_handler != SIG_IGN) {
    return g_previous_bus.sa_handler(sig);
  }
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

// Kept apart so no object with a destructor lives in the frame the jump
// returns to.
__attribute__((noinline)) bool CopyOrJump(std::byte* dst, const std::byte* src, size_t n) {
  sigjmp_buf jb;
  volatile bool ok = false;
  if (sigsetjmp(jb, 1) == 0) {
    t_bus_jump = &jb;
    std::memcpy(dst, src, n);
    ok = true;
  }
  t_bus_jump = nullptr;
  return ok;
}
}  // namespace

bool StoreCatchingSigbus(std::byte* dst, const std::byte* src, size_t n) {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnBus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_bus);
  });
  return CopyOrJump(dst, src, n);
}

void NoteBadBlock(WacRun& run, uint64_t block, std::string kind) {
  if (run.bad_blocks.size() < 32) run.bad_blocks.push_back(BadBlock{block, std::move(kind)});
}

}  // namespace stablecache::wac
