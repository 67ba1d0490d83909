// Direct I/O on a File (stablecache/direct.h): validation, the split of a
// request into pages the cache holds and runs that bypass it, and the
// completion that ends the request.
#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <shared_mutex>

#include <fmt/format.h>

#include "cache/file_handle.h"
#include "direct/request_buffers.h"
#include "writeback/writeback.h"

namespace stablecache {

namespace {

constexpr uint64_t kMaxBypassBio = 1 << 20;  // split bypass runs like writeback batches

// One direct request in flight: counts its bypass bios and ends once when
// the last of them and the submitter's own part are done.
struct DirectInFlight {
  std::shared_ptr<AddressSpace> as;
  RequestBuffers buffers;
  DirectCallback done;
  std::function<void()> end_op;   // the handle's async-op count
  bool write = false;
  bool polled = false;  // DirectRequest::polled
  bool holds_range = false;
  size_t result = 0;
  uint64_t zero_from = 0, zero_to = 0;  // request bytes past EOF (reads)
  std::vector<uint64_t> holes;          // pages written whole that were holes
  // Mapped pages of this cache the read stores into or the write takes
  // its bytes from (PinMappedBuffers).
  std::vector<std::pair<std::shared_ptr<AddressSpace>, PageRef>> pinned;

  std::atomic<int> pending{1};  // the 1 is the submitter's (Arm)
  std::mutex mu;
  Status status;  // GUARDED_BY(mu): the first error

  void ReleasePins(bool redirty) {
    for (auto& [space, page] : pinned) {
      if (redirty) space->Redirty(page.get());
      page->Unpin();
    }
    pinned.clear();
  }
  void Fail(const Status& st) {
    std::lock_guard lk(mu);
    if (status.ok()) status = st;
  }
  void Done(const std::shared_ptr<DirectInFlight>& self, const Status& st) {
    if (!st.ok()) Fail(st);
    if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) self->Finish();
  }
  void Finish() {
    Status st;
    {
      std::lock_guard lk(mu);
      st = status;
    }
    if (write && st.ok())
      for (uint64_t idx : holes) as->MarkValid(idx);  // file data now, before anyone may fill the page
    if (!write && st.ok() && zero_to > zero_from) buffers.Zero(zero_from, zero_to);
    // The device stored into a read's pages with no fault the cache saw:
    // they are dirty now, whatever writeback did meanwhile (even on an
    // error: some bytes may have landed).
    ReleasePins(/*redirty=*/!write);
    if (holds_range) as->direct().ReleaseWrite(this);
    as->direct().EndIo();
    DirectCallback cb = std::move(done);
    std::function<void()> end = std::move(end_op);
    if (st.ok()) cb(result);
    else cb(Err(st));
    end();  // last: Close may release the space once this returns
  }
};

// Builds and submits the bios of the bypass run [from, to) (file offsets).
void SubmitBypass(const std::shared_ptr<DirectInFlight>& op, uint64_t req_offset, uint64_t from, uint64_t to,
                  Stability level) {
  AddressSpace& as = *op->as;
  for (uint64_t at = from; at < to;) {
    const uint64_t end = std::min(to, at + kMaxBypassBio);
    auto bio = Bio::Make(op->write ? BioOp::kWrite : BioOp::kRead, at, level);
    bio->polled = op->polled;
    op->buffers.AddSegments(*bio, at - req_offset, end - req_offset);
    op->pending.fetch_add(1, std::memory_order_relaxed);
    bio->on_complete = [op](BioPtr, Status st) { op->Done(op, st); };
    as.device().Submit(std::move(bio));
    at = end;
  }
}

// The result of one direct request, for a thread that waits for it: the
// completion records it, and the waiter reaps the stack itself where it can
// (File::PollDirect), then sleeps. Shared with the completion, which may
// still be unwinding when the waiter has returned.
struct AwaitedResult {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> ready{false};
  Result<size_t> result = size_t{0};

  static DirectCallback Recorder(const std::shared_ptr<AwaitedResult>& self) {
    return [self](Result<size_t> r) {
      {
        std::lock_guard lk(self->mu);
        self->result = std::move(r);
        self->ready.store(true, std::memory_order_release);
      }
      self->cv.notify_all();
    };
  }
  Result<size_t> Wait(File& file) {
    if (!ready.load(std::memory_order_acquire))
      (void)file.PollDirect([this] { return ready.load(std::memory_order_acquire); });
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return ready.load(std::memory_order_relaxed); });
    return std::move(result);
  }
};

