// `stablecache demo`: writes, syncs and reads back through the cache over a
// real stack, then reopens the stack with a cold cache and checks the bytes
// that reached the device.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "stablecache/cache.h"
#include "stablecache/stack.h"

namespace stablecache::cli {

namespace {

struct DemoArgs {
  std::string stack = "file";
  std::string size = "16M";
  std::string policy = "auto";
};

int Fail(const Status& st) {
  fmt::print(stderr, "stablecache demo: {}\n", st.ToString());
  return 1;
}

// A bad option value is a usage error: exit 2, like the parser's own.
int UsageError(const Status& st, const char* option) {
  fmt::print(stderr, "stablecache demo: {}: {}\n", option, st.message());
  return 2;
}

int RunDemo(const DemoArgs& a) {
  auto size = ParseSize(a.size);
  if (!size) return UsageError(size.error(), "--size");
  auto policy = ParsePolicy(a.policy);
  if (!policy) return UsageError(policy.error(), "--policy");
  std::string tmp = (std::filesystem::temp_directory_path() / fmt::format("stablecache-demo-{}.img", getpid())).string();
  BuildOptions bo{tmp, *size};
  std::vector<std::string> warnings;
  bo.warnings = &warnings;
  if (isatty(STDERR_FILENO))  // a mirror or parity leg being rebuilt: show how far
    bo.resync_progress = [](std::string_view what, uint64_t done, uint64_t total) {
      fmt::print(stderr, "\r{}: {} / {} MiB{}", what, done >> 20, total >> 20, done == total ? "\n" : "");
    };
  auto dev = BuildStack(a.stack, bo);
  if (!dev) return Fail(dev.error());
  for (const auto& w : warnings) fmt::print(stderr, "stablecache demo: note: {}\n", w);

  CacheOptions co;
  co.capacity_bytes = 4ull << 20;  // smaller than the file: eviction and readahead both run
  co.policy = *policy;
  auto cache = Cache::Create(co);
  if (!cache) return Fail(cache.error());
  auto file = (*cache)->Open(*dev);
  if (!file) return Fail(file.error());
  fmt::print("stack        {}  ({} bytes, policy {})\n", (*dev)->Info().name, (*dev)->Info().size_bytes,
             PolicyName((*file)->EffectivePolicy()));

  std::vector<std::byte> data(*size);
  std::mt19937_64 rng(42);
  for (auto& b : data) b = std::byte(rng() & 0xff);
  for (uint64_t off = 0; off < data.size(); off += 64 << 10) {
    auto w = (*file)->Write(off, {data.data() + off, std::min<size_t>(64 << 10, data.size() - off)});
    if (!w) return Fail(w.error());
  }
  if (Status st = (*file)->Sync(); !st.ok()) return Fail(st);
  std::vector<std::byte> back(data.size());
  auto r = (*file)->Read(0, back);
  if (!r) return Fail(r.error());
  bool same = *r == data.size() && back == data;
  CacheStats s = (*cache)->Stats();
  fmt::print("wrote        {} bytes, synced, read back: {}\n", data.size(), same ? "identical" : "MISMATCH");
  fmt::print("cache        capacity {} pages, peak {} pages, {} evictions, {} readahead pages, {} pages written\n",
             s.capacity_pages, s.max_cached_pages, s.evictions, s.readahead_pages, s.pages_written);
  if (Status st = (*file)->Close(); !st.ok()) return Fail(st);

  // A cold cache over the same device: the bytes must have reached it.
  auto cold = Cache::Create(co);
  if (!cold) return Fail(cold.error());
  auto again = (*cold)->Open(*dev, FileOptions{.initial_size = data.size()});
  if (!again) return Fail(again.error());
  std::fill(back.begin(), back.end(), std::byte{0});
  r = (*again)->Read(0, back);
  if (!r) return Fail(r.error());
  bool durable = *r == data.size() && back == data;
  fmt::print("cold reread  {}\n", durable ? "identical: the device holds what was written" : "MISMATCH");
  std::vector<LayerStats> layers;
  (*dev)->CollectStats(layers);
  for (auto& l : layers)
    fmt::print("layer        {:<40} bios {:>7}  read {:>10}  written {:>10}  errors {}\n", l.name, l.bios, l.bytes_read,
               l.bytes_written, l.errors);
  (void)(*again)->Close();
  std::filesystem::remove(tmp);
  return same && durable ? 0 : 1;
}

}  // namespace

void AddDemoCommand(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand("demo", "write, sync and read back through the cache over a real stack");
  cmd->add_option("--stack", args->stack, "stack spec, top to bottom (a bare 'file' is a temporary file)");
  cmd->add_option("--size", args->size, "bytes to write (K/M/G suffixes)");
  cmd->add_option("--policy", args->policy, "stable-write policy: none, wait, bounce, fork, auto");
  cmd->callback([args, &exit_code] { exit_code = RunDemo(*args); });
}

}  // namespace stablecache::cli
