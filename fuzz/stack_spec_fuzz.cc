// Fuzzes the stack-spec parser and BuildStack: any input is a clean Status
// or a device, never a crash, a leak or a sanitizer report.
//
// Sandboxed: a spec with a `file` leaf is parsed but not built (fuzz input
// never names files to create), memory leaves are capped at 16 MiB in all,
// and delays at 1 ms, so one input costs little and never waits long.
#include <cstdint>
#include <string>
#include <string_view>

#include "stack/stack_spec.h"
#include "fuzz_check.h"
#include "stablecache/stack.h"

namespace {

using stablecache::LayerSpec;
using stablecache::StackSpec;

constexpr uint64_t kMaxMemory = 16 << 20;
constexpr uint64_t kMaxDelayUs = 1000;

uint64_t SizeOr(std::string_view text, uint64_t fallback) {
  auto v = stablecache::ParseSize(text);
  return v ? *v : fallback;
}

// False when building `stack` could touch files, hold much memory or sleep.
bool Buildable(const StackSpec& stack, uint64_t& memory) {
  for (const LayerSpec& l : stack) {
    if (l.name == "file") return false;
    for (const auto& [k, v] : l.options) {
      if ((k == "us" || k == "delay_us") && SizeOr(v, 0) > kMaxDelayUs) return false;
      if (k == "size" && l.name == "memory" && l.value.empty()) memory += SizeOr(v, 0);
    }
    if (l.name == "memory" && !l.value.empty()) memory += SizeOr(l.value, 0);
    if (memory > kMaxMemory) return false;
    for (const StackSpec& leg : l.legs)
      if (!Buildable(leg, memory)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view spec(reinterpret_cast<const char*>(data), size);
  auto parsed = stablecache::ParseStackSpec(spec);
  if (!parsed) {
    FUZZ_CHECK(parsed.error().code() == stablecache::Code::kInvalidArgument, "code %d",
               static_cast<int>(parsed.error().code()));
    FUZZ_CHECK(!parsed.error().message().empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(!parsed->empty(), "a parsed spec without layers");
  uint64_t memory = 0;
  if (!Buildable(*parsed, memory)) return 0;
  auto dev = stablecache::BuildStack(spec);  // no default file: a bare `file` is an error
  if (!dev) {
    FUZZ_CHECK(!dev.error().ok() && !dev.error().message().empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(*dev != nullptr, "BuildStack returned no device");
  const stablecache::DeviceInfo& info = (*dev)->Info();
  FUZZ_CHECK(info.size_bytes <= kMaxMemory, "a device larger than its leaves: %llu",
             static_cast<unsigned long long>(info.size_bytes));
  std::vector<stablecache::LayerStats> layers;
  (*dev)->CollectStats(layers);
  FUZZ_CHECK(!layers.empty(), "no layer stats");
  return 0;
}
