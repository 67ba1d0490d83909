#include "wac/interleave.h"

#include <algorithm>
#include <optional>

namespace stablecache::wac {

Result<std::vector<std::optional<WacRun>>> RunInterleaved(const std::vector<WacConfig>& configs, unsigned rounds,
                                                          const std::function<void(size_t)>& on_start,
                                                          const Progress& progress) {
  auto cancelled = [&] { return !configs.empty() && configs.front().cancel && configs.front().cancel->load(); };
  rounds = std::max(1u, rounds);
  if (configs.size() > 1) {
    WacConfig warm = configs.front();
    warm.duration_s = std::min(0.5, warm.duration_s);
    warm.live_checker = false;
    if (auto r = RunWac(warm); !r) return Err(r.error());
  }
  std::vector<std::optional<WacRun>> runs(configs.size());
  for (unsigned round = 0; round < rounds && !cancelled(); round++)
    for (size_t k = 0; k < configs.size() && !cancelled(); k++) {
      const size_t i = round % 2 == 0 ? k : configs.size() - 1 - k;
      WacConfig cfg = configs[i];
      cfg.duration_s /= rounds;
      if (on_start) on_start(i);
      auto r = RunWac(cfg, progress);
      if (!r) return Err(r.error());
      if (!runs[i]) runs[i] = std::move(*r);
      else CombineRuns(*runs[i], *r);
    }
  return runs;
}

}  // namespace stablecache::wac
