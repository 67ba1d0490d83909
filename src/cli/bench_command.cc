// `stablecache bench`: the policy matrix in one process and one run, as
// ratios to policy none, beside the kernel's own stable-pages cost (ext4 on
// a loop device with stable_writes 0 and 1) on the same workloads.
#include <unistd.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/loop_mount.h"
#include "cli/number_option.h"
#include "cli/stop_signal.h"
#include "wac/interleave.h"
#include "wac/report.h"
#include "wac/wac.h"

namespace stablecache::cli {

namespace {

struct BenchArgs {
  double duration = 6;  // per configuration, split over the rounds
  unsigned rounds = 3;
  uint32_t threads = 64;
  std::string stack = "verify,integrity,file";
  bool kernel = true;
  bool json = false;
};

struct Workload {
  wac::Profile profile;
  uint64_t file_size;
  std::string name() const {
    return fmt::format("{} {}", wac::ProfileLetter(profile), file_size >= (1 << 20) ? fmt::format("{}M", file_size >> 20)
                                                                                    : fmt::format("{}K", file_size >> 10));
  }
};

const Workload kWorkloads[] = {{wac::Profile::kA, 64 << 10}, {wac::Profile::kB, 64 << 10}, {wac::Profile::kA, 64 << 20}};
const StablePolicy kPolicies[] = {StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce, StablePolicy::kFork,
                                  StablePolicy::kAuto};

std::string Ratio(const wac::WacRun* run, const wac::WacRun* base) {
  if (!run || run->verdict == "unsupported") return "unsup";
  if (!base || base->ops_per_s <= 0) return "-";
  return fmt::format("{:.2f}x{}", run->ops_per_s / base->ops_per_s, run->verdict == "corrupt" ? "!" : "");
}

int RunBench(const BenchArgs& a) {
  const bool tty = isatty(STDERR_FILENO);
  StopSignal stop;  // before the first thread starts; the mounts below go when this returns
  std::vector<std::unique_ptr<LoopMount>> mounts;  // stable_writes 0 and 1
  std::string kernel_note;
  // Both loop devices use direct I/O, like our O_DIRECT file leg. If the
  // kernel refuses it for either, both run buffered (a fair sw1/sw0) and the
  // report names the loop mode and why.
  std::string loop_mode, loop_note;
  if (a.kernel)
    for (bool direct : {true, false}) {
      for (bool sw : {false, true}) {
        if (stop.stopped()) break;
        auto m = LoopMount::Create(sw, 1ull << 30, direct);
        if (!m) {
          kernel_note = m.error().message();
          mounts.clear();
          break;
        }
        if (!(*m)->io_note().empty() && loop_note.empty()) loop_note = (*m)->io_note();
        mounts.push_back(std::move(*m));
      }
      const bool all_direct =
          !mounts.empty() && std::all_of(mounts.begin(), mounts.end(), [](const auto& m) { return m->direct_io(); });
      if (mounts.empty() || all_direct || !direct) {
        if (!mounts.empty()) loop_mode = all_direct ? "direct" : "buffered";
        break;
      }
      mounts.clear();  // one refused direct I/O: set both up buffered
    }
  // Every configuration of the matrix, compared in interleaved rounds.
  std::vector<wac::WacConfig> configs;
  std::vector<std::string> keys;  // "A 64K/none", "A 64K/kernel-sw1"
  auto add = [&](const Workload& w, StablePolicy pol, const std::string& target, const std::string& label) {
    wac::WacConfig cfg;
    cfg.profile = w.profile;
    cfg.policy = pol;
    cfg.target = target;
    cfg.stack = a.stack;
    cfg.threads = a.threads;
    cfg.file_size = w.file_size;
    cfg.duration_s = a.duration;
    cfg.live_checker = false;  // measure the writers; the read-back and scrub still judge
    cfg.cancel = &stop.flag();
    configs.push_back(cfg);
    keys.push_back(w.name() + "/" + label);
  };
  for (const Workload& w : kWorkloads) {
    for (StablePolicy p : kPolicies) add(w, p, "stack", PolicyName(p));
    for (size_t i = 0; i < mounts.size(); i++) add(w, StablePolicy::kAuto, mounts[i]->dir(), i ? "kernel-sw1" : "kernel-sw0");
  }
  auto on_start = [&](size_t i) {
    if (tty) fmt::print(stderr, "\rbench {}...{:30}", keys[i], "");
  };
  Result<std::vector<std::optional<wac::WacRun>>> done = std::vector<std::optional<wac::WacRun>>{};
  if (!stop.stopped()) done = wac::RunInterleaved(configs, a.rounds, on_start);
  if (!done) {
    fmt::print(stderr, "stablecache bench: {}\n", done.error().message());
    return 2;
  }
  // Interrupted (Ctrl-C): the configurations that ran, as a partial report.
  const bool interrupted = stop.stopped();
  std::vector<wac::WacRun> runs;
  std::map<std::string, const wac::WacRun*> by;
  runs.reserve(keys.size());
  for (size_t i = 0; i < keys.size() && i < done->size(); i++)
    if ((*done)[i]) {
      runs.push_back(std::move(*(*done)[i]));
      by.emplace(keys[i], &runs.back());
    }
  if (tty) fmt::print(stderr, "\r{:70}\r", "");
  auto get = [&](const std::string& k) -> const wac::WacRun* {
    auto it = by.find(k);
    return it == by.end() ? nullptr : it->second;
  };

  if (a.json) {
    nlohmann::json j = {
        {"runs", nlohmann::json::array()}, {"ratios", nlohmann::json::object()}, {"interrupted", interrupted}};
    for (const auto& r : runs) j["runs"].push_back(wac::RunToJson(r));
    for (const Workload& w : kWorkloads) {
      const wac::WacRun* none = get(w.name() + "/none");
      for (StablePolicy p : kPolicies)
        if (const wac::WacRun* r = get(w.name() + "/" + PolicyName(p)); r && none && none->ops_per_s > 0 && r->verdict != "unsupported")
          j["ratios"][w.name()][PolicyName(p)] = r->ops_per_s / none->ops_per_s;
      const wac::WacRun* k0 = get(w.name() + "/kernel-sw0");
      const wac::WacRun* k1 = get(w.name() + "/kernel-sw1");
      if (k0 && k1 && k0->ops_per_s > 0) j["ratios"][w.name()]["kernel_stable_writes"] = k1->ops_per_s / k0->ops_per_s;
    }
    if (!kernel_note.empty()) j["kernel_note"] = kernel_note;
    if (!loop_mode.empty()) j["kernel_loop"] = loop_mode;  // "direct" or "buffered"
    if (!loop_note.empty()) j["kernel_loop_note"] = loop_note;
    fmt::print("{}\n", j.dump(2));
    return interrupted ? StopSignal::kExitCode : 0;
  }
  const std::string loop_desc = loop_mode == "direct"     ? "a direct-I/O loop device (losetup --direct-io=on)"
                                : loop_mode == "buffered" ? "a BUFFERED loop device (direct I/O refused, see below)"
                                                          : "a loop device";
  fmt::print("stablecache bench: {} threads, {:g} s per configuration in {} interleaved rounds, stack '{}'.\n"
             "Ratios are ops/s relative to policy none in the same run ('!' marks a corrupt verdict, expected only\n"
             "for none); the kernel columns are ext4 on {},\nstable_writes=1 relative to 0.\n\n",
             a.threads, a.duration, a.rounds, a.stack, loop_desc);
  fmt::print("{:<8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>12} {:>12} {:>8}\n", "workload", "none ops/s", "none",
             "wait", "bounce", "fork", "auto", "ext4 sw=0", "ext4 sw=1", "sw1/sw0");
  for (const Workload& w : kWorkloads) {
    const wac::WacRun* none = get(w.name() + "/none");
    const wac::WacRun* k0 = get(w.name() + "/kernel-sw0");
    const wac::WacRun* k1 = get(w.name() + "/kernel-sw1");
    std::string none_ops = none && none->verdict != "unsupported" ? fmt::format("{:.0f}", none->ops_per_s) : "unsup";
    auto kops = [](const wac::WacRun* k) { return k ? fmt::format("{:.0f}", k->ops_per_s) : std::string("-"); };
    fmt::print("{:<8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>12} {:>12} {:>8}\n", w.name(), none_ops,
               none && none->verdict == "corrupt" ? "corrupt" : (none && none->verdict == "clean" ? "clean" : "-"),
               Ratio(get(w.name() + "/wait"), none), Ratio(get(w.name() + "/bounce"), none),
               Ratio(get(w.name() + "/fork"), none), Ratio(get(w.name() + "/auto"), none), kops(k0), kops(k1),
               Ratio(k1, k0));
  }
  if (!kernel_note.empty()) fmt::print("\nkernel baseline skipped: {}\n", kernel_note);
  if (!loop_note.empty())
    fmt::print("\nkernel loop devices run {}: {}\n", loop_mode == "buffered" ? "buffered" : "with direct I/O", loop_note);
  fmt::print("\n{}", wac::RunsTable(runs));
  if (interrupted) fmt::print("interrupted: a partial report of the configurations that ran\n");
  return interrupted ? StopSignal::kExitCode : 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("bench", "policy matrix (A,B at 64K; A at 64M) as ratios to none, beside ext4's "
                                          "stable_writes cost");
  auto a = std::make_shared<BenchArgs>();
  cmd->add_option("--duration", a->duration, "seconds per configuration, split over the rounds")->capture_default_str()->check(Seconds());
  cmd->add_option("--rounds", a->rounds, "interleaved rounds the duration is split over")
      ->capture_default_str()
      ->check(NumberIn<unsigned>(1, 100));
  cmd->add_option("--threads", a->threads, "writer threads")->capture_default_str()->check(NumberIn<uint32_t>(1, 4096));
  cmd->add_option("--stack", a->stack, "stack spec for the library runs")->capture_default_str();
  cmd->add_flag("!--no-kernel", a->kernel, "skip the ext4 loop-device baseline");
  cmd->add_flag("--json", a->json, "JSON report on stdout");
  cmd->callback([a, &exit_code] { exit_code = RunBench(*a); });
}

}  // namespace stablecache::cli
