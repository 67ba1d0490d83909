// The stablecache command line: one function per subcommand.
#pragma once

#include <CLI/CLI.hpp>

namespace stablecache::cli {

// Registers `demo`; the callback stores the exit code.
void AddDemoCommand(CLI::App& app, int& exit_code);
// Registers `wac` (DESIGN.md section 4).
void AddWacCommand(CLI::App& app, int& exit_code);
// Registers `bench`: the policy matrix and the kernel baseline, as ratios.
void AddBenchCommand(CLI::App& app, int& exit_code);
// Registers `info`, `check` and `scrub [--repair]` over a stack spec.
void AddVolumeCommands(CLI::App& app, int& exit_code);

}  // namespace stablecache::cli
