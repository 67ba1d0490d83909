#include <cstring>

#include "stablecache/bio.h"

namespace stablecache {

const char* StabilityName(Stability s) {
  switch (s) {
    case Stability::kUnstable: return "unstable";
    case Stability::kDeclaredStable: return "declared-stable";
    case Stability::kStable: return "stable";
  }
  return "?";
}

void Bio::CopyTo(std::byte* dst) const {
  for (const auto& s : segments) {
    std::memcpy(dst, s.data, s.len);
    dst += s.len;
  }
}

void Bio::CopyFrom(const std::byte* src) {
  for (const auto& s : segments) {
    std::memcpy(s.data, src, s.len);
    src += s.len;
  }
}

void Bio::Complete(BioPtr bio, Status status) {
  Completion cb = std::move(bio->on_complete);
  if (cb) cb(std::move(bio), std::move(status));
}

}  // namespace stablecache
