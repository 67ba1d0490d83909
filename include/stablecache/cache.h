// Cache and File: the page cache and its file API.
//
// A Cache owns a memfd-backed arena of 4 KiB frames and never holds more
// than `capacity_bytes` of file pages. A File is a byte-addressed view of one
// BlockDevice stack through the cache (like a block device's page cache): its
// size changes with Write and Truncate; bytes never written read as zero.
// The size is kept on the medium, in the last two 4 KiB blocks of the device
// (doc/file_format.md): the File may use the device's size rounded down to
// 4 KiB, less 8 KiB. Open of a blank device starts the file at
// FileOptions::initial_size and writes the record before it returns; a
// reopen gets the recorded size.
//  - The size is durable when Sync (or Close) returns, written after the
//    data it covers (ordered mode); a truncate down reaches the medium at
//    the next Sync; SyncRange never writes it. After a crash the file has
//    the size of the last completed record write, which covers every byte
//    a Sync acknowledged. A failed record write is a writeback error (every
//    handle hears of it once) and is retried by the next Sync.
//
// Promises:
//  - Read returns the latest Written bytes; data acknowledged by Sync is on
//    the device; dirty data is never dropped silently.
//  - While a page is under writeback the bytes submitted do not change,
//    whatever the stable-write policy (none excepted: it is the unsafe
//    baseline and exists to show the failure).
//  - Writeback errors follow Linux errseq semantics: each File handle's
//    Sync reports an error that happened since its last Sync (or its open)
//    exactly once.
//
// Thread-safety: Cache and File are thread-safe. One File may be used by
// many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "stablecache/block_device.h"
#include "stablecache/direct.h"
#include "stablecache/status.h"

namespace stablecache {

// What a writer does when it meets a page under writeback.
enum class StablePolicy : uint8_t {
  kNone,    // nothing: unsafe baseline
  kWait,    // wait for writeback to end (Linux)
  kBounce,  // writeback copies the page into a bounce frame; nobody waits
  kFork,    // the writer gets a copy; the old frame stays with the I/O
  kAuto,    // fork if the stack needs stable writes, else none
};
const char* PolicyName(StablePolicy p);
[[nodiscard]] Result<StablePolicy> ParsePolicy(std::string_view name);

struct CacheOptions {
  uint64_t capacity_bytes = 64ull << 20;  // hard cap on cached file pages
  uint32_t io_reserve_frames = 256;       // frames kept for bounce copies
  double dirty_background_ratio = 0.10;   // flushers start here
  double dirty_ratio = 0.40;              // writers are throttled here
  uint32_t flusher_threads = 1;
  uint32_t writeback_interval_ms = 500;   // periodic flush of old dirty data
  uint32_t readahead_pages = 32;          // max sequential readahead window
  uint32_t max_bio_pages = 64;            // writeback bio size cap
  StablePolicy policy = StablePolicy::kAuto;
};

struct FileOptions {
  // The size of a new file (a blank device). 0: whatever the device holds
  // (an empty file if blank). Non-zero and different from the size the
  // device holds, or the size of the file already open on it in this
  // cache: Open fails with kInvalidArgument naming both.
  uint64_t initial_size = 0;
  // Overrides CacheOptions::policy for this file when set.
  std::optional<StablePolicy> policy;
  // The file can be mapped (File::Map). Its pages then live in a memfd of
  // their own, page n at offset n * 4096, so a mapping reaches them with no
  // copy. One frame per page means a page cannot fork: kFork (and kAuto on
  // a stack that needs stable pages) becomes kBounce, whose writeback
  // writes a copy of each page, and nobody waits (EffectivePolicy says
  // so). Every open of one device in a cache must agree (kInvalidArgument
  // otherwise).
  bool mappable = false;
};

class Mapping;
enum class MapAccess : uint8_t { kRead, kReadWrite };

enum SyncRangeFlags : unsigned {
  kSyncWaitBefore = 1,  // wait for writeback already under way in the range
  kSyncWrite = 2,       // start writeback of dirty pages in the range
  kSyncWaitAfter = 4,   // wait for that writeback to finish
};

struct CacheStats {
  uint64_t capacity_pages = 0;
  uint64_t cached_pages = 0;       // frames holding file pages now
  uint64_t max_cached_pages = 0;   // high-water mark
  uint64_t dirty_pages = 0;
  uint64_t writeback_pages = 0;
  uint64_t hits = 0, misses = 0;
  uint64_t readahead_pages = 0;
  uint64_t evictions = 0;
  uint64_t pages_written = 0;      // pages submitted for writeback
  uint64_t writeback_errors = 0;
  uint64_t throttle_waits = 0;
  uint64_t stable_waits = 0;       // writers that waited on writeback
  uint64_t forks = 0;
  uint64_t fork_copies_skipped = 0;  // full-page overwrites: nothing copied
  uint64_t bytes_bounced = 0;      // by the cache's bounce policy
};

class File;

class Cache {
 public:
  [[nodiscard]] static Result<std::shared_ptr<Cache>> Create(const CacheOptions& opts);
  virtual ~Cache() = default;

