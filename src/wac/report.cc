#include "wac/report.h"

#include <fmt/format.h>

namespace stablecache::wac {

nlohmann::json RunToJson(const WacRun& r) {
  nlohmann::json bad = nlohmann::json::array();
  for (const BadBlock& b : r.bad_blocks) bad.push_back({{"block", b.block}, {"kind", b.kind}});
  return {
      {"profile", std::string(1, ProfileLetter(r.profile))},
      {"policy", r.policy},
      {"effective_policy", r.effective_policy},
      {"target", r.target},
      {"stack", r.stack},
      {"threads", r.threads},
      {"file_size", r.file_size},
      {"duration_s", r.duration_s},
      {"ops", r.ops},
      {"ops_per_s", r.ops_per_s},
      {"bytes_written", r.bytes_written},
      {"bytes_bounced", r.bytes_bounced},
      {"writer_wait_p99_us", r.writer_wait_p99_us},
      {"stable_waits", r.stable_waits},
      {"forks", r.forks},
      {"checker_reads", r.checker_reads},
      {"live_partial_mapped_stores", r.live_partial_mapped_stores},
      {"live_scribbled_direct_writes", r.live_scribbled_direct_writes},
      {"mapped_store_sigbus", r.mapped_store_sigbus},
      {"direct_writes", r.direct_writes},
      {"scribble_overwrites", r.scribble_overwrites},
      {"violations",
       {{"modified_in_flight", r.violations.modified_in_flight},
        {"integrity_errors", r.violations.integrity_errors},
        {"mirror_divergence", r.violations.mirror_divergence},
        {"parity_mismatch", r.violations.parity_mismatch},
        {"readback_mismatch", r.violations.readback_mismatch},
        {"torn_live", r.violations.torn_live},
        {"unreadable", r.violations.unreadable},
        {"degraded", r.violations.degraded}}},
      {"bad_blocks", bad},
      {"verdict", r.verdict},
      {"note", r.note},
      {"interrupted", r.interrupted},
  };
}

std::string RunsTable(const std::vector<WacRun>& runs) {
  std::string out = fmt::format("{:<3} {:<7} {:<6} {:>8} {:>7} {:>10} {:>12} {:>9} {:>12} {:>6} {:>6} {:>6} {:>6} {:>6}  {}\n",
                                "pro", "policy", "ran", "size", "threads", "ops", "ops/s", "p99 us", "bounced",
                                "mif", "integ", "mirror", "parity", "rback", "verdict");
  for (const WacRun& r : runs) {
    if (r.verdict == "unsupported") {
      out += fmt::format("{:<3} {:<7} {:<6} {:>8} {:>7} {:>10} {:>12} {:>9} {:>12} {:>6} {:>6} {:>6} {:>6} {:>6}  unsupported: {}\n",
                         ProfileLetter(r.profile), r.policy, "-", r.file_size, r.threads, "-", "-", "-", "-", "-", "-",
                         "-", "-", "-", r.note);
      continue;
    }
    const Violations& v = r.violations;
    out += fmt::format("{:<3} {:<7} {:<6} {:>8} {:>7} {:>10} {:>12.0f} {:>9.1f} {:>12} {:>6} {:>6} {:>6} {:>6} {:>6}  {}{}{}\n",
                       ProfileLetter(r.profile), r.policy, r.effective_policy, r.file_size, r.threads, r.ops,
                       r.ops_per_s, r.writer_wait_p99_us, r.bytes_bounced, v.modified_in_flight, v.integrity_errors,
                       v.mirror_divergence, v.parity_mismatch, v.readback_mismatch, r.verdict,
                       v.torn_live ? fmt::format(" ({} torn live)", v.torn_live) : "",
                       v.unreadable ? fmt::format(" ({} unreadable)", v.unreadable) : "");
  }
  return out;
}

}  // namespace stablecache::wac