// Where a page's part of a request goes.
enum class Route {
  kDevice,  // a bypass bio between the caller's buffer and the device
  kCache,   // the cached page serves or takes the bytes
  kNoIo,    // served already (a hole read as zeros)
};

// Walks the pages of [from, to) of a request at `req_offset`, routing each
// page's part [a, b) with route(idx, a, b). Runs of kDevice parts become
// bypass bios, submitted as soon as another route interrupts them; kCache
// parts go to on_cache(idx, a, b).
template <typename RouteFn, typename OnCache>
Status SplitByCache(const std::shared_ptr<DirectInFlight>& op, uint64_t req_offset, uint64_t from, uint64_t to,
                    Stability level, RouteFn route, OnCache on_cache) {
  uint64_t run_from = from;
  for (uint64_t a = from; a < to;) {
    const uint64_t idx = a >> 12;
    const uint64_t b = std::min(to, (idx + 1) << 12);
    const Route r = route(idx, a, b);
    if (r != Route::kDevice) {
      if (run_from < a) SubmitBypass(op, req_offset, run_from, a, level);
      run_from = b;
      if (r == Route::kCache) SC_RETURN_IF_ERROR(on_cache(idx, a, b));
    }
    a = b;
  }
  if (run_from < to) SubmitBypass(op, req_offset, run_from, to, level);
  return Status::Ok();
}

// A direct I/O whose buffer is a mapping (File::Map) of a file of this
// cache: each such page is faulted in (for writing when a read stores into
// it), as the kernel's pin would, then pinned and referenced until the I/O
// completes, so it is not evicted meanwhile; a read's completion re-dirties
// it. Done before the I/O holds anything: a direct write from a mapping of
// the very pages it writes would otherwise fault on its own held range.
Status PinMappedBuffers(CacheImpl& cache, const std::vector<std::span<std::byte>>& buffers, DirectInFlight& op) {
  const char* what = op.write ? "direct write" : "direct read";
  MappedRanges& mapped = cache.mapped_ranges();
  if (mapped.empty()) return Status::Ok();
  for (size_t i = 0; i < buffers.size(); i++) {
    std::byte* const begin = buffers[i].data();
    std::byte* const end = begin + buffers[i].size();
    for (std::byte* at = begin; at < end;) {
      std::byte* const page_end =
          reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(at) | (kFrameSize - 1)) + 1);
      auto hit = mapped.Find(at);
      if (hit) {
        AddressSpace& target = *hit->space;
        if (!op.write && !hit->writable)
          return Status::InvalidArgument(fmt::format(
              "direct read: buffer {} is a read-only mapping of '{}' at {:#x}", i, target.device().Info().name,
              reinterpret_cast<uintptr_t>(at)));
        if (hit->idx >= target.EofPages())
          return Status::InvalidArgument(fmt::format(
              "{}: buffer {} maps page {} of '{}', past its end (an access there raises SIGBUS)", what, i, hit->idx,
              target.device().Info().name));
        PageRef page;
        for (int tries = 0; !page && tries < 1000; tries++) {
          // A read's target: an atomic no-op store faults the page in and
          // write-enables it (the mapping's page_mkwrite dirties it)
          // without losing a concurrent store to the same byte. A write's
          // source: a load faults it in.
          if (op.write)
            (void)__atomic_load_n(reinterpret_cast<unsigned char*>(at), __ATOMIC_RELAXED);
          else
            __atomic_fetch_or(reinterpret_cast<unsigned char*>(at), 0, __ATOMIC_RELAXED);
          page = target.FindGet(hit->idx);
          if (!page) continue;  // written back and evicted already
          page->Pin();
          if (page->Test(Page::kDetached)) {
            page->Unpin();
            page = PageRef();
          }
        }
        if (!page)
          return Status::IoError(fmt::format("{}: could not pin mapped page {} of '{}'", what, hit->idx,
                                             target.device().Info().name));
        op.pinned.emplace_back(std::move(hit->space), std::move(page));
      }
      at = std::min(end, page_end);
    }
  }
  return Status::Ok();
}

}  // namespace

