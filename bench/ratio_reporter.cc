#include "ratio_reporter.h"

#include <algorithm>

#include <fmt/format.h>

namespace stablecache::bench {

void RatioReporter::AddPair(std::string label, std::string ours, std::string baseline) {
  pairs_.emplace_back(std::move(label), std::move(ours), std::move(baseline));
}

void RatioReporter::ReportRuns(const std::vector<Run>& runs) {
  for (const Run& r : runs)
    if (r.run_type == Run::RT_Iteration && !r.error_occurred && r.iterations > 0)
    {
      samples_[r.benchmark_name()].push_back(r.GetAdjustedRealTime());
      units_[r.benchmark_name()] = benchmark::GetTimeUnitString(r.time_unit);
    }
  ConsoleReporter::ReportRuns(runs);
}

void RatioReporter::Finalize() {
  ConsoleReporter::Finalize();
  // With --benchmark_repetitions, each side is the median of its repetitions.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  fmt::print("\n{:<44} {:>12} {:>12} {:>8}\n", "comparison (same run)", "ours", "baseline", ratio_title_);
  for (const auto& [label, ours, base] : pairs_) {
    auto a = samples_.find(ours), b = samples_.find(base);
    if (a == samples_.end() || b == samples_.end()) continue;
    const double ta = median(a->second), tb = median(b->second);
    const std::string& unit = units_[ours];
    fmt::print("{:<44} {:>10.3g}{:<2} {:>10.3g}{:<2} {:>7.2f}x\n", label, ta, unit, tb, units_[base], tb / ta);
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
