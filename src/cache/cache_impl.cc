#include "cache/cache_impl.h"

#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

#include "cache/file_handle.h"
#include "cache/size_record.h"
#include "writeback/flusher.h"
#include "writeback/writeback.h"

namespace stablecache {

const char* PolicyName(StablePolicy p) {
  switch (p) {
    case StablePolicy::kNone: return "none";
    case StablePolicy::kWait: return "wait";
    case StablePolicy::kBounce: return "bounce";
    case StablePolicy::kFork: return "fork";
    case StablePolicy::kAuto: return "auto";
  }
  return "?";
}

Result<StablePolicy> ParsePolicy(std::string_view name) {
  for (auto p : {StablePolicy::kNone, StablePolicy::kWait, StablePolicy::kBounce, StablePolicy::kFork,
                 StablePolicy::kAuto})
    if (name == PolicyName(p)) return p;
  return Err(Status::InvalidArgument(
      fmt::format("unknown stable-write policy '{}' (expected none, wait, bounce, fork or auto)", name)));
}

Result<std::shared_ptr<Cache>> Cache::Create(const CacheOptions& opts) {
  if (opts.dirty_ratio <= 0 || opts.dirty_ratio > 1 || opts.dirty_background_ratio <= 0 ||
      opts.dirty_background_ratio > opts.dirty_ratio)
    return Err(Status::InvalidArgument(fmt::format(
        "dirty ratios must satisfy 0 < background ({}) <= dirty ({}) <= 1", opts.dirty_background_ratio,
        opts.dirty_ratio)));
  if (opts.max_bio_pages == 0) return Err(Status::InvalidArgument("max_bio_pages must be at least 1"));
  if (opts.io_reserve_frames == 0) return Err(Status::InvalidArgument("io_reserve_frames must be at least 1"));
  uint64_t pages = opts.capacity_bytes >> 12;
  if (pages > (1u << 30)) return Err(Status::InvalidArgument("cache capacity above 4 TiB"));
  auto pool = PagePool::Create(static_cast<uint32_t>(pages), opts.io_reserve_frames);
  if (!pool) return Err(pool.error());
  return std::shared_ptr<Cache>(std::make_shared<CacheImpl>(opts, std::move(*pool)));
}

CacheImpl::CacheImpl(const CacheOptions& opts, std::unique_ptr<PagePool> pool)
    : opts_(opts), pool_(std::move(pool)) {
  dirty_limit_ = std::max<uint64_t>(1, static_cast<uint64_t>(pool_->capacity() * opts_.dirty_ratio));
  background_limit_ = static_cast<uint64_t>(pool_->capacity() * opts_.dirty_background_ratio);
  flusher_ = std::make_unique<Flusher>(*this, opts_.flusher_threads,
                                       std::chrono::milliseconds(opts_.writeback_interval_ms));
}

CacheImpl::~CacheImpl() {
  flusher_.reset();
  std::lock_guard lk(spaces_mu_);
  for (auto& [dev, as] : spaces_) {
    as->DropAllPages();
    // The arena is about to go: no device may keep it registered (a later
    // arena at the same address would move bytes to these dead pages).
    as->device().UnregisterMemory(pool_->arena().Region());
  }
  spaces_.clear();
  // Completions that ended the last writebacks may still be updating our
  // counters and pool (and dropping the last reference to a space).
  batches_->WaitNone();
}

Result<std::unique_ptr<File>> CacheImpl::Open(std::shared_ptr<BlockDevice> device, const FileOptions& fo) {
  if (!device) return Err(Status::InvalidArgument("Open: no device"));
  const DeviceInfo& info = device->Info();
  if (info.logical_block_size == 0 || info.logical_block_size > kFrameSize ||
      kFrameSize % info.logical_block_size != 0)
    return Err(Status::NotSupported(fmt::format("device '{}' has logical block size {}; the cache needs one "
                                                "that divides 4096",
                                                info.name, info.logical_block_size)));
  if (FileLimit(info.size_bytes) < kFrameSize)
    return Err(Status::NoSpace(fmt::format("device '{}' holds {} bytes; the cache needs at least {}: one page and "
                                           "the 8 KiB file size record",
                                           info.name, info.size_bytes, kFrameSize + kSizeRecordBytes)));
  StablePolicy policy = fo.policy.value_or(opts_.policy);
  if (policy == StablePolicy::kAuto)
    policy = device->StackRequiredStability() > Stability::kUnstable ? StablePolicy::kFork : StablePolicy::kNone;
  // A mappable file has one frame per page number: no fork. Its writeback
  // writes a copy of the page instead (stablecache/cache.h, FileOptions).
  if (fo.mappable && policy == StablePolicy::kFork) policy = StablePolicy::kBounce;

  // One Open at a time reads (or formats) a device's size record, outside
  // spaces_mu_ so the flusher and reclaim never wait on that I/O.
  std::lock_guard open_lk(open_mu_);
  std::shared_ptr<AddressSpace> as;
  {
    std::lock_guard lk(spaces_mu_);
    auto it = spaces_.find(device.get());
    if (it != spaces_.end()) {
      // Open already: the size in memory is the file's, whatever the medium
      // says until the next Sync.
      as = it->second;
      if (fo.initial_size != 0 && fo.initial_size != as->size())
        return Err(SizeConflict(*device, as->size(), fo.initial_size));
      if (fo.mappable != as->mappable())
        return Err(Status::InvalidArgument(fmt::format(
            "device '{}' is open in this cache {} FileOptions::mappable; this open asks {} it", info.name,
            as->mappable() ? "with" : "without", fo.mappable ? "for" : "not for")));
      as->open_handles().fetch_add(1);
      return std::unique_ptr<File>(new FileHandle(shared_from_this(), as));
    }
  }
  auto record = OpenSizeRecord(*device, fo.initial_size);
  if (!record) return Err(record.error());
  std::unique_ptr<FileStore> store;
  if (fo.mappable) {
    auto s = FileStore::Create(info.name, FileLimit(info.size_bytes) >> 12, record->size);
    if (!s) return Err(s.error());
    store = std::move(*s);
  }
  {
    std::lock_guard lk(spaces_mu_);
    device->RegisterMemory(pool_->arena().Region());
    as = std::make_shared<AddressSpace>(*this, device, *record, policy, std::move(store));
    spaces_.emplace(device.get(), as);
    as->open_handles().fetch_add(1);
  }
  return std::unique_ptr<File>(new FileHandle(shared_from_this(), as));
}

namespace {
// Whether a space no handle holds can go now, without waiting: it must stay
// while it still holds data or news for the next handle (dirty pages a
// failed writeback re-dirtied, holes not yet written, an error nobody has
// reported) or has writes in flight. The order
// matters: a page is dirty or in flight at every instant, and a write that
// fails records its error before it re-dirties the page and before it
// leaves the in-flight map. So: nothing dirty, then nothing in flight
// (every write that was in flight when we looked at the dirty pages has
// ended), then no unreported error (none of those writes failed).
bool IdleNow(AddressSpace& as) {
  if (as.dirty_count() != 0 || as.holes_exposed().load()) return false;
  // A size the medium does not hold yet (its record write failed) stays
  // for the next handle's Sync, like a dirty page.
  if (as.size_record().durable_size() != as.size()) return false;
  if (!as.NothingInFlight()) return false;
  return !as.errseq().HasUnseen();
}
}  // namespace

Status CacheImpl::CloseSpace(const std::shared_ptr<AddressSpace>& as, bool keep_dirty) {
  {
    std::lock_guard lk(spaces_mu_);
    if (as->open_handles().fetch_sub(1) != 1) return Status::Ok();
  }
  // Writes in flight may still fail and re-dirty their pages: decide after.
  WaitWritebackRange(*as, 0, UINT64_MAX);
  {
    std::lock_guard lk(spaces_mu_);
    if (as->open_handles().load() != 0) return Status::Ok();  // opened again meanwhile
    if (keep_dirty || !IdleNow(*as)) return Status::Ok();  // the flusher releases it later
    auto it = spaces_.find(&as->device());
    if (it == spaces_.end() || it->second != as) return Status::Ok();
    spaces_.erase(it);
  }
  ReleaseSpace(*as);
  return Status::Ok();
}

void CacheImpl::ReleaseSpace(AddressSpace& as) {
  as.DropAllPages();
  as.device().UnregisterMemory(pool_->arena().Region());
}

namespace {
// A space no handle holds whose size the medium lacks: the Close (or
// handle destructor) that should have written it failed, and the space was
// kept. Once the flusher has written its pages, this finishes that Close:
// a flush, then the size record (ordered mode, as in Sync). A failure goes
// into the errseq for the next handle, and the space stays.
//
// The space was picked without its invalidate lock, and a handle may have
// opened it since: an extension then left holes (never written; their
// blocks may hold bytes of a file truncated long ago) or pages not yet
// written below the size. So the size is sampled under the lock only when
// the space is still as picked: no handle, no exposed hole, nothing dirty
// or in flight. Otherwise this pass leaves it (the handle's Sync or Close,
// or a later pass, writes the record). Once sampled, later extensions are
// above the sample, and a truncate lowers it (NoteTruncate).
void PersistSizeOfClosedSpace(AddressSpace& as) {
  const uint64_t errors = as.writeback_error_count();
  uint64_t ticket;
  {
    std::shared_lock il(as.invalidate_lock());
    if (as.open_handles().load() != 0 || as.holes_exposed().load() || as.dirty_count() != 0 ||
        !as.NothingInFlight())
      return;
    ticket = as.size_record().BeginSync(as.size());
  }
  if (Status flush = FlushSync(as.device()); !flush.ok()) as.RecordWritebackError(flush);
  const bool data_ok = as.writeback_error_count() == errors && as.dirty_count() == 0 && as.NothingInFlight();
  if (Status rec = as.size_record().FinishSync(as.device(), ticket, data_ok); !rec.ok()) as.RecordWritebackError(rec);
}
}  // namespace

void CacheImpl::ReleaseIdleSpaces() {
  // Sizes left for the flusher by a failed Close, once their pages are out.
  std::vector<std::shared_ptr<AddressSpace>> stale;
  {
    std::shared_lock lk(spaces_mu_);
    for (auto& [dev, as] : spaces_)
      if (as->open_handles().load() == 0 && as->dirty_count() == 0 && !as->holes_exposed().load() &&
          as->NothingInFlight() && as->size_record().durable_size() != as->size())
        stale.push_back(as);
  }
  for (auto& as : stale) PersistSizeOfClosedSpace(*as);
  // Never waits: the flusher calling this must not stall on one device.
  std::vector<std::shared_ptr<AddressSpace>> idle;
  {
    std::lock_guard lk(spaces_mu_);  // no Open meanwhile
    for (auto it = spaces_.begin(); it != spaces_.end();) {
      if (it->second->open_handles().load() == 0 && IdleNow(*it->second)) {
        idle.push_back(std::move(it->second));
        it = spaces_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& as : idle) ReleaseSpace(*as);
}

std::vector<std::shared_ptr<AddressSpace>> CacheImpl::Spaces() {
  std::shared_lock lk(spaces_mu_);
  std::vector<std::shared_ptr<AddressSpace>> out;
  out.reserve(spaces_.size());
  for (auto& [dev, as] : spaces_) out.push_back(as);
  return out;
}

CacheStats CacheImpl::Stats() const {
  CacheStats s;
  auto& c = counters_;
  s.capacity_pages = pool_->capacity();
  s.cached_pages = pool_->cached();
  s.max_cached_pages = pool_->max_cached();
  s.dirty_pages = static_cast<uint64_t>(std::max<int64_t>(0, c.dirty.load()));
  s.writeback_pages = static_cast<uint64_t>(std::max<int64_t>(0, c.writeback.load()));
  s.hits = c.hits.load();
  s.misses = c.misses.load();
  s.readahead_pages = c.readahead_pages.load();
  s.evictions = c.evictions.load();
  s.pages_written = c.pages_written.load();
  s.writeback_errors = c.writeback_errors.load();
  s.throttle_waits = c.throttle_waits.load();
  s.stable_waits = c.stable_waits.load();
  s.forks = c.forks.load();
  s.fork_copies_skipped = c.fork_copies_skipped.load();
  s.bytes_bounced = c.bytes_bounced.load();
  return s;
}

// ---------------------------------------------------------------- reclaim

bool CacheImpl::EvictOne() {
  std::shared_lock lk(spaces_mu_);  // keeps every owner alive while we look
  const uint32_t n = pool_->arena().frames();
  for (uint32_t step = 0; step < 2 * n; step++) {
    uint32_t f;
    {
      std::lock_guard ck(clock_mu_);
      f = clock_hand_;
      clock_hand_ = (clock_hand_ + 1) % n;
    }
    Page* p = pool_->Descriptor(f);
    uint64_t w = p->Load();
    constexpr uint64_t kBusy = Page::kLocked | Page::kDirty | Page::kWriteback | Page::kDetached;
    if (Page::Refs(w) != 1 || (w & kBusy)) continue;
    if (w & Page::kReferenced) {
      p->TestAndClear(Page::kReferenced);
      continue;
    }
    AddressSpace* as = p->owner.load(std::memory_order_acquire);
    if (as == nullptr) continue;
    bool live = false;
    for (auto& [dev, s] : spaces_) live |= s.get() == as;
    if (live && as->TryEvict(p)) {
      counters_.evictions.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

Page* CacheImpl::TryAllocPage() {
  if (Page* p = pool_->TryAllocPage()) return p;
  if (EvictOne()) return pool_->TryAllocPage();
  return nullptr;
}

Result<Page*> CacheImpl::AllocPage() {
  for (;;) {
    uint32_t ev = pool_->free_event().load(std::memory_order_acquire);
    if (Page* p = pool_->TryAllocPage()) return p;
    if (EvictOne()) continue;
    // Nothing clean and idle: writeback has to finish first.
    WakeFlusher();
    if (counters_.writeback.load() > 0 || counters_.dirty.load() > 0)
      pool_->free_event().wait(ev, std::memory_order_acquire);
    else
      std::this_thread::yield();  // pages held for a moment by other threads
  }
}

// ---------------------------------------------------------------- dirty limits

uint64_t CacheImpl::StuckDirtyPages(const AddressSpace& self) {
  std::shared_lock lk(spaces_mu_);
  uint64_t n = 0;
  for (auto& [dev, as] : spaces_)
    if (as.get() != &self && as->writeback_failing()) n += as->dirty_count();
  return n;
}

Status CacheImpl::BalanceDirtyPages(AddressSpace& as) {
  auto dirty = [&] { return static_cast<uint64_t>(std::max<int64_t>(0, counters_.dirty.load())); };
  if (dirty() > background_limit_) WakeFlusher();
  if (dirty() < dirty_limit_) return Status::Ok();
  counters_.throttle_waits.fetch_add(1, std::memory_order_relaxed);
  const uint64_t errors = as.writeback_error_count();
  // Dirty pages other devices cannot take now may push the total past the
  // limit, but never past this: the rest of the cache stays for clean pages.
  const uint64_t hard_cap = dirty_limit_ + (pool_->capacity() - std::min<uint64_t>(dirty_limit_, pool_->capacity())) / 2;
  for (;;) {
    uint32_t ev = pool_->free_event().load(std::memory_order_acquire);
    const uint64_t d = dirty();
    if (d < dirty_limit_) return Status::Ok();
    if (as.writeback_error_count() != errors)
      return Status::IoError(fmt::format("dirty limit reached while writeback to '{}' is failing; see Sync for the error",
                                         as.device().Info().name));
    // Pages another device cannot take now do not hold this writer back,
    // up to the hard cap; past it the writer is told, not left hanging.
    if (d - std::min(d, StuckDirtyPages(as)) < dirty_limit_) {
      if (d < hard_cap) return Status::Ok();
      return Status::NoSpace(fmt::format(
          "the cache holds {} dirty pages that failing devices cannot take; writes to '{}' must wait for them "
          "to heal or for their files to be closed",
          d, as.device().Info().name));
    }
    WakeFlusher();
    pool_->free_event().wait(ev, std::memory_order_acquire);
  }
}

void CacheImpl::WakeFlusher() { flusher_->Wake(); }

void CacheImpl::NotifyProgress() { pool_->BumpFreeEvent(); }

}  // namespace stablecache
