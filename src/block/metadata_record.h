// MetadataRecord: the one on-disk envelope every layer's superblock uses.
//
// A record is one 4 KiB block:
//
//   offset size  field
//        0    8  magic        which layer wrote it ("SCINTEG1", "SCMIRROR",
//                             "SCPARITY", "SCFILE01"), see kMagics
//        8    4  version      format version of the payload (1)
//       12    4  payload_len  bytes of payload at offset 64
//       16    8  generation   bumped on every rewrite; the newest copy wins
//       24   16  uuid         the volume (integrity, file) or set (mirror,
//                             parity) it belongs to
//       40    4  crc32c       of the whole block with this field zero
//       44   20  reserved     zero
//       64    …  payload      the layer's own fields, little-endian
//
// Records live in pairs of slots (A at `offset`, B at `offset + 4096`):
// generation g is written to slot g % 2, so a crash while one slot is
// being written leaves the other, one generation older, intact (ZFS
// labels, the A/B superblocks of many file systems). Reading takes the
// valid slot with the highest generation.
//
// Decoding tells a blank block (all zero: never formatted) from a corrupt
// one (non-zero but no valid record), and names a record written by a
// different layer, so a spec that disagrees with the medium gets an error
// naming what is there. All integers little-endian (checked at compile
// time). Thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "stablecache/block_device.h"
#include "stablecache/status.h"

namespace stablecache {

constexpr uint32_t kRecordBytes = 4096;
constexpr uint32_t kRecordHeaderBytes = 64;
constexpr uint32_t kRecordPayloadMax = kRecordBytes - kRecordHeaderBytes;

// The magics, and the layer each names (for errors: "holds a mirror
// superblock").
struct MagicName {
  std::string_view magic;
  std::string_view layer;
};
inline constexpr std::array<MagicName, 4> kMagics = {{
    {"SCINTEG1", "integrity"},
    {"SCMIRROR", "mirror"},
    {"SCPARITY", "parity"},
    {"SCFILE01", "file size"},
}};

struct Uuid {
  std::array<uint8_t, 16> bytes{};
  static Uuid Random();  // version 4, from getrandom(2)
  bool nil() const;
  std::string ToString() const;  // 8-4-4-4-12 hex
  friend bool operator==(const Uuid&, const Uuid&) = default;
};

struct MetadataRecord {
  std::string magic;  // 8 characters
  uint32_t version = 1;
  uint64_t generation = 0;
  Uuid uuid;
  std::vector<std::byte> payload;  // <= kRecordPayloadMax

  // Typed access to the payload: fixed-width little-endian fields at byte
  // offsets the layer's format doc names.
  template <typename T>
  T Get(size_t at) const;
  template <typename T>
  void Put(size_t at, T v);
};

enum class RecordState : uint8_t {
  kBlank,    // all zero: nothing was ever written here
  kValid,    // a record with the expected magic and a good checksum
  kForeign,  // a valid record of another layer (`found_layer` names it)
  kCorrupt,  // non-zero, but not a valid record (`why` says what failed)
};

struct DecodedRecord {
  RecordState state = RecordState::kBlank;
  MetadataRecord record;     // kValid, kForeign
  std::string found_layer;   // kForeign
  std::string why;           // kCorrupt
};

// REQUIRES: payload fits, magic is 8 characters.
std::vector<std::byte> EncodeRecord(const MetadataRecord& r);
DecodedRecord DecodeRecord(std::span<const std::byte> block, std::string_view magic);

// The two slots at `offset` on `dev`: the newest valid record (kValid), or
// else kForeign if either slot holds another layer's record, kCorrupt if
// either is corrupt, kBlank if both are blank. I/O errors are returned.
[[nodiscard]] Result<DecodedRecord> ReadRecordSlots(BlockDevice& dev, uint64_t offset, std::string_view magic);

// Writes `r` (its generation already set) to slot r.generation % 2 at
// `offset`, then flushes the device. Returns once it is on the medium.
[[nodiscard]] Status WriteRecordSlot(BlockDevice& dev, uint64_t offset, const MetadataRecord& r);

// A short description of a decoded record for `info` and errors, e.g.
// "mirror record v1 gen 7 set 1b4e…".
std::string DescribeRecord(const DecodedRecord& d);

// ---- implementation of the typed accessors --------------------------------

template <typename T>
T MetadataRecord::Get(size_t at) const {
  static_assert(std::is_trivially_copyable_v<T>);
  T v{};
  if (at + sizeof(T) <= payload.size()) std::memcpy(&v, payload.data() + at, sizeof(T));
  return v;
}

template <typename T>
void MetadataRecord::Put(size_t at, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (payload.size() < at + sizeof(T)) payload.resize(at + sizeof(T));
  std::memcpy(payload.data() + at, &v, sizeof(T));
}

}  // namespace stablecache
