// SizeRecord: the File's size on the medium (doc/file_format.md).
//
// The size lives in a MetadataRecord ("SCFILE01") in the last two 4 KiB
// blocks of the device the File is opened on (A/B slots, the newest valid
// generation wins). The File may use the bytes before them:
// FileLimit(device size) = device size rounded down to 4 KiB, minus 8 KiB.
//
// Payload (little-endian, offsets in the record's payload):
//   0  u64  file size in bytes
//   8  u64  device size in bytes when the record was formatted
//  16  u32  page size (4096)
//  20  u32  reserved, zero
// The envelope's version field is the format version (1); its uuid is
// random at format and never changes.
//
// Open (OpenSizeRecord): a blank end (both slots zero) is a new file,
// formatted with generation 1 before Open returns; a valid record gives the
// size; anything else is refused with an error that says what is there
// (and what block 0 holds, when it is another stablecache layer's record),
// so a spec that is missing a layer never formats over data.
//
// Sync (SizeRecord): the size is written after the data it covers is on
// the medium (ordered mode). Each Sync takes a ticket when it starts
// (BeginSync: the size then, under the invalidate lock) and, once its
// writeback and flush are done, FinishSync writes the next generation if
// the safe size differs from the durable one. The safe size is the size
// at the start, lowered by any truncate during the Sync (NoteTruncate): a
// byte below it was in the file from the Sync's start to its flush, so
// the flush covered it. A Sync whose ticket is older than the last record
// written does not write (a later-started Sync's record already covers
// it; so does one that finds the medium already holding its size). A
// failed record write keeps the generation, so the retry goes to
// the same slot and the previous record stays intact.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "block/metadata_record.h"
#include "stablecache/block_device.h"
#include "stablecache/status.h"

namespace stablecache {

inline constexpr char kFileSizeMagic[] = "SCFILE01";
inline constexpr uint32_t kFileSizeFormatVersion = 1;
inline constexpr uint64_t kSizeRecordBytes = 2 * kRecordBytes;  // slots A and B

// Where slot A starts on a device of `device_bytes`, and what the File may
// use (the same number). 0 when the device is too small for the record.
uint64_t SizeRecordOffset(uint64_t device_bytes);
inline uint64_t FileLimit(uint64_t device_bytes) { return SizeRecordOffset(device_bytes); }

struct SizeRecordState {
  uint64_t size = 0;         // the file's size on the medium
  uint64_t device_size = 0;  // as formatted
  uint64_t generation = 0;   // of the newest valid record
  Uuid uuid;
  bool formatted_now = false;  // the device was blank; Open wrote generation 1
};

// Reads the record at the end of `dev`; formats a blank device with
// `initial_size` (generation 1, flushed). Refuses a conflicting non-zero
// initial_size, a corrupt or foreign record, and a blank end when block 0
// holds another layer's record. Errors name the device and what was found.
[[nodiscard]] Result<SizeRecordState> OpenSizeRecord(BlockDevice& dev, uint64_t initial_size);

// The record of a file of `size` bytes (tools and tests that build a
// medium image: generation g goes to slot g % 2 at SizeRecordOffset).
MetadataRecord MakeSizeRecord(const Uuid& uuid, uint64_t generation, uint64_t size, uint64_t device_size);

// Records `size` as the next generation on `dev`, a formatted device no
// cache has open (tools and tests: e.g. a file whose size on the medium is
// smaller than what its blocks once held). REQUIRES: size <= FileLimit.
[[nodiscard]] Status RewriteSizeRecord(BlockDevice& dev, uint64_t size);

// The error for an initial_size that disagrees with a file's size.
Status SizeConflict(const BlockDevice& dev, uint64_t file_size, uint64_t initial_size);

class SizeRecord {
 public:
  explicit SizeRecord(const SizeRecordState& s);

  // The size the medium holds; kUnknownSize after a failed record write
  // (the slot may or may not hold it) until one succeeds.
  static constexpr uint64_t kUnknownSize = UINT64_MAX;
  uint64_t durable_size() const;

  // A Sync starts. REQUIRES: the invalidate lock held (shared or
  // exclusive), so no truncate runs between the caller's read of `size`
  // and the registration.
  uint64_t BeginSync(uint64_t size);
  // A truncate to `new_size`. REQUIRES: the invalidate lock held exclusive.
  void NoteTruncate(uint64_t new_size);
  // A Sync that ends without reaching FinishSync (its writeback could not
  // start) calls FinishSync with data_ok = false.
  // The Sync with `ticket` has written back and flushed. When `data_ok`
  // (none of its data failed) and its safe size differs from the durable
  // size, writes the next generation to `dev` and flushes. Returns the
  // record write's error; ends the ticket either way. `*unrecorded` (if
  // given) tells whether the Sync leaves its size off the medium although
  // it differs from the durable one and no later Sync covered it (data_ok
  // was false): that Sync must not report success, even when the error
  // that made data_ok false was reported elsewhere (errseq reports an error
  // once per handle, and another call on the same handle may take it).
  [[nodiscard]] Status FinishSync(BlockDevice& dev, uint64_t ticket, bool data_ok, bool* unrecorded = nullptr);

 private:
  mutable std::mutex mu_;
  const Uuid uuid_;
  const uint64_t device_size_;
  uint64_t generation_;         // GUARDED_BY(mu_): of the newest record on the medium
  std::atomic<uint64_t> durable_size_;  // written under mu_, read without it
  uint64_t next_ticket_ = 1;    // GUARDED_BY(mu_)
  uint64_t written_ticket_ = 0; // GUARDED_BY(mu_): ticket of the last record written
  std::map<uint64_t, uint64_t> safe_size_;  // GUARDED_BY(mu_): ticket -> safe size
};

}  // namespace stablecache
