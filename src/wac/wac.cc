#include "wac/wac.h"

#include <algorithm>

#include <fmt/format.h>

namespace stablecache::wac {

namespace {
constexpr Profile kAllProfiles[] = {Profile::kA, Profile::kB, Profile::kC, Profile::kD, Profile::kE, Profile::kF};
constexpr StablePolicy kAllPolicies[] = {StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce,
                                         StablePolicy::kFork, StablePolicy::kAuto};

// Splits "a,b,c"; empty items are errors.
Result<std::vector<std::string_view>> SplitList(std::string_view text, const char* what) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) return Err(Status::InvalidArgument(fmt::format("empty {} in '{}'", what, text)));
    out.push_back(item);
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}
}  // namespace

char ProfileLetter(Profile p) { return static_cast<char>('A' + static_cast<int>(p)); }

std::string ProfileDescription(Profile p) {
  switch (p) {
    case Profile::kA: return "write threads + sync_range";
    case Profile::kB: return "mapped writers + msync";
    case Profile::kC: return "half write, half mapped";
    case Profile::kD: return "C with scribbled direct writers";
    case Profile::kE: return "A with scribbled direct writers";
    case Profile::kF: return "mapped stores and scribbled direct writes on one file";
  }
  return "?";
}

Result<std::vector<Profile>> ParseProfiles(std::string_view text) {
  if (text == "all") return std::vector<Profile>(std::begin(kAllProfiles), std::end(kAllProfiles));
  auto items = SplitList(text, "profile");
  if (!items) return Err(items.error());
  std::vector<Profile> out;
  for (std::string_view s : *items) {
    if (s.size() != 1 || std::toupper(s[0]) < 'A' || std::toupper(s[0]) > 'F')
      return Err(Status::InvalidArgument(fmt::format("bad profile '{}': use letters A to F, or all", s)));
    out.push_back(static_cast<Profile>(std::toupper(s[0]) - 'A'));
  }
  return out;
}

Result<std::vector<StablePolicy>> ParsePolicies(std::string_view text) {
  if (text == "all") return std::vector<StablePolicy>(std::begin(kAllPolicies), std::end(kAllPolicies));
  auto items = SplitList(text, "policy");
  if (!items) return Err(items.error());
  std::vector<StablePolicy> out;
  for (std::string_view s : *items) {
    auto p = ParsePolicy(s);
    if (!p) return Err(p.error());
    out.push_back(*p);
  }
  return out;
}

void CombineRuns(WacRun& into, const WacRun& more) {
  if (more.verdict == "unsupported") return;
  into.duration_s += more.duration_s;
  into.ops += more.ops;
  into.ops_per_s = into.duration_s > 0 ? static_cast<double>(into.ops) / into.duration_s : 0;
  into.bytes_written += more.bytes_written;
  into.bytes_bounced += more.bytes_bounced;
  into.writer_wait_p99_us = std::max(into.writer_wait_p99_us, more.writer_wait_p99_us);
  into.stable_waits += more.stable_waits;
  into.forks += more.forks;
  into.checker_reads += more.checker_reads;
  into.live_partial_mapped_stores += more.live_partial_mapped_stores;
  into.live_scribbled_direct_writes += more.live_scribbled_direct_writes;
  into.direct_writes += more.direct_writes;
  into.mapped_store_sigbus += more.mapped_store_sigbus;
  into.scribble_overwrites += more.scribble_overwrites;
  Violations& v = into.violations;
  const Violations& m = more.violations;
  v.modified_in_flight += m.modified_in_flight;
  v.integrity_errors += m.integrity_errors;
  v.mirror_divergence += m.mirror_divergence;
  v.parity_mismatch += m.parity_mismatch;
  v.readback_mismatch += m.readback_mismatch;
  v.torn_live += m.torn_live;
  v.unreadable += m.unreadable;
  v.degraded += m.degraded;
  into.interrupted |= more.interrupted;
  for (const BadBlock& b : more.bad_blocks)
    if (into.bad_blocks.size() < 32) into.bad_blocks.push_back(b);
  if (more.verdict == "corrupt") into.verdict = "corrupt";
}

Result<WacRun> RunWac(const WacConfig& cfg, const Progress& progress) {
  if (cfg.threads == 0) return Err(Status::InvalidArgument("--threads must be at least 1"));
  if (cfg.file_size < 4096 || cfg.file_size % 4096 != 0)
    return Err(Status::InvalidArgument(
        fmt::format("--file-size {} must be a positive multiple of 4096 (a whole number of 4 KiB blocks)", cfg.file_size)));
  if (!(cfg.duration_s > 0)) return Err(Status::InvalidArgument("--duration must be above 0 seconds"));
  if (cfg.target == "stack") return RunOnLibrary(cfg, progress);
  return RunOnDirectory(cfg, progress);
}

}  // namespace stablecache::wac