Status FileHandle::ValidateDirect(const DirectRequest& req) const {
  const char* what = req.op == DirectOp::kWrite ? "direct write" : "direct read";
  const DeviceInfo& info = as_->device().Info();
  const uint64_t lbs = info.logical_block_size;
  SC_RETURN_IF_ERROR(CheckRange(what, req.offset, req.Length()));
  if (req.offset % lbs != 0)
    return Status::InvalidArgument(fmt::format("{}: offset {} is not a multiple of the logical block size {} of '{}'",
                                               what, req.offset, lbs, info.name));
  for (size_t i = 0; i < req.buffers.size(); i++) {
    const auto& b = req.buffers[i];
    const auto addr = reinterpret_cast<uintptr_t>(b.data());
    if (addr % lbs != 0)
      return Status::InvalidArgument(fmt::format(
          "{}: buffer {} at address {:#x} is not aligned to the logical block size {} of '{}'", what, i, addr, lbs,
          info.name));
    if (b.size() % lbs != 0)
      return Status::InvalidArgument(fmt::format(
          "{}: buffer {} length {} is not a multiple of the logical block size {} of '{}'", what, i, b.size(), lbs,
          info.name));
  }
  if (req.stability > Stability::kStable)
    return Status::InvalidArgument(fmt::format("{}: unknown stability level {}", what, int(req.stability)));
  if (req.op == DirectOp::kWrite) {
    const uint64_t limit = as_->device_pages() << 12;
    if (req.offset + req.Length() > limit)
      return Status::NoSpace(fmt::format("direct write of {} bytes at offset {} ends past the file limit of device "
                                         "'{}' ({} bytes: the last 8 KiB hold the file size record)",
                                         req.Length(), req.offset, info.name, limit));
  }
  return Status::Ok();
}

