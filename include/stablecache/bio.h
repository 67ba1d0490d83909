// Bio: one block I/O request travelling down a BlockDevice stack.
//
// A Bio names an operation, a byte offset on the device, scatter-gather
// segments of memory, and a Stability level: how far the submitter promises
// that the segment bytes stay unchanged until completion. A layer that needs
// more stability than a bio carries bounces it once (see block/bounce.h) and
// raises the level to kStable, so layers below never copy again; clones keep
// the level.
//
// Ownership: Submit() takes the BioPtr. Exactly one party calls
// Bio::Complete(std::move(bio), status) once; that runs the completion, which
// gets the bio back. Completions may run on any thread, including inline in
// Submit(); they must not block on further I/O of the same stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "stablecache/status.h"

namespace stablecache {

enum class BioOp : uint8_t { kRead, kWrite, kFlush };

// Ordered: a higher level is a stronger promise.
enum class Stability : uint8_t {
  kUnstable = 0,        // no promise: the bytes may change during I/O
  kDeclaredStable = 1,  // an untrusted caller promises not to touch them
  kStable = 2,          // trusted: page cache under a policy, or a bounce copy
};
const char* StabilityName(Stability s);

struct BioSegment {
  std::byte* data = nullptr;
  uint32_t len = 0;
};

class Bio;
using BioPtr = std::unique_ptr<Bio>;

class Bio {
 public:
  using Completion = std::function<void(BioPtr, Status)>;

  BioOp op = BioOp::kRead;
  uint64_t offset = 0;  // bytes, on the device this bio is submitted to
  std::vector<BioSegment> segments;
  Stability stability = Stability::kUnstable;
  // Forced unit access (writes only): the bytes are durable when the bio
  // completes, without a flush. Today only the logwrites layer records it
  // and passes it down; layers that clone bios (integrity, mirror, parity)
  // and the leaves do not honour it yet, so a caller needing durability
  // must still flush. The page cache never sets it.
  bool fua = false;
  // The submitter waits for this bio by polling (BlockDevice::PollUntil):
  // a leaf need not wake a completion thread of its own for it. It still
  // completes within about a millisecond if nobody polls. Set only when the
  // stack is Pollable() (every layer forwards the poll). Layers that pass
  // the bio down as it is keep it; clones do not.
  bool polled = false;
  Completion on_complete;
  // Owned memory that dies with the bio (bounce copies, layer scratch).
  std::vector<std::shared_ptr<void>> keep_alive;

  static BioPtr Make(BioOp op, uint64_t offset, Stability s = Stability::kUnstable) {
    auto b = std::make_unique<Bio>();
    b->op = op;
    b->offset = offset;
    b->stability = s;
    return b;
  }

  uint64_t Length() const {
    uint64_t n = 0;
    for (const auto& s : segments) n += s.len;
    return n;
  }
  void AddSegment(void* data, uint32_t len) {
    segments.push_back(BioSegment{static_cast<std::byte*>(data), len});
  }
  // Copies the bio payload out to / in from a flat buffer of Length() bytes.
  void CopyTo(std::byte* dst) const;
  void CopyFrom(const std::byte* src);

  // Runs the completion exactly once. REQUIRES: bio was submitted.
  static void Complete(BioPtr bio, Status status);
};

}  // namespace stablecache
