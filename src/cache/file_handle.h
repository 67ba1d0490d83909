// FileHandle: the File interface over one AddressSpace. Each handle keeps
// its own errseq sample, so each sees a writeback error once.
#pragma once

#include <atomic>
#include <memory>

#include "cache/address_space.h"
#include "cache/cache_impl.h"
#include "stablecache/cache.h"

namespace stablecache {

class FileHandle final : public File {
 public:
  FileHandle(std::shared_ptr<CacheImpl> cache, std::shared_ptr<AddressSpace> as);
  ~FileHandle() override;

  Result<size_t> Read(uint64_t offset, std::span<std::byte> buf) override;
  Result<size_t> Write(uint64_t offset, std::span<const std::byte> data) override;
  Status Sync() override;
  Status SyncRange(uint64_t offset, uint64_t len, unsigned flags) override;
  Status Truncate(uint64_t size) override;
  Result<uint64_t> Size() const override;
  Status Close() override;
  StablePolicy EffectivePolicy() const override { return as_->policy(); }
  Status ReadBypassingCache(uint64_t offset, std::span<std::byte> out, ScrubReport* scrub) override;
  // Defined in mapping/file_map.cc.
  Result<std::unique_ptr<Mapping>> Map(uint64_t offset, size_t length, MapAccess access) override;
  // Defined in direct/direct_io.cc.
  Result<size_t> DirectRead(uint64_t offset, std::span<std::byte> buf, Stability stability) override;
  Result<size_t> DirectWrite(uint64_t offset, std::span<const std::byte> data, Stability stability) override;
  Result<size_t> DirectIo(const DirectRequest& req) override;
  Status SubmitDirect(DirectRequest req, DirectCallback done) override;
  bool PollDirect(const std::function<bool()>& done) override { return as_->device().PollUntil(done); }

 private:
  // Every operation holds an OpGuard while it runs; Close (and the
  // destructor) refuses new operations, then waits for the running ones,
  // so nothing still running can dirty a space Close has released.
  class OpGuard {
   public:
    explicit OpGuard(const FileHandle& h) : h_(h) { h_.active_ops_.fetch_add(1); }
    ~OpGuard() {
      if (h_.active_ops_.fetch_sub(1) == 1 && h_.closing_.load()) h_.active_ops_.notify_all();
    }
    OpGuard(const OpGuard&) = delete;
    OpGuard& operator=(const OpGuard&) = delete;

   private:
    const FileHandle& h_;
  };
  void DrainOps() const;
  // An asynchronous operation (direct I/O) counts as running from its
  // submission to the end of its completion, so Close waits for it.
  void BeginAsyncOp() const { active_ops_.fetch_add(1); }
  void EndAsyncOp() const {
    if (active_ops_.fetch_sub(1) == 1 && closing_.load()) active_ops_.notify_all();
  }
  Status ValidateDirect(const DirectRequest& req) const;
  Status CheckOpen(const char* op) const;
  Status CheckRange(const char* op, uint64_t offset, uint64_t len) const;
  Status ReportErrors();
  // Sync without reporting: holes, dirty pages, then a flush, then the size
  // record if the size changed (cache/size_record.h); a failed flush or
  // record write goes into the errseq. Fails only when the holes could not
  // be dirtied. `*size_unrecorded`: a write failed meanwhile, so the size
  // was not recorded (the caller fails even if the errseq says nothing new
  // to this handle: see SizeUnrecorded).
  Status WriteBackAll(bool* size_unrecorded = nullptr);
  // The error of a Sync or Close that left its size off the medium.
  Status SizeUnrecorded() const;

  std::shared_ptr<CacheImpl> cache_;
  std::shared_ptr<AddressSpace> as_;
  std::atomic<bool> closing_{false};
  std::atomic<bool> closed_{false};
  mutable std::atomic<uint64_t> active_ops_{0};
  std::atomic<uint32_t> errseq_since_;
};

// The page-level paths, shared by File operations and truncate.
// REQUIRES: invalidate lock held (shared, or exclusive when extending).
Result<PageRef> GetUptodatePage(AddressSpace& as, uint64_t idx);
Status WritePagesLocked(AddressSpace& as, uint64_t offset, std::span<const std::byte> data);
// REQUIRES: invalidate lock held exclusive.
Status TruncateLocked(AddressSpace& as, uint64_t new_size);
Status ExtendLocked(AddressSpace& as, uint64_t new_size);
// Writes every hole inside EOF out as a zero page, through the cache, so the
// device matches what readers saw. REQUIRES: invalidate lock held shared.
Status MaterializeHoles(AddressSpace& as);

}  // namespace stablecache
