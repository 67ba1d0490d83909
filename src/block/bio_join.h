// BioJoin: completes one parent bio when all the child bios a layer split
// or fanned it into have completed.
//
//   auto join = BioJoin::Start(std::move(parent));
//   for (...) lower.Submit(join->Child(BioOp::kWrite, off, parent_stability));
//   join->Arm();   // no more children; completes now if all are done
//
// The parent completes with OK, or with the first error a child reported.
// A layer that must act before the parent completes (a retry, a repair)
// passes `finish`, which gets the parent and the joined status instead.
// Thread-safe: children may complete on any thread, before or after Arm.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>

#include "stablecache/bio.h"

namespace stablecache {

class BioJoin : public std::enable_shared_from_this<BioJoin> {
 public:
  using Finish = std::function<void(BioPtr parent, Status st)>;

  static std::shared_ptr<BioJoin> Start(BioPtr parent, Finish finish = {}) {
    auto j = std::shared_ptr<BioJoin>(new BioJoin);
    j->parent_ = std::move(parent);
    j->finish_ = std::move(finish);
    return j;
  }

  // A child whose completion counts toward the parent. The caller adds the
  // segments and submits it.
  BioPtr Child(BioOp op, uint64_t offset, Stability s) {
    pending_.fetch_add(1, std::memory_order_relaxed);
    auto c = Bio::Make(op, offset, s);
    c->on_complete = [self = shared_from_this()](BioPtr, Status st) { self->Done(st); };
    return c;
  }
  void Done(const Status& st) {
    if (!st.ok()) {
      std::lock_guard lk(mu_);
      status_.Update(st);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    Status final_status;
    {
      std::lock_guard lk(mu_);
      final_status = status_;
    }
    if (finish_) finish_(std::move(parent_), std::move(final_status));
    else Bio::Complete(std::move(parent_), std::move(final_status));
  }
  void Arm() { Done(Status::Ok()); }

 private:
  BioJoin() = default;
  std::atomic<size_t> pending_{1};  // the 1 is released by Arm()
  std::mutex mu_;
  Status status_;  // GUARDED_BY(mu_)
  BioPtr parent_;
  Finish finish_;
};

}  // namespace stablecache
