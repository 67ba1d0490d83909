// Comparing configurations on a noisy machine: run them side by side in
// interleaved rounds, so drift spreads over all of them alike.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "wac/wac.h"

namespace stablecache::wac {

// Runs each config `rounds` times for duration_s / rounds, in
// counterbalanced order (forward in even rounds, backward in odd ones:
// A B B A A B ...), after a discarded warm-up of the first config when
// there are several (the first run in a process pays for faulting in
// memory). Returns one run per config, in order, its rounds combined with
// CombineRuns. `on_start` is told the index of each config as it starts.
// When the configs' `cancel` flag becomes true the run under way stops
// early and no other starts: configs that never ran have no run.
[[nodiscard]] Result<std::vector<std::optional<WacRun>>> RunInterleaved(const std::vector<WacConfig>& configs, unsigned rounds,
                                                         const std::function<void(size_t)>& on_start = {},
                                                         const Progress& progress = {});

}  // namespace stablecache::wac
