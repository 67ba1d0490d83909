#include <cstdio>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"stablecache: a userspace page cache that keeps pages stable under I/O"};
  app.require_subcommand(1);
  int exit_code = 0;
  stablecache::cli::AddDemoCommand(app, exit_code);
  stablecache::cli::AddWacCommand(app, exit_code);
  stablecache::cli::AddBenchCommand(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
