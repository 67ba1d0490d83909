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

uint64_t FaultDevice::seen() const {
  uint64_t n = 0;
  for (const auto& s : seen_) n += s.load();
  return n;
}

void FaultDevice::Submit(BioPtr bio) {
  counters_.CountBio(*bio);
  seen_[static_cast<size_t>(bio->op)].fetch_add(1);
  std::optional<FaultRule> fired;
  {
    std::lock_guard lk(mu_);
    const uint64_t start = bio->offset, end = bio->offset + std::max<uint64_t>(1, bio->Length());
    auto overlaps = [&](const FaultRule& r) {
      if (bio->op == BioOp::kFlush) return true;
      uint64_t rend = r.len > UINT64_MAX - r.offset ? UINT64_MAX : r.offset + r.len;
      return end > r.offset && start < rend;
    };
    for (auto& r : rules_) {
      if (r.count == 0 || (r.op && *r.op != bio->op) || !overlaps(r)) continue;
      if (r.skip > 0) {
        r.skip--;  // not this one's turn: later rules may still fire
        continue;
      }
      if (r.count > 0) r.count--;
      fired = r;
      break;
    }
    // A write that goes down rewrites latent bad sectors under it.
    if (!fired && bio->op == BioOp::kWrite)
      for (auto& r : rules_)
        if (r.heal_on_write && overlaps(r)) r.count = 0;
  }
  if (!fired) {
    lower_->Submit(std::move(bio));
    return;
  }
  injected_.fetch_add(1);
  injected_by_op_[static_cast<size_t>(bio->op)].fetch_add(1);
  if (fired->action == FaultAction::kDrop) {
    Bio::Complete(std::move(bio), Status::Ok());
    return;
  }
  counters_.errors.fetch_add(1);
  Status st = Status::FromErrno(fired->error, fmt::format("injected fault on {} at offset {} length {}",
                                                          OpName(bio->op), bio->offset, bio->Length()));
  Bio::Complete(std::move(bio), st);
}

}  // namespace stablecache
