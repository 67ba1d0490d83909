// wac: the write-after-checksum torture run (seed 004), against this
// library ("stack" target) or a kernel filesystem (a directory target).
//
// Writers scribble self-describing blocks (block_format.h) on a small hot
// file while syncs race writeback. Writers of one block are ordered by a
// per-block lock inside the tool, so it knows the last content of every
// block; they still hammer the same few pages. The tool trusts no layer it
// tests: on the library target a checker re-reads blocks from the device
// while the run goes on (catching what a later writeback would cover up),
// and every run ends with a read-back that bypasses all caches and a scrub.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "stablecache/cache.h"
#include "stablecache/status.h"

namespace stablecache::wac {

// A: write()+sync_range. B: mapped writers+msync. C: half of each.
// D: C with the write() writers replaced by direct writers (even writers
// direct, odd ones mapped). E: A with direct writers. F: B with direct I/O
// on the mapped file: every writer picks, per op at random, a mapped store
// (+msync) or a direct write of the block, so direct and mapped access meet
// on the same pages. Every direct write is scribbled: its writer keeps
// overwriting the buffer while the write is in flight (block_format.h).
enum class Profile : uint8_t { kA, kB, kC, kD, kE, kF };
char ProfileLetter(Profile p);
std::string ProfileDescription(Profile p);
// "A,C", "all" -> profiles; errors name the bad letter.
[[nodiscard]] Result<std::vector<Profile>> ParseProfiles(std::string_view text);
// "none,fork", "all" -> policies.
[[nodiscard]] Result<std::vector<StablePolicy>> ParsePolicies(std::string_view text);

struct WacConfig {
  Profile profile = Profile::kA;
  StablePolicy policy = StablePolicy::kAuto;
  std::string target = "stack";  // "stack" or a directory on a kernel filesystem
  std::string stack = "verify,integrity,file";
  uint32_t threads = 64;
  uint64_t file_size = 64 << 10;
  double duration_s = 5;
  bool live_checker = true;       // library target only
  std::string progress_label;     // shown on stderr when it is a terminal
  // When set and it becomes true (SIGINT), writers stop at their next op;
  // the run still syncs, reads back and scrubs what it wrote, and reports.
  const std::atomic<bool>* cancel = nullptr;
};

// A violation the tool saw, by block number.
struct BadBlock {
  uint64_t block;
  std::string kind;  // torn, stale, lost, misdirected, integrity, diverged, parity, unreadable
};

struct Violations {
  uint64_t modified_in_flight = 0;  // verify layers: blocks changed during a write
  uint64_t integrity_errors = 0;    // integrity layers (and kernel EIO on read-back)
  uint64_t mirror_divergence = 0;   // scrub
  uint64_t parity_mismatch = 0;     // scrub
  uint64_t readback_mismatch = 0;   // final read-back != last content written
  uint64_t torn_live = 0;           // live checker: torn or misdirected device content
  uint64_t unreadable = 0;          // scrub: blocks no leg could read; mapped stores that got SIGBUS
  uint64_t degraded = 0;            // scrub: blocks (parity: stripes) with one copy unreadable
  uint64_t total() const {
    return modified_in_flight + integrity_errors + mirror_divergence + parity_mismatch + readback_mismatch +
           torn_live + unreadable + degraded;
  }
};

struct WacRun {
  Profile profile;
  std::string policy;            // as asked ("auto")
  std::string effective_policy;  // what ran ("fork"); "kernel" on a directory
  std::string target, stack;
  uint32_t threads = 0;
  uint64_t file_size = 0;
  double duration_s = 0;
  uint64_t ops = 0;
  double ops_per_s = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_bounced = 0;
  double writer_wait_p99_us = 0;  // p99 of a writer's store (write(), or the mapped store) latency
  uint64_t stable_waits = 0, forks = 0;
  uint64_t checker_reads = 0;     // live checker block reads
  // Live reads that found a block half old, half new where mapped writers
  // store (B, C, D, F): writeback copied the page while a store was landing (a
  // mapped store is not atomic, on Linux either). The store faults, the
  // page is dirty again and the read-back judges the final bytes. Not a
  // violation; torn blocks where only write() stores are (torn_live) are.
  uint64_t live_partial_mapped_stores = 0;
  // Live reads that found a block torn between a direct write's content and
  // its scribble (D, E, F): what a scribbled write may leave on the device
  // (the read-back judges it byte-wise). Not a violation.
  uint64_t live_scribbled_direct_writes = 0;
  // Mapped stores that got SIGBUS: the page's fault could not read the
  // block from the device (under none, one the integrity layer rejects).
  // Each also counts in violations.unreadable; the store did not happen.
  uint64_t mapped_store_sigbus = 0;
  uint64_t direct_writes = 0;       // scribbled direct writes (D, E, F)
  uint64_t scribble_overwrites = 0; // buffer overwrites while they were in flight
  Violations violations;
  std::vector<BadBlock> bad_blocks;  // the first few, by block number
  std::string verdict;               // clean, corrupt, unsupported
  std::string note;                  // why unsupported, or what was bypassed
  bool interrupted = false;          // stopped early by WacConfig::cancel
};

// Folds a later run of the same configuration into `into` (interleaved
// rounds of a benchmark): counts add up, p99 is the worst round's, the
// verdict is the worst one.
void CombineRuns(WacRun& into, const WacRun& more);

using Progress = std::function<void(double elapsed_s, uint64_t ops)>;

// Runs one profile under one policy. An unsupported combination returns a
// run whose verdict is "unsupported" and whose note says why. Errors: bad
// config (kInvalidArgument), I/O errors of the run itself.
[[nodiscard]] Result<WacRun> RunWac(const WacConfig& cfg, const Progress& progress = {});

// The two targets, for RunWac.
[[nodiscard]] Result<WacRun> RunOnLibrary(const WacConfig& cfg, const Progress& progress);
[[nodiscard]] Result<WacRun> RunOnDirectory(const WacConfig& cfg, const Progress& progress);

}  // namespace stablecache::wac
