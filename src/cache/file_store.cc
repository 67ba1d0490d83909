#include "cache/file_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace stablecache {

namespace {
uint64_t RoundUpToPage(uint64_t bytes) { return (bytes + 4095) & ~uint64_t{4095}; }
}  // namespace

Result<std::unique_ptr<FileStore>> FileStore::Create(std::string_view name, uint64_t max_pages, uint64_t size_bytes) {
  const std::string tag = fmt::format("stablecache-file:{}", name);
  int fd = memfd_create(tag.c_str(), MFD_CLOEXEC);
  if (fd < 0) return Err(Status::IoError(fmt::format("memfd_create for the pages of '{}': {}", name, strerror(errno))));
  if (ftruncate(fd, static_cast<off_t>(RoundUpToPage(size_bytes))) != 0) {
    Status st = Status::IoError(fmt::format("sizing the page store of '{}': {}", name, strerror(errno)));
    close(fd);
    return Err(st);
  }
  void* base = mmap(nullptr, std::max<uint64_t>(max_pages, 1) << 12, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                    fd, 0);
  if (base == MAP_FAILED) {
    Status st = Status::IoError(fmt::format("mapping the page store of '{}': {}", name, strerror(errno)));
    close(fd);
    return Err(st);
  }
  return std::unique_ptr<FileStore>(
      new FileStore(fd, static_cast<std::byte*>(base), max_pages, RoundUpToPage(size_bytes) >> 12));
}

FileStore::~FileStore() {
  munmap(base_, std::max<uint64_t>(max_pages_, 1) << 12);
  close(fd_);
}

Status FileStore::Resize(uint64_t size_bytes) {
  if (ftruncate(fd_, static_cast<off_t>(RoundUpToPage(size_bytes))) != 0)
    return Status::IoError(fmt::format("resizing the page store to {} bytes: {}", size_bytes, strerror(errno)));
  pages_.store(RoundUpToPage(size_bytes) >> 12, std::memory_order_release);
  return Status::Ok();
}

void FileStore::Punch(uint64_t idx) {
  // Past the end there is nothing to free (ftruncate freed it).
  (void)fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(idx << 12), 4096);
}

}  // namespace stablecache
