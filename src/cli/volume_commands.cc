// `stablecache info | check | scrub SPEC`: what a stack holds on its
// medium, whether every block reads back, and whether its redundancy
// agrees (and, with --repair, rewriting the copies that do not).
//
// None of them formats anything: a blank device is an error. They open the
// stack exactly as an application would (so a spec that disagrees with the
// medium fails the same way), and the exit code says what was found:
// 0 clean, 1 problems found or the stack could not be opened, 2 usage.
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "stablecache/stack.h"

namespace stablecache::cli {

namespace {

struct VolumeArgs {
  std::string spec;
  bool json = false;
  bool repair = false;
};

int Fail(const char* cmd, const Status& st) {
  fmt::print(stderr, "stablecache {}: {}\n", cmd, st.ToString());
  return 1;
}

// Nothing is formatted, and unless it is to repair, nothing is written:
// sets are assembled for inspection (no events bump, no resync).
Result<std::shared_ptr<BlockDevice>> OpenExisting(const std::string& spec, bool repair = false) {
  BuildOptions bo;
  bo.format = false;
  bo.inspect = !repair;
  return BuildStack(spec, bo);
}

int RunInfo(const VolumeArgs& a) {
  auto dev = OpenExisting(a.spec);
  if (!dev) return Fail("info", dev.error());
  MediumReport report;
  (*dev)->DescribeMedium(report);
  if (a.json) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : report) {
      nlohmann::json f = nlohmann::json::object();
      for (const auto& [k, v] : l.fields) f[k] = v;
      layers.push_back({{"layer", l.name}, {"fields", f}});
    }
    fmt::print("{}\n", nlohmann::json{{"spec", a.spec}, {"size_bytes", (*dev)->Info().size_bytes}, {"layers", layers}}.dump(2));
    return 0;
  }
  fmt::print("{}: {} bytes\n", a.spec, (*dev)->Info().size_bytes);
  for (const auto& l : report) {
    fmt::print("{}\n", l.name);
    for (const auto& [k, v] : l.fields) fmt::print("  {:<14} {}\n", k, v);
  }
  return 0;
}

// Reads every block through the whole stack; a failed chunk is read again
// block by block to name the blocks.
struct ReadCheck {
  uint64_t blocks = 0;
  std::vector<std::pair<uint64_t, std::string>> bad;  // block, why
};

ReadCheck ReadEverything(BlockDevice& dev) {
  constexpr uint32_t kChunk = 1 << 20;
  const uint64_t size = dev.Info().size_bytes / 4096 * 4096;
  const bool tty = isatty(STDERR_FILENO);
  std::vector<std::byte> buf(kChunk);
  ReadCheck rc;
  for (uint64_t off = 0; off < size; off += kChunk) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kChunk, size - off));
    if (!ReadSync(dev, off, buf.data(), n).ok())
      for (uint64_t b = off; b < off + n; b += 4096)
        if (Status st = ReadSync(dev, b, buf.data(), 4096); !st.ok()) rc.bad.emplace_back(b / 4096, st.message());
    rc.blocks += n / 4096;
    if (tty) fmt::print(stderr, "\rreading: {:3}%", (off + n) * 100 / size);
  }
  if (tty) fmt::print(stderr, "\r");
  return rc;
}

