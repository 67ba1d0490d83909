#include "wac/harness.h"

#include <chrono>
#include <thread>

namespace stablecache::wac {

Status BlockTable::Store(uint64_t block, uint32_t writer, const std::function<Status(const BlockId&)>& store) {
  Slot& s = slots_[block];
  std::lock_guard lk(s.mu);
  BlockId id{block, writer, s.last.seq + 1};
  SC_RETURN_IF_ERROR(store(id));
  s.last = id;
  return Status::Ok();
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
                                         std::span<const std::byte> got) {
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

void NoteBadBlock(WacRun& run, uint64_t block, std::string kind) {
  if (run.bad_blocks.size() < 32) run.bad_blocks.push_back(BadBlock{block, std::move(kind)});
}

}  // namespace stablecache::wac
