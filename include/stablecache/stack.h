// Building a BlockDevice stack from a spec string.
//
// Grammar (top to bottom, the last layer is a leaf or a fan-out):
//
//   stack  := layer ( ',' layer )*
//   layer  := name [ ':' value ] [ '(' arg ( ',' arg )* ')' ]
//   arg    := key '=' value            an option of the layer
//           | leg                      a lower device of a fan-out layer
//   leg    := layer | '[' stack ']'    a one-layer leg, or a whole stack
//
// Examples:
//   memory:64M
//   file:/var/tmp/disk.img(size=256M)
//   fault(op=write,offset=0,len=4096,error=EIO,count=1),memory:16M
//   verify,integrity(guard=crc32c),file:/tmp/x
//
// Leaves:  memory:SIZE (late_copy=0|1, delay_us=N), file:PATH (size=SIZE,
//          direct=auto|on|off). A bare `file` uses BuildOptions::default_file.
// Layers:  fault (op, offset, len, error, count, nth=N: fail the Nth
//          matching bio, skip=N, action=fail|drop), verify, delay (us=N),
//          integrity (guard=crc16|crc32c, require=unstable|declared|stable),
//          logwrites (no options; records writes and flushes in memory for
//          crash replay: reach it with dynamic_pointer_cast<LogWritesDevice>
//          on the top of the stack).
// Fan-outs (last layer, legs in parentheses):
//          mirror(leg, leg, ...; require=...)   RAID-1, >= 2 legs
//          parity(leg, leg, leg, ...; require=...)  RAID-5, >= 3 legs
//          e.g. mirror([integrity,file:/a],[integrity,file:/b])
//          Each leg keeps a member record and a write-intent bitmap before
//          its data (doc/mirror_parity_format.md): reopening a spec finds
//          the set, places swapped legs by their recorded role, rebuilds a
//          blank or stale leg, and resyncs regions a crash left dirty, all
//          before BuildStack returns; a spec that disagrees with the medium
//          (leg count, another set's leg, another layer's record) fails.
// Which order for redundancy with integrity: put `integrity` INSIDE each
// leg, mirror([integrity,file:/a],[integrity,file:/b]), so a block that
// fails its check on one leg is read from another and repaired there.
// `integrity,mirror(file:/a,file:/b)` can only fail such a read (the check
// runs after the mirror chose a leg); BuildStack accepts it but says so in
// BuildOptions::warnings.
// Sizes take K, M, G, T suffixes (powers of 1024).
//
// Errors name the spec, the position and what was expected.
// Thread-safe: BuildStack has no shared state.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stablecache/block_device.h"
#include "stablecache/status.h"

namespace stablecache {

struct BuildOptions {
  std::string default_file;      // used by a bare `file` layer
  uint64_t default_file_size = 0;  // size for a file that is created
  // Layers that keep metadata format a blank device (all zero where their
  // record goes). False: a blank device is an error instead (for `info`,
  // `check` and `scrub`, which must not write a new volume).
  bool format = true;
  // Open redundant sets without writing anything (no events bump, dirty
  // regions not resynced, stale legs not rebuilt; parity treats the dirty
  // regions as stale). For `info`, `check` and `scrub` without --repair.
  bool inspect = false;
  // Where BuildStack reports what works but is probably not meant (an
  // integrity layer above a mirror or parity) and what assembly found and
  // did (swapped, blank or stale legs, dirty regions resynced). May be null.
  std::vector<std::string>* warnings = nullptr;
  // Called while a mirror or parity set resyncs during BuildStack (a
  // rebuilt leg, dirty regions): what, bytes done, bytes in this step.
  std::function<void(std::string_view what, uint64_t done, uint64_t total)> resync_progress;
};

[[nodiscard]] Result<std::shared_ptr<BlockDevice>> BuildStack(std::string_view spec,
                                                              const BuildOptions& opts = {});

// Parses "4096", "64K", "1M", "2G". Errors name the text.
[[nodiscard]] Result<uint64_t> ParseSize(std::string_view text);

}  // namespace stablecache
