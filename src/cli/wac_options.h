// What `stablecache wac` was asked to do, parsed from its arguments without
// running anything: the CLI and the fuzz target (fuzz/wac_options_fuzz.cc)
// share it. Errors are values; a bad option is an kInvalidArgument Status
// whose message names the option and what was wrong with it.
// Thread-safe: no shared state.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "stablecache/status.h"
#include "wac/wac.h"

namespace stablecache::cli {

// The options as CLI11 fills them (strings where the library parses).
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

// Registers wac's options on `cmd`, filling `a`. `a` must outlive `cmd`.
void AddWacOptions(CLI::App& cmd, WacArgs& a);

struct WacOptions {
  std::vector<wac::Profile> profiles;
  std::vector<StablePolicy> policies;  // {kAuto} on a kernel target
  bool policy_ignored = false;         // --policy given for a kernel target
  uint32_t threads = 64;
  uint64_t file_size = 64 << 10;
  double duration_s = 5;
  std::string stack, target;
  bool json = false;
  bool live_check = true;
  bool help = false;  // --help was asked: nothing else was checked
};

// Checks what CLI11 could not: profile and policy lists, the size, the
// stack spec's syntax (devices are built only when the run starts).
[[nodiscard]] Result<WacOptions> ValidateWacArgs(const WacArgs& a);

// The arguments after "wac", e.g. {"--profile", "A", "--json"}.
[[nodiscard]] Result<WacOptions> ParseWacOptions(const std::vector<std::string>& args);

}  // namespace stablecache::cli
