// MappingImpl: File::Map's mapping (stablecache/mapping.h) and its
// userfaultfd fault handler.
//
// The range is a MAP_SHARED mapping of the file's memfd (cache/file_store.h)
// registered for missing, minor and (writable) write-protect faults. The
// kernel maps nothing itself: every page comes in through the handler,
// which makes it uptodate in the cache first and installs it
// write-protected, so the cache always knows which pages a store may have
// touched (they are Dirty) and eviction of a clean page loses nothing.
//
// Lifetime: the mapping holds a File handle of its own on the device
// (opened by Map), so the file's pages stay in the cache while it exists,
// whatever the handle that mapped it does.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "cache/address_space.h"
#include "cache/mapped_view.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"

namespace stablecache {

class MappingImpl final : public Mapping, public MappedView {
 public:
  // `handle`: the mapping's own handle on the file of `as`.
  static Result<std::unique_ptr<MappingImpl>> Create(std::unique_ptr<File> handle, std::shared_ptr<AddressSpace> as,
                                                     uint64_t offset, size_t length, MapAccess access);
  ~MappingImpl() override;

  std::byte* data() const override { return base_; }
  size_t size() const override { return length_; }
  uint64_t offset() const override { return offset_; }
  Status Msync(size_t offset, size_t length, MsyncMode mode) override;
  Status Unmap() override;

  void WriteProtect(uint64_t idx) override;
  void PageIndexed(uint64_t idx) override;

 private:
  MappingImpl(std::unique_ptr<File> handle, std::shared_ptr<AddressSpace> as, uint64_t offset, size_t length,
              MapAccess access);
  Status Start();
  void Run();
  void HandleFault(uint64_t address, uint64_t flags);
  void MapIn(uint64_t page_addr, uint64_t idx);
  void MkWrite(uint64_t page_addr, uint64_t idx);
  void Wake(uint64_t page_addr);
  void Poison(uint64_t page_addr);
  void Teardown();

  std::unique_ptr<File> handle_;
  std::shared_ptr<AddressSpace> as_;
  const uint64_t offset_;
  const size_t length_;
  const bool writable_;
  std::byte* base_ = nullptr;
  int uffd_ = -1;
  int stop_fd_ = -1;  // eventfd: tells the handler to exit
  bool continue_wp_ = true;  // UFFDIO_CONTINUE_MODE_WP works
  bool poison_ = false;      // UFFDIO_POISON works
  bool registered_view_ = false;
  std::thread handler_;
  bool unmapped_ = false;
  // Pages Poison raised SIGBUS for (a poison marker stays in the page
  // table until zapped): cleared when the cache indexes the page again.
  std::mutex poison_mu_;
  std::set<uint64_t> poisoned_;  // GUARDED_BY(poison_mu_); file page numbers
  std::atomic<bool> any_poisoned_{false};
};

}  // namespace stablecache
