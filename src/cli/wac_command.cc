// `stablecache wac`: the write-after-checksum torture run (DESIGN.md §4).
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/stop_signal.h"
#include "cli/wac_options.h"
#include "stablecache/stack.h"
#include "wac/interleave.h"
#include "wac/report.h"
#include "wac/wac.h"

namespace stablecache::cli {

namespace {

void PrintReport(const WacOptions& o, const std::vector<wac::WacRun>& runs, bool interrupted) {
  if (o.json) {
    nlohmann::json j = {{"runs", nlohmann::json::array()}, {"interrupted", interrupted}};
    for (const auto& r : runs) j["runs"].push_back(wac::RunToJson(r));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}", wac::RunsTable(runs));
  for (const auto& r : runs) {
    // The first few findings by block number; --json lists up to 32.
    constexpr size_t kShown = 6;
    for (size_t i = 0; i < r.bad_blocks.size() && i < kShown; i++)
      fmt::print("  {} {}: block {} {}\n", wac::ProfileLetter(r.profile), r.policy, r.bad_blocks[i].block,
                 r.bad_blocks[i].kind);
    if (r.bad_blocks.size() > kShown)
      fmt::print("  {} {}: ... {} violations in all\n", wac::ProfileLetter(r.profile), r.policy, r.violations.total());
  }
  if (interrupted) fmt::print("interrupted: a partial report of the runs that started\n");
}

int RunWacCommand(const WacOptions& o) {
  if (o.policy_ignored)
    fmt::print(stderr, "stablecache wac: --policy does not apply to a kernel filesystem target; "
                       "each profile runs once under the kernel's own stable-pages rule\n");
  StopSignal stop;  // before the first writer thread starts
  const bool kernel = o.target != "stack";
  std::vector<wac::WacRun> runs;
  const bool tty = isatty(STDERR_FILENO);
  for (wac::Profile p : o.profiles) {
    if (stop.stopped()) break;
    std::vector<wac::WacConfig> configs;
    for (StablePolicy pol : o.policies) {
      wac::WacConfig cfg;
      cfg.profile = p;
      cfg.policy = pol;
      cfg.target = o.target;
      cfg.stack = o.stack;
      cfg.threads = o.threads;
      cfg.file_size = o.file_size;
      cfg.duration_s = o.duration_s;
      cfg.live_checker = o.live_check;
      cfg.cancel = &stop.flag();
      configs.push_back(cfg);
    }
    // Several policies are compared in interleaved rounds of about a second.
    const unsigned rounds = configs.size() > 1 ? std::clamp(static_cast<unsigned>(o.duration_s), 1u, 5u) : 1;
    std::string label;
    auto on_start = [&](size_t i) {
      label = fmt::format("wac {} {}", wac::ProfileLetter(p), kernel ? "kernel" : PolicyName(configs[i].policy));
    };
    wac::Progress progress;
    if (tty)
      progress = [&](double t, uint64_t ops) {
        fmt::print(stderr, "\r{}: {:.0f}/{:.0f} s, {} ops   ", label, t, o.duration_s / rounds, ops);
      };
    auto done = wac::RunInterleaved(configs, rounds, on_start, progress);
    if (tty) fmt::print(stderr, "\r{:60}\r", "");
    if (!done) {
      fmt::print(stderr, "stablecache wac: {}\n", done.error().WithContext(label).message());
      return 2;
    }
    for (auto& r : *done)
      if (r) runs.push_back(std::move(*r));
  }
  PrintReport(o, runs, stop.stopped());
  return stop.stopped() ? StopSignal::kExitCode : 0;
}

}  // namespace

void AddWacCommand(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("wac", "write-after-checksum torture run: proves pages stay stable under I/O");
  auto a = std::make_shared<WacArgs>();
  AddWacOptions(*cmd, *a);
  cmd->callback([a, &exit_code] {
    auto o = ValidateWacArgs(*a);
    if (!o) {
      fmt::print(stderr, "stablecache wac: {}\n", o.error().message());
      exit_code = 2;
      return;
    }
    exit_code = RunWacCommand(*o);
  });
}

}  // namespace stablecache::cli
