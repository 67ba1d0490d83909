#include "cli/wac_options.h"

#include <algorithm>

#include <fmt/format.h>

#include "stack/stack_spec.h"
#include "cli/number_option.h"
#include "stablecache/stack.h"

namespace stablecache::cli {

void AddWacOptions(CLI::App& cmd, WacArgs& a) {
  cmd.add_option("--profile", a.profiles, "A,B,...|all  (A write+sync_range, B mapped+msync, C half each, "
                                          "D C+direct, E A+direct, F B+direct)")
      ->capture_default_str();
  cmd.add_option("--threads", a.threads, "writer threads")->capture_default_str()->check(NumberIn<uint32_t>(1, 4096));
  cmd.add_option("--file-size", a.file_size, "file size, K/M/G suffixes")->capture_default_str();
  cmd.add_option("--duration", a.duration, "seconds per run")->capture_default_str()->check(Seconds());
  cmd.add_option("--policy", a.policies, "none,wait,bounce,fork,auto|all")->capture_default_str();
  cmd.add_option("--stack", a.stack, "stack spec, top to bottom")->capture_default_str();
  cmd.add_option("--target", a.target, "stack (this library) or a directory on a kernel filesystem")
      ->capture_default_str();
  cmd.add_flag("--json", a.json, "JSON report on stdout");
  cmd.add_flag("!--no-live-check", a.live_check,
               "no checker re-reading the device during the run (for timing; the read-back and scrub still run)");
}

Result<WacOptions> ValidateWacArgs(const WacArgs& a) {
  WacOptions o;
  auto profiles = wac::ParseProfiles(a.profiles);
  if (!profiles) return Err(profiles.error().WithContext("--profile"));
  o.profiles = std::move(*profiles);
  auto policies = wac::ParsePolicies(a.policies);
  if (!policies) return Err(policies.error().WithContext("--policy"));
  o.policies = std::move(*policies);
  auto size = ParseSize(a.file_size);
  if (!size) return Err(size.error().WithContext("--file-size"));
  if (*size < 4096 || *size % 4096 != 0)
    return Err(Status::InvalidArgument(
        fmt::format("--file-size {} must be a positive multiple of 4096 (a whole number of 4 KiB blocks)", *size)));
  o.file_size = *size;
  if (a.threads < 1) return Err(Status::InvalidArgument("--threads must be at least 1"));
  o.threads = a.threads;
  if (!(a.duration > 0)) return Err(Status::InvalidArgument("--duration must be above 0 seconds"));
  o.duration_s = a.duration;
  o.target = a.target;
  if (o.target.empty()) return Err(Status::InvalidArgument("--target is empty (use 'stack' or a directory)"));
  o.stack = a.stack;
  if (o.target == "stack") {
    auto spec = ParseStackSpec(a.stack);
    if (!spec) return Err(spec.error().WithContext("--stack"));
  } else {  // the kernel has its own rule: one run per profile
    o.policy_ignored = a.policies != "auto";
    o.policies = {StablePolicy::kAuto};
  }
  o.json = a.json;
  o.live_check = a.live_check;
  return o;
}

Result<WacOptions> ParseWacOptions(const std::vector<std::string>& args) {
  CLI::App cmd{"wac", "wac"};
  WacArgs a;
  AddWacOptions(cmd, a);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  try {
    cmd.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    return WacOptions{.help = true};
  } catch (const CLI::CallForAllHelp&) {
    return WacOptions{.help = true};
  } catch (const CLI::ParseError& e) {
    return Err(Status::InvalidArgument(e.what()));
  } catch (const std::logic_error& e) {
    // CLI11 converts a flag's value (--no-live-check=N) with std::stoll,
    // which throws out_of_range or invalid_argument (found by fuzz_wac_options).
    return Err(Status::InvalidArgument(fmt::format("a flag was given a value it cannot take: {}", e.what())));
  }
  return ValidateWacArgs(a);
}

}  // namespace stablecache::cli
