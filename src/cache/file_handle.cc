#include "cache/file_handle.h"

#include <cstring>
#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

#include "writeback/writeback.h"

namespace stablecache {

FileHandle::FileHandle(std::shared_ptr<CacheImpl> cache, std::shared_ptr<AddressSpace> as)
    : cache_(std::move(cache)), as_(std::move(as)), errseq_since_(as_->errseq().Sample()) {}

// A handle dropped without Close cannot return an error, so it does not
// consume one: it writes back without sampling the errseq, and a space
// left with dirty pages (the writeback failed) stays in the cache. The next
// handle opened on the device hears of the error and can retry the Sync.
FileHandle::~FileHandle() {
  if (closing_.exchange(true)) return;
  DrainOps();
  (void)WriteBackAll();
  closed_.store(true, std::memory_order_release);
  (void)cache_->CloseSpace(as_, /*keep_dirty=*/false);
}

Status FileHandle::CheckOpen(const char* op) const {
  // closing_ rather than closed_: an operation that starts once Close has
  // begun would race the release of the space.
  if (closing_.load())
    return Status::Closed(fmt::format("{} on a closed file ({})", op, as_->device().Info().name));
  return Status::Ok();
}

void FileHandle::DrainOps() const {
  for (uint64_t n; (n = active_ops_.load()) != 0;) active_ops_.wait(n);
}

Status FileHandle::CheckRange(const char* op, uint64_t offset, uint64_t len) const {
  SC_RETURN_IF_ERROR(CheckOpen(op));
  if (len > UINT64_MAX - offset)
    return Status::InvalidArgument(fmt::format("{}: offset {} + length {} overflows", op, offset, len));
  return Status::Ok();
}

Result<size_t> FileHandle::Read(uint64_t offset, std::span<std::byte> buf) {
  OpGuard guard(*this);
  if (Status st = CheckRange("read", offset, buf.size()); !st.ok()) return Err(st);
  AddressSpace& as = *as_;
  PagePool& pool = as.pool();
  std::shared_lock il(as.invalidate_lock());
  const uint64_t size = as.size();
  if (offset >= size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
  size_t done = 0;
  while (done < n) {
    uint64_t pos = offset + done;
    uint64_t idx = pos >> 12;
    size_t in_page = pos & (kFrameSize - 1);
    size_t chunk = std::min<size_t>(kFrameSize - in_page, n - done);
    auto page = GetUptodatePage(as, idx);
    if (!page) return Err(page.error());
    Page* p = page->get();
    std::memcpy(buf.data() + done, pool.Data(p) + in_page, chunk);
    if (!(p->Load() & Page::kReferenced)) p->SetFlags(Page::kReferenced);
    done += chunk;
  }
  return n;
}

Status FileHandle::ReadBypassingCache(uint64_t offset, std::span<std::byte> out, ScrubReport* scrub) {
  OpGuard guard(*this);
  SC_RETURN_IF_ERROR(CheckRange("read from device", offset, out.size()));
  if (offset % kFrameSize != 0 || out.size() % kFrameSize != 0)
    return Status::InvalidArgument(
        fmt::format("read from device: offset {} and length {} must be multiples of 4096", offset, out.size()));
  AddressSpace& as = *as_;
  if ((offset + out.size()) >> 12 > as.device_pages())
    return Status::OutOfRange(fmt::format("read from device: [{}, {}) is beyond the device ({} pages)", offset,
                                          offset + out.size(), as.device_pages()));
  std::shared_lock il(as.invalidate_lock());
  for (size_t done = 0; done < out.size(); done += kFrameSize) {
    const uint64_t idx = (offset + done) >> 12;
    // Holding the index page locked keeps a new writeback of idx from
    // starting; the loop waits out one already in flight (a fork's old
    // frame included).
    bool created = false;
    Result<PageRef> page;
    for (;;) {
      page = as.FindOrCreate(idx, &created);
      if (!page) return page.error();
      if (created) break;
      (*page)->Lock();
      if (!(*page)->Test(Page::kDetached)) break;
      (*page)->Unlock();  // forked or evicted meanwhile: look again
    }
    Page* p = page->get();
    while (PageRef prior = as.InFlight(idx)) prior->WaitWriteback();
    Status st = ReadSync(as.device(), idx << 12, out.data() + done, kFrameSize);
    if (scrub) st.Update(as.device().ScrubRange(idx << 12, kFrameSize, *scrub));
    if (created) as.DetachLocked(p);  // never filled: nobody may see it
    p->Unlock();
    SC_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Result<size_t> FileHandle::Write(uint64_t offset, std::span<const std::byte> data) {
  OpGuard guard(*this);
  if (Status st = CheckRange("write", offset, data.size()); !st.ok()) return Err(st);
  if (data.empty()) return 0;
  AddressSpace& as = *as_;
  const uint64_t end = offset + data.size();
  const uint64_t limit = as.device_pages() << 12;
  if (end > limit)
    return Err(Status::NoSpace(fmt::format("write of {} bytes at offset {} ends past the file limit of device "
                                           "'{}' ({} bytes: the last 8 KiB hold the file size record)",
                                           data.size(), offset, as.device().Info().name, limit)));
  if (Status st = cache_->BalanceDirtyPages(as); !st.ok()) return Err(st);
  {
    std::shared_lock il(as.invalidate_lock());
    if (end <= as.size()) {
      if (Status st = WritePagesLocked(as, offset, data); !st.ok()) return Err(st);
      return data.size();
    }
  }
  // Extending: exclusive, so a racing truncate cannot strand pages past EOF.
  std::unique_lock il(as.invalidate_lock());
  if (end > as.size()) {
    if (Status st = ExtendLocked(as, end); !st.ok()) return Err(st);
  }
  if (Status st = WritePagesLocked(as, offset, data); !st.ok()) return Err(st);
  return data.size();
}

Status FileHandle::ReportErrors() {
  uint32_t since = errseq_since_.load();
  int err = as_->errseq().CheckAndAdvance(&since);
  errseq_since_.store(since);
  if (err == 0) return Status::Ok();
  return Status::IoError(fmt::format("writeback to '{}' failed: {}", as_->device().Info().name,
                                     as_->LastWritebackError().ToString()),
                         err);
}

Status FileHandle::SizeUnrecorded() const {
  return Status::IoError(fmt::format(
      "sync of '{}': the file size was not recorded on the medium because a write failed during the sync; "
      "sync again",
      as_->device().Info().name));
}

Status FileHandle::WriteBackAll(bool* size_unrecorded) {
  uint64_t ticket;
  const uint64_t errors = as_->writeback_error_count();
  {
    std::shared_lock il(as_->invalidate_lock());
    ticket = as_->size_record().BeginSync(as_->size());
    if (Status st = MaterializeHoles(*as_); !st.ok()) {
      (void)as_->size_record().FinishSync(as_->device(), ticket, /*data_ok=*/false);
      return st;
    }
  }
  WritebackRange(*as_, 0, UINT64_MAX, WritebackMode::kSync);
  WaitWritebackRange(*as_, 0, UINT64_MAX);
  // A failed flush may have lost data of every handle (the device's cache
  // held it), so it goes into the errseq like a failed write: each handle
  // hears of it once.
  if (Status flush = FlushSync(as_->device()); !flush.ok()) as_->RecordWritebackError(flush);
  // Then the size, once the data below it is on the medium (ordered mode);
  // not when any write failed meanwhile, as its page may be below the size.
  // A failed record write is a writeback error: every handle's data beyond
  // the durable size is at stake, so every handle hears of it once, and the
  // next Sync (of any handle) writes the record again.
  const bool data_ok = as_->writeback_error_count() == errors;
  if (Status rec = as_->size_record().FinishSync(as_->device(), ticket, data_ok, size_unrecorded); !rec.ok())
    as_->RecordWritebackError(rec);
  return Status::Ok();
}

Status FileHandle::Sync() {
  OpGuard guard(*this);
  SC_RETURN_IF_ERROR(CheckOpen("sync"));
  bool unrecorded = false;
  Status st = WriteBackAll(&unrecorded);
  st.Update(ReportErrors());
  if (unrecorded) st.Update(SizeUnrecorded());
  return st;
}

Status FileHandle::SyncRange(uint64_t offset, uint64_t len, unsigned flags) {
  OpGuard guard(*this);
  SC_RETURN_IF_ERROR(CheckRange("sync_range", offset, len));
  if (flags & ~unsigned{kSyncWaitBefore | kSyncWrite | kSyncWaitAfter})
    return Status::InvalidArgument(fmt::format("sync_range: unknown flags {:#x}", flags));
  uint64_t first = offset >> 12;
  uint64_t last = len == 0 ? UINT64_MAX : (offset + len - 1) >> 12;
  if (flags & kSyncWaitBefore) WaitWritebackRange(*as_, first, last);
  if (flags & kSyncWrite)
    WritebackRange(*as_, first, last, (flags & kSyncWaitAfter) ? WritebackMode::kSync : WritebackMode::kBackground);
  if (flags & kSyncWaitAfter) {
    WaitWritebackRange(*as_, first, last);
    return ReportErrors();
  }
  return Status::Ok();
}

Status FileHandle::Truncate(uint64_t size) {
  OpGuard guard(*this);
  SC_RETURN_IF_ERROR(CheckOpen("truncate"));
  AddressSpace& as = *as_;
  uint64_t limit = as.device_pages() << 12;
  if (size > limit)
    return Status::OutOfRange(
        fmt::format("truncate to {} bytes exceeds the file limit of device '{}' ({} bytes: the last 8 KiB hold the "
                    "file size record)",
                    size, as.device().Info().name, limit));
  std::unique_lock il(as.invalidate_lock());
  if (size < as.size()) {
    as.direct().WaitIdle();  // no direct I/O runs on pages it drops
    return TruncateLocked(as, size);
  }
  if (size > as.size()) return ExtendLocked(as, size);
  return Status::Ok();
}

Result<uint64_t> FileHandle::Size() const {
  OpGuard guard(*this);
  if (Status st = CheckOpen("size"); !st.ok()) return Err(st);
  return as_->size();
}

Status FileHandle::Close() {
  if (closing_.exchange(true))
    return Status::Closed(fmt::format("close of an already closed file ({})", as_->device().Info().name));
  DrainOps();  // operations already running finish first; Sync covers them
  bool unrecorded = false;
  Status st = WriteBackAll(&unrecorded);
  st.Update(ReportErrors());
  if (unrecorded) st.Update(SizeUnrecorded());
  closed_.store(true, std::memory_order_release);
  // When the Sync failed, the space keeps its dirty pages (and its error)
  // for the flusher to retry and for the next handle to hear of.
  st.Update(cache_->CloseSpace(as_, /*keep_dirty=*/!st.ok()));
  return st;
}

}  // namespace stablecache
