// Fuzzes `stablecache wac`'s option parsing (ParseWacOptions: CLI11 and
// the checks after it) without running a workload. The input is the
// argument list, one argument per line. Every outcome is options that keep
// the run's preconditions or a one-line kInvalidArgument error; never an
// exception, a crash or a leak.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cli/wac_options.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args;
  std::string cur;
  for (size_t i = 0; i < size; i++) {
    char c = static_cast<char>(data[i]);
    if (c == '\n') {
      args.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) args.push_back(std::move(cur));
  if (args.size() > 32) return 0;
  auto o = stablecache::cli::ParseWacOptions(args);
  if (!o) {
    const std::string& m = o.error().message();
    FUZZ_CHECK(o.error().code() == stablecache::Code::kInvalidArgument, "code %d", static_cast<int>(o.error().code()));
    FUZZ_CHECK(!m.empty(), "an error without a message");
    FUZZ_CHECK(m.find('\n') == std::string::npos, "a message of several lines: %s", m.c_str());
    return 0;
  }
  if (o->help) return 0;
  FUZZ_CHECK(!o->profiles.empty(), "no profile");
  FUZZ_CHECK(!o->policies.empty(), "no policy");
  FUZZ_CHECK(o->threads >= 1 && o->threads <= 4096, "threads %u", o->threads);
  FUZZ_CHECK(o->file_size >= 4096 && o->file_size % 4096 == 0, "file size %llu",
             static_cast<unsigned long long>(o->file_size));
  FUZZ_CHECK(std::isfinite(o->duration_s) && o->duration_s > 0, "duration %g", o->duration_s);
  FUZZ_CHECK(!o->target.empty(), "empty target");
  return 0;
}