  // Opens the file that `device` holds. Two opens of one device share pages.
  // Refuses (naming the device and what is there) a device whose last
  // 8 KiB hold a corrupt record or another layer's, and a blank one whose
  // block 0 holds another stablecache layer's superblock.
  [[nodiscard]] virtual Result<std::unique_ptr<File>> Open(std::shared_ptr<BlockDevice> device,
                                                           const FileOptions& opts = {}) = 0;
  virtual CacheStats Stats() const = 0;
  virtual const CacheOptions& Options() const = 0;
};

class File {
 public:
  virtual ~File() = default;

  // Reads up to buf.size() bytes at `offset`; short at end of file.
  [[nodiscard]] virtual Result<size_t> Read(uint64_t offset, std::span<std::byte> buf) = 0;
  // Writes all of `data` at `offset`, extending the file if needed.
  [[nodiscard]] virtual Result<size_t> Write(uint64_t offset, std::span<const std::byte> data) = 0;
  // fsync: writes every dirty page, waits, flushes the device.
  virtual Status Sync() = 0;
  // sync_file_range: flags from SyncRangeFlags. len 0 means to end of file.
  virtual Status SyncRange(uint64_t offset, uint64_t len, unsigned flags) = 0;
  virtual Status Truncate(uint64_t size) = 0;
  [[nodiscard]] virtual Result<uint64_t> Size() const = 0;
  // Writes back and releases the handle. Later calls return kClosed.
  virtual Status Close() = 0;
  virtual StablePolicy EffectivePolicy() const = 0;
  // Reads what the device holds for [offset, offset + out.size()), not the
  // cache's copy, through every layer of the stack (so integrity is
  // checked). Each page is locked and any write of it in flight is waited
  // for first, so the read never races a writeback of those pages; dirty
  // pages stay dirty and their newer bytes are not returned. For checkers
  // and scrubbers. With `scrub`, each page's blocks are also scrubbed in
  // every redundant layer (BlockDevice::ScrubRange) while it is locked.
  // REQUIRES: offset and size multiples of 4096.
  virtual Status ReadBypassingCache(uint64_t offset, std::span<std::byte> out, ScrubReport* scrub = nullptr) = 0;
  // mmap(MAP_SHARED) of [offset, offset + length): see stablecache/mapping.h.
  // REQUIRES: the file was opened with FileOptions::mappable. `offset` is a
  // multiple of 4096; the range may pass EOF (accesses there get SIGBUS)
  // but not the file limit of the device.
  [[nodiscard]] virtual Result<std::unique_ptr<Mapping>> Map(uint64_t offset, size_t length, MapAccess access) = 0;

  // ---- direct I/O: see stablecache/direct.h for alignment, coherency
  // with cached and mapped pages, and what `stability` promises ----
  // Reads up to buf.size() bytes at `offset`; short at end of file.
  [[nodiscard]] virtual Result<size_t> DirectRead(uint64_t offset, std::span<std::byte> buf,
                                                  Stability stability = Stability::kUnstable) = 0;
  // Writes all of `data` at `offset`; the bytes are on the device (not
  // necessarily durable: Sync flushes) when it returns.
  [[nodiscard]] virtual Result<size_t> DirectWrite(uint64_t offset, std::span<const std::byte> data,
                                                   Stability stability = Stability::kUnstable) = 0;
  // Vectored and synchronous: submits `req` and waits for it.
  [[nodiscard]] virtual Result<size_t> DirectIo(const DirectRequest& req) = 0;
  // Asynchronous: `done` runs once when the I/O completes (see
  // DirectCallback). Parts of the I/O that meet cached pages (and a write
  // that must wait for an overlapping direct write) are done before this
  // returns; the rest is in flight. Returns an error, and never runs
  // `done`, when the request is refused before any I/O.
  virtual Status SubmitDirect(DirectRequest req, DirectCallback done) = 0;
  // Runs completions of this file's stack on the calling thread until
  // done() holds (BlockDevice::PollUntil), so a thread waiting for its own
  // direct I/O is not woken by a device thread: one wake-up per I/O instead
  // of two. Returns false, having done nothing, when the stack cannot (a
  // layer completes on threads of its own); then wait as usual. DirectIo
  // and DirectQueue::Reap use it.
  virtual bool PollDirect(const std::function<bool()>& done) = 0;
};

}  // namespace stablecache
