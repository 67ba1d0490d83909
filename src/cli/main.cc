#include <cstdio>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"stablecache: a userspace page cache that keeps pages stable under I/O"};
  app.require_subcommand(1);
  int exit_code = 0;
  stablecache::cli::AddDemoCommand(app, exit_code);
  stablecache::cli::AddWacCommand(app, exit_code);
  stablecache::cli::AddBenchCommand(app, exit_code);
  stablecache::cli::AddVolumeCommands(app, exit_code);
  // CLI11 says only "A subcommand is required" for a misspelt one.
  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && first != "demo" && first != "wac" && first != "bench" &&
      first != "info" && first != "check" && first != "scrub") {
    fmt::print(stderr,
               "stablecache: unknown command '{}' (commands: demo, wac, bench, info, check, scrub; see stablecache "
               "--help)\n",
               first);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Every usage error exits 2 (README, DESIGN.md section 4), with one
    // line that names what was wrong; CLI11's own codes (105, 109, ...) say
    // nothing a script can use.
    std::string help = "stablecache";
    for (const CLI::App* sub : app.get_subcommands()) help += " " + sub->get_name();
    fmt::print(stderr, "stablecache: {} (see {} --help)\n", e.what(), help);
    return 2;
  } catch (const std::logic_error& e) {
    // CLI11 converts a flag's value (--no-live-check=N) with std::stoll,
    // which throws out_of_range or invalid_argument: still a usage error.
    fmt::print(stderr, "stablecache: a flag was given a value it cannot take ({}); see stablecache --help\n", e.what());
    return 2;
  }
  return exit_code;
}
