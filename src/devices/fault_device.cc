#include "devices/fault_device.h"

#include <fmt/format.h>

namespace stablecache {

namespace {
const char* OpName(BioOp op) {
  switch (op) {
    case BioOp::kRead: return "read";
    case BioOp::kWrite: return "write";
    case BioOp::kFlush: return "flush";
  }
  return "?";
}
}  // namespace

void FaultDevice::AddRule(const FaultRule& r) {
  std::lock_guard lk(mu_);
  rules_.push_back(r);
}

void FaultDevice::ClearRules() {
  std::lock_guard lk(mu_);
  rules_.clear();
}

void FaultDevice::Submit(BioPtr bio) {
  counters_.CountBio(*bio);
  int error = 0;
  {
    std::lock_guard lk(mu_);
    const uint64_t start = bio->offset, end = bio->offset + std::max<uint64_t>(1, bio->Length());
    for (auto& r : rules_) {
      if (r.count == 0 || (r.op && *r.op != bio->op)) continue;
      uint64_t rend = r.len > UINT64_MAX - r.offset ? UINT64_MAX : r.offset + r.len;
      if (bio->op != BioOp::kFlush && (end <= r.offset || start >= rend)) continue;
      if (r.count > 0) r.count--;
      error = r.error;
      break;
    }
  }
  if (error != 0) {
    injected_.fetch_add(1);
    counters_.errors.fetch_add(1);
    Status st = Status::FromErrno(
        error, fmt::format("injected fault on {} at offset {} length {}", OpName(bio->op), bio->offset, bio->Length()));
    Bio::Complete(std::move(bio), st);
    return;
  }
  lower_->Submit(std::move(bio));
}

}  // namespace stablecache