int RunCheck(const VolumeArgs& a, const char* cmd) {
  auto dev = OpenExisting(a.spec, a.repair);
  if (!dev) return Fail(cmd, dev.error());
  ReadCheck rc;
  if (std::string(cmd) == "check") rc = ReadEverything(**dev);
  ScrubReport scrub;
  scrub.repair = a.repair;
  if (Status st = (*dev)->Scrub(scrub); !st.ok()) return Fail(cmd, st);
  const bool clean = rc.bad.empty() && (scrub.clean() || (a.repair && scrub.unreadable == 0));
  if (a.json) {
    nlohmann::json bad = nlohmann::json::array();
    for (size_t i = 0; i < std::min<size_t>(rc.bad.size(), 64); i++)
      bad.push_back({{"block", rc.bad[i].first}, {"error", rc.bad[i].second}});
    nlohmann::json findings = nlohmann::json::array();
    for (size_t i = 0; i < std::min<size_t>(scrub.findings.size(), 64); i++) {
      const auto& f = scrub.findings[i];
      findings.push_back({{"kind", ScrubKindName(f.kind)}, {"layer", f.layer}, {"block", f.block}, {"detail", f.detail}});
    }
    nlohmann::json j = {{"spec", a.spec},
                        {"blocks_read", rc.blocks},
                        {"unreadable_through_stack", rc.bad.size()},
                        {"read_errors", bad},
                        {"scrub",
                         {{"blocks_checked", scrub.blocks_checked},
                          {"mirror_divergence", scrub.mirror_divergence},
                          {"parity_mismatch", scrub.parity_mismatch},
                          {"degraded", scrub.degraded},
                          {"unreadable", scrub.unreadable},
                          {"repaired", scrub.repaired},
                          {"findings", findings}}},
                        {"clean", clean}};
    fmt::print("{}\n", j.dump(2));
    return clean ? 0 : 1;
  }
  if (std::string(cmd) == "check")
    fmt::print("read {} blocks through the stack: {} unreadable\n", rc.blocks, rc.bad.size());
  for (size_t i = 0; i < std::min<size_t>(rc.bad.size(), 16); i++)
    fmt::print("  block {}: {}\n", rc.bad[i].first, rc.bad[i].second);
  fmt::print("scrub: {} blocks checked, {} diverged, {} parity mismatches, {} degraded, {} unreadable{}\n",
             scrub.blocks_checked, scrub.mirror_divergence, scrub.parity_mismatch, scrub.degraded, scrub.unreadable,
             a.repair ? fmt::format(", {} repaired", scrub.repaired) : "");
  for (size_t i = 0; i < std::min<size_t>(scrub.findings.size(), 16); i++) {
    const auto& f = scrub.findings[i];
    fmt::print("  {} {} block {}: {}\n", f.layer, ScrubKindName(f.kind), f.block, f.detail);
  }
  fmt::print("{}\n", clean ? "clean" : "PROBLEMS FOUND");
  return clean ? 0 : 1;
}

CLI::App* AddVolumeCommand(CLI::App& app, const char* name, const char* help, std::shared_ptr<VolumeArgs> args) {
  CLI::App* cmd = app.add_subcommand(name, help);
  cmd->add_option("spec", args->spec, "stack spec, top to bottom, e.g. 'mirror([integrity,file:/a],[integrity,file:/b])'")
      ->required();
  cmd->add_flag("--json", args->json, "print JSON on stdout");
  return cmd;
}

}  // namespace

void AddVolumeCommands(CLI::App& app, int& exit_code) {
  auto info = std::make_shared<VolumeArgs>();
  AddVolumeCommand(app, "info", "what a stack keeps on its medium: formats, uuids, geometry, generations, state", info)
      ->callback([info, &exit_code] { exit_code = RunInfo(*info); });
  auto check = std::make_shared<VolumeArgs>();
  AddVolumeCommand(app, "check", "read every block through the stack and scrub its redundancy; exit 1 on problems",
                   check)
      ->callback([check, &exit_code] { exit_code = RunCheck(*check, "check"); });
  auto scrub = std::make_shared<VolumeArgs>();
  CLI::App* s = AddVolumeCommand(app, "scrub", "compare mirror legs and parity; --repair rewrites the bad copies", scrub);
  s->add_flag("--repair", scrub->repair, "rewrite bad copies from good ones");
  s->callback([scrub, &exit_code] { exit_code = RunCheck(*scrub, "scrub"); });
}

}  // namespace stablecache::cli
