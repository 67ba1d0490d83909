#include "block/bounce.h"

#include <cstdlib>
#include <cstring>
#include <memory>

namespace stablecache {

void StabilizeBio(Bio& bio, Stability required, std::atomic<uint64_t>& bytes_bounced) {
  if (bio.op == BioOp::kFlush || bio.stability >= required) return;
  const uint64_t len = bio.Length();
  std::shared_ptr<void> buf(std::aligned_alloc(4096, (len + 4095) & ~uint64_t{4095}), std::free);
  auto* bytes = static_cast<std::byte*>(buf.get());
  if (bio.op == BioOp::kWrite) {
    bio.CopyTo(bytes);
  } else {
    // Reads: copy out to the caller's segments when the data has arrived.
    std::vector<BioSegment> original = std::move(bio.segments);
    Bio::Completion inner = std::move(bio.on_complete);
    bio.on_complete = [original = std::move(original), inner = std::move(inner), bytes](BioPtr b, Status st) mutable {
      if (st.ok()) {
        const std::byte* src = bytes;
        for (const auto& s : original) {
          std::memcpy(s.data, src, s.len);
          src += s.len;
        }
      }
      b->segments = std::move(original);
      if (inner) inner(std::move(b), std::move(st));
    };
  }
  bio.segments.clear();
  bio.AddSegment(bytes, static_cast<uint32_t>(len));
  bio.keep_alive.push_back(std::move(buf));
  bio.stability = Stability::kStable;
  bytes_bounced.fetch_add(len, std::memory_order_relaxed);
}

}  // namespace stablecache