Status FileHandle::SubmitDirect(DirectRequest req, DirectCallback done) {
  BeginAsyncOp();
  struct EndOnError {
    const FileHandle* h;
    ~EndOnError() {
      if (h) h->EndAsyncOp();
    }
  } guard{this};
  SC_RETURN_IF_ERROR(ValidateDirect(req));
  AddressSpace& as = *as_;
  const uint64_t len = req.Length();
  if (len == 0) {
    done(size_t{0});
    return Status::Ok();
  }
  const bool write = req.op == DirectOp::kWrite;
  const uint64_t offset = req.offset, end = offset + len;
  // The cache vouches for every buffer under kNone (the unsafe baseline);
  // otherwise the bio says what the caller promised.
  const Stability level = as.policy() == StablePolicy::kNone ? Stability::kStable : req.stability;

  auto op = std::make_shared<DirectInFlight>();
  op->as = as_;
  op->buffers = RequestBuffers(std::move(req.buffers));
  op->done = std::move(done);
  op->write = write;
  op->polled = req.polled && as.device().Pollable();  // else nobody could poll its bios
  // Before this file's invalidate lock: the pages may be this file's own.
  if (Status st = PinMappedBuffers(*cache_, op->buffers.buffers(), *op); !st.ok()) {
    op->ReleasePins(/*redirty=*/false);
    return st;
  }

  // A write past EOF extends the file and runs under the invalidate lock
  // held exclusive, to its completion: if it fails, the size goes back, and
  // nobody can have seen or written the bytes past the old end meanwhile
  // (as Linux sets i_size only when an extending direct write completes).
  // Anything else holds the lock shared while it submits.
  std::shared_lock il(as.invalidate_lock(), std::defer_lock);
  std::unique_lock xl(as.invalidate_lock(), std::defer_lock);
  std::optional<uint64_t> extended_from;
  for (;;) {
    if (write && end > as.size()) {
      xl.lock();
      if (end > as.size()) {
        extended_from = as.size();
        // The old partial last page gets its zero tail through the cache.
        if (Status st = ExtendLocked(as, end); !st.ok()) {
          op->ReleasePins(/*redirty=*/false);
          return st;
        }
        break;
      }
      xl.unlock();
    }
    il.lock();
    if (!write || end <= as.size()) break;
    il.unlock();  // a truncate came between: extend again
  }
  as.direct().BeginIo();
  guard.h = nullptr;
  op->end_op = [this] { EndAsyncOp(); };
  // An extending write completes in this call: its completion only records
  // the result, and the caller's callback runs here after any undo.
  std::shared_ptr<AwaitedResult> ext;
  DirectCallback caller_done;
  if (extended_from) {
    ext = std::make_shared<AwaitedResult>();
    caller_done = std::move(op->done);
    op->done = AwaitedResult::Recorder(ext);
    op->end_op = [] {};
  }

  if (!write) {
    const uint64_t size = as.size();
    if (offset >= size) {
      // Not under the invalidate lock: the callback may chain more I/O
      // (an appending write takes the lock exclusive).
      il.unlock();
      op->Finish();
      return Status::Ok();
    }
    const uint64_t lbs = as.device().Info().logical_block_size;
    const uint64_t n = std::min(len, size - offset);
    const uint64_t span_end = offset + (n + lbs - 1) / lbs * lbs;  // whole blocks; the part past EOF is zeroed
    op->result = n;
    op->zero_from = n;
    op->zero_to = span_end - offset;
    // A cached page (dirty or not) is the newest copy; a hole reads as
    // zeros; anything else comes from the device.
    Status st = SplitByCache(
        op, offset, offset, span_end, level,
        [&](uint64_t idx, uint64_t a, uint64_t b) {
          if (as.FindGet(idx)) return Route::kCache;
          if (!as.IsHole(idx)) return Route::kDevice;
          op->buffers.Zero(a - offset, b - offset);
          return Route::kNoIo;
        },
        [&](uint64_t idx, uint64_t a, uint64_t b) -> Status {
          auto page = GetUptodatePage(as, idx);
          if (!page) return page.error();
          op->buffers.CopyIn(a - offset, as.pool().Data(page->get()) + (a & (kFrameSize - 1)), b - a);
          return Status::Ok();
        });
    if (!st.ok()) op->Fail(st);
    il.unlock();
    op->Done(op, Status::Ok());
    return Status::Ok();
  }

  // A write holds its pages against page creation until it completes.
  const uint64_t first = offset >> 12, last = (end - 1) >> 12;
  as.direct().AcquireWrite(first, last, op.get());
  op->holds_range = true;
  op->result = len;
  std::vector<std::pair<uint64_t, uint64_t>> through_cache;
  Status st = SplitByCache(
      op, offset, offset, end, level,
      [&](uint64_t idx, uint64_t a, uint64_t b) {
        if (as.FindGet(idx)) return Route::kCache;
        if (!as.IsHole(idx)) return Route::kDevice;
        // The rest of a partly written hole is no file data: the page goes
        // through the cache, which fills it with zeros.
        if (b - a != kFrameSize) return Route::kCache;
        op->holes.push_back(idx);
        return Route::kDevice;
      },
      [&](uint64_t, uint64_t a, uint64_t b) {
        through_cache.emplace_back(a, b);
        return Status::Ok();
      });
  if (st.ok() && !through_cache.empty()) {
    // Cached pages take the bytes as a buffered write would (the policy
    // keeps a page under writeback stable) and go to the device before
    // the write completes.
    DirectRanges::OwnerScope scope(op.get());
    const uint64_t errors = as.writeback_error_count();
    alignas(64) std::byte bytes[kFrameSize];
    for (auto [a, b] : through_cache) {
      op->buffers.CopyOut(a - offset, bytes, b - a);
      st = WritePagesLocked(as, a, {bytes, b - a});
      if (!st.ok()) break;
    }
    WritebackRange(as, first, last, WritebackMode::kSync);
    WaitWritebackRange(as, first, last);
    if (st.ok() && as.writeback_error_count() != errors)
      st = Status::IoError(fmt::format("direct write to '{}': writing back its cached pages failed: {}",
                                       as.device().Info().name, as.LastWritebackError().ToString()));
  }
  if (!st.ok()) op->Fail(st);
  if (!extended_from) {
    il.unlock();
    op->Done(op, Status::Ok());
    return Status::Ok();
  }
  op->Done(op, Status::Ok());
  Result<size_t> result = ext->Wait(*this);
  if (!result) {
    // Failed: the file is as long as before (the bytes it may have left on
    // the device past the old end are no file data: holes again).
    as.direct().WaitIdle();
    if (Status undo = TruncateLocked(as, *extended_from); !undo.ok())
      result = Err(Status::IoError(fmt::format("{}; restoring the file size {} failed: {}", result.error().ToString(),
                                               *extended_from, undo.ToString())));
  }
  xl.unlock();
  caller_done(std::move(result));
  EndAsyncOp();
  return Status::Ok();
}

Result<size_t> FileHandle::DirectIo(const DirectRequest& req) {
  auto w = std::make_shared<AwaitedResult>();
  DirectRequest polled = req;
  polled.polled = true;
  SC_RETURN_UNEXPECTED_IF_ERROR(SubmitDirect(std::move(polled), AwaitedResult::Recorder(w)));
  return w->Wait(*this);
}

Result<size_t> FileHandle::DirectRead(uint64_t offset, std::span<std::byte> buf, Stability stability) {
  return DirectIo(DirectRequest{DirectOp::kRead, offset, {buf}, stability});
}

Result<size_t> FileHandle::DirectWrite(uint64_t offset, std::span<const std::byte> data, Stability stability) {
  // The request type holds mutable spans for both directions; a write only
  // reads them.
  std::span<std::byte> buf(const_cast<std::byte*>(data.data()), data.size());
  return DirectIo(DirectRequest{DirectOp::kWrite, offset, {buf}, stability});
}

}  // namespace stablecache
