#include "ratio_reporter.h"

#include <fmt/format.h>

namespace stablecache::bench {

void RatioReporter::AddPair(std::string label, std::string ours, std::string baseline) {
  pairs_.emplace_back(std::move(label), std::move(ours), std::move(baseline));
}

void RatioReporter::ReportRuns(const std::vector<Run>& runs) {
  for (const Run& r : runs)
    if (r.run_type == Run::RT_Iteration && !r.error_occurred && r.iterations > 0)
      ns_per_iter_[r.benchmark_name()] = r.GetAdjustedRealTime();
  ConsoleReporter::ReportRuns(runs);
}

void RatioReporter::Finalize() {
  ConsoleReporter::Finalize();
  fmt::print("\n{:<44} {:>12} {:>12} {:>8}\n", "comparison (same run)", "ours", "baseline", ratio_title_);
  for (const auto& [label, ours, base] : pairs_) {
    auto a = ns_per_iter_.find(ours), b = ns_per_iter_.find(base);
    if (a == ns_per_iter_.end() || b == ns_per_iter_.end()) continue;
    fmt::print("{:<44} {:>10.0f}ns {:>10.0f}ns {:>7.2f}x\n", label, a->second, b->second, b->second / a->second);
  }
}

int RunWithRatios(int argc, char** argv, RatioReporter& reporter) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace stablecache::bench
