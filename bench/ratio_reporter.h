// RatioReporter: the console output of Google Benchmark, plus a table of
// ratios between named pairs of benchmarks measured in the same run.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

namespace stablecache::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  explicit RatioReporter(std::string ratio_title = "speedup") : ratio_title_(std::move(ratio_title)) {}
  // Each pair: (label, numerator benchmark, denominator benchmark); the
  // ratio printed is time(denominator) / time(numerator), i.e. how many
  // times faster the numerator is; with --benchmark_repetitions, of the
  // medians (add --benchmark_enable_random_interleaving=true to interleave).
  void AddPair(std::string label, std::string ours, std::string baseline);
  void ReportRuns(const std::vector<Run>& runs) override;
  void Finalize() override;

 private:
  std::string ratio_title_;
  std::map<std::string, std::vector<double>> samples_;  // time per iteration, one per repetition
  std::map<std::string, std::string> units_;
  std::vector<std::tuple<std::string, std::string, std::string>> pairs_;
};

// Runs every registered benchmark with the ratio table. Returns exit code.
int RunWithRatios(int argc, char** argv, RatioReporter& reporter);

}  // namespace stablecache::bench
