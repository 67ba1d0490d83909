// `stablecache wac`: the write-after-checksum torture run (DESIGN.md §4).
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "stablecache/stack.h"
#include "wac/interleave.h"
#include "wac/report.h"
#include "wac/wac.h"

namespace stablecache::cli {

namespace {

struct WacArgs {
  std::string profiles = "all";
  uint32_t threads = 64;
  std::string file_size = "64K";
  double duration = 5;
  std::string policies = "auto";
  std::string stack = "verify,integrity,file";
  std::string target = "stack";
  bool json = false;
  bool live_check = true;
};

int RunWacCommand(const WacArgs& a) {
  auto fail = [](const Status& st) {
    fmt::print(stderr, "stablecache wac: {}\n", st.message());
    return 2;
  };
  auto profiles = wac::ParseProfiles(a.profiles);
  if (!profiles) return fail(profiles.error().WithContext("--profile"));
  auto policies = wac::ParsePolicies(a.policies);
  if (!policies) return fail(policies.error().WithContext("--policy"));
  auto size = ParseSize(a.file_size);
  if (!size) return fail(size.error().WithContext("--file-size"));
  const bool kernel = a.target != "stack";
  if (kernel) {  // the kernel has its own rule: one run per profile
    if (a.policies != "auto")
      fmt::print(stderr, "stablecache wac: --policy does not apply to a kernel filesystem target; "
                         "each profile runs once under the kernel's own stable-pages rule\n");
    policies = std::vector<StablePolicy>{StablePolicy::kAuto};
  }
  std::vector<wac::WacRun> runs;
  const bool tty = isatty(STDERR_FILENO);
  for (wac::Profile p : *profiles) {
    std::vector<wac::WacConfig> configs;
    for (StablePolicy pol : *policies) {
      wac::WacConfig cfg;
      cfg.profile = p;
      cfg.policy = pol;
      cfg.target = a.target;
      cfg.stack = a.stack;
      cfg.threads = a.threads;
      cfg.file_size = *size;
      cfg.duration_s = a.duration;
      cfg.live_checker = a.live_check;
      configs.push_back(cfg);
    }
    // Several policies are compared in interleaved rounds of about a second.
    const unsigned rounds = configs.size() > 1 ? std::clamp(static_cast<unsigned>(a.duration), 1u, 5u) : 1;
    std::string label;
    auto on_start = [&](size_t i) {
      label = fmt::format("wac {} {}", wac::ProfileLetter(p), kernel ? "kernel" : PolicyName(configs[i].policy));
    };
    wac::Progress progress;
    if (tty)
      progress = [&](double t, uint64_t ops) {
        fmt::print(stderr, "\r{}: {:.0f}/{:.0f} s, {} ops   ", label, t, a.duration / rounds, ops);
      };
    auto done = wac::RunInterleaved(configs, rounds, on_start, progress);
    if (tty) fmt::print(stderr, "\r{:60}\r", "");
    if (!done) return fail(done.error().WithContext(label));
    for (auto& r : *done) runs.push_back(std::move(r));
  }
  if (a.json) {
    nlohmann::json j = {{"runs", nlohmann::json::array()}};
    for (const auto& r : runs) j["runs"].push_back(wac::RunToJson(r));
    fmt::print("{}\n", j.dump(2));
  } else {
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
  }
  return 0;
}

}  // namespace

void AddWacCommand(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("wac", "write-after-checksum torture run: proves pages stay stable under I/O");
  auto a = std::make_shared<WacArgs>();
  cmd->add_option("--profile", a->profiles, "A,B,...|all  (A write+sync_range, B mapped+msync, C half each, "
                                            "D C+direct, E A+direct, F B+direct)")
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "writer threads")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--file-size", a->file_size, "file size, K/M/G suffixes")->capture_default_str();
  cmd->add_option("--duration", a->duration, "seconds per run")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--policy", a->policies, "none,wait,bounce,fork,auto|all")->capture_default_str();
  cmd->add_option("--stack", a->stack, "stack spec, top to bottom")->capture_default_str();
  cmd->add_option("--target", a->target, "stack (this library) or a directory on a kernel filesystem")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "JSON report on stdout");
  cmd->add_flag("!--no-live-check", a->live_check,
                "no checker re-reading the device during the run (for timing; the read-back and scrub still run)");
  cmd->callback([a, &exit_code] { exit_code = RunWacCommand(*a); });
}

}  // namespace stablecache::cli
