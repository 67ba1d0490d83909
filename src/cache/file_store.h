// FileStore: where the pages of a mappable file live.
//
// A plain file's pages use frames of the cache's arena, any frame for any
// page. A file opened with FileOptions::mappable keeps page `idx` at offset
// idx * 4096 of its own memfd instead, so a user mapping of that memfd (see
// mapping/) reaches the cache's bytes with no copy, one VMA per mapping,
// and the kernel does what Linux does for a shared file mapping past its
// end: the memfd is sized to the file (rounded up to a page), so an access
// past EOF gets SIGBUS and a truncate unmaps what it cuts off.
//
// The cache reaches the memfd through its own view (never registered with
// userfaultfd). Evicting a page punches its hole, which frees the memory and
// unmaps it from every user mapping at once.
//
// Contract: the caller never touches Page(idx) for idx >= pages(): grow
// first (Resize), shrink after the pages past the new end are gone.
// Thread-safe: Resize and Punch are system calls on the memfd.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "stablecache/status.h"

namespace stablecache {

class FileStore {
 public:
  // `max_pages`: the most the file can hold (the view reserves that much
  // address space); `size_bytes`: the file's size now.
  static Result<std::unique_ptr<FileStore>> Create(std::string_view name, uint64_t max_pages, uint64_t size_bytes);
  ~FileStore();
  FileStore(const FileStore&) = delete;
  FileStore& operator=(const FileStore&) = delete;

  std::byte* Page(uint64_t idx) const { return base_ + (idx << 12); }
  int fd() const { return fd_; }
  uint64_t max_pages() const { return max_pages_; }
  // Pages the memfd holds now: the file size rounded up.
  uint64_t pages() const { return pages_.load(std::memory_order_acquire); }
  // Sizes the memfd for a file of `size_bytes` (rounded up to a page).
  Status Resize(uint64_t size_bytes);
  // Frees page idx and unmaps it from every mapping.
  void Punch(uint64_t idx);

 private:
  FileStore(int fd, std::byte* base, uint64_t max_pages, uint64_t pages)
      : fd_(fd), base_(base), max_pages_(max_pages), pages_(pages) {}
  int fd_;
  std::byte* base_;
  uint64_t max_pages_;
  // The memfd's size in pages, as the last Create/Resize set it (read on
  // every fill and fault of a mappable file: no fstat there).
  std::atomic<uint64_t> pages_;
};

}  // namespace stablecache
