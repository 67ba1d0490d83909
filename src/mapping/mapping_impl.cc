#include "mapping/mapping_impl.h"

#include "cache/cache_impl.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

#include "cache/cache_impl.h"
#include "cache/file_handle.h"
#include "mapping/userfaultfd_abi.h"

namespace stablecache {

namespace {

constexpr uint64_t kPage = 4096;

// Opens a userfaultfd with `features`; -1 and errno on failure.
int OpenUserfaultfd(uint64_t features) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return -1;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// ioctl, retried while the kernel says the address space is changing.
int UffdIoctl(int fd, unsigned long req, void* arg) {
  for (;;) {
    if (ioctl(fd, req, arg) == 0) return 0;
    if (errno != EAGAIN) return -1;
  }
}

}  // namespace

MappingImpl::MappingImpl(std::unique_ptr<File> handle, std::shared_ptr<AddressSpace> as, uint64_t offset,
                         size_t length, MapAccess access)
    : handle_(std::move(handle)),
      as_(std::move(as)),
      offset_(offset),
      length_(length),
      writable_(access == MapAccess::kReadWrite) {}

Result<std::unique_ptr<MappingImpl>> MappingImpl::Create(std::unique_ptr<File> handle,
                                                         std::shared_ptr<AddressSpace> as, uint64_t offset,
                                                         size_t length, MapAccess access) {
  std::unique_ptr<MappingImpl> m(new MappingImpl(std::move(handle), std::move(as), offset, length, access));
  if (Status st = m->Start(); !st.ok()) return Err(st);
  return m;
}

Status MappingImpl::Start() {
  const std::string name = as_->device().Info().name;
  const int prot = PROT_READ | (writable_ ? PROT_WRITE : 0);
  void* base = mmap(nullptr, length_, prot, MAP_SHARED | MAP_NORESERVE, as_->store()->fd(),
                    static_cast<off_t>(offset_));
  if (base == MAP_FAILED) return Status::FromErrno(errno, fmt::format("map of '{}': mmap", name));
  base_ = static_cast<std::byte*>(base);

  const uint64_t needed = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
  uffd_ = OpenUserfaultfd(needed | UFFD_FEATURE_POISON);
  poison_ = uffd_ >= 0;
  if (uffd_ < 0 && errno == EINVAL) uffd_ = OpenUserfaultfd(needed);
  if (uffd_ < 0) {
    const int e = errno;
    Teardown();
    if (e == EPERM)
      return Status::NotSupported(fmt::format(
          "map of '{}': userfaultfd is not permitted to this process (vm.unprivileged_userfaultfd is 0 and it lacks "
          "CAP_SYS_PTRACE)",
          name));
    return Status::NotSupported(fmt::format(
        "map of '{}': this kernel's userfaultfd lacks shmem missing/minor/write-protect faults: {}", name,
        strerror(e)));
  }
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(base_), length_};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR | (writable_ ? UFFDIO_REGISTER_MODE_WP : 0);
  if (ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
    Status st = Status::FromErrno(errno, fmt::format("map of '{}': registering the range with userfaultfd", name));
    Teardown();
    return st;
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) {
    Status st = Status::FromErrno(errno, "map: eventfd");
    Teardown();
    return st;
  }
  as_->AddView(this);
  registered_view_ = true;
  handler_ = std::thread([this] { Run(); });
  as_->cache().mapped_ranges().Add(base_, length_, as_.get(), offset_ >> 12, writable_);
  return Status::Ok();
}

MappingImpl::~MappingImpl() {
  if (!unmapped_) {
    Teardown();
    handle_.reset();  // its destructor writes back, as a dropped File does
  }
}

Status MappingImpl::Unmap() {
  if (unmapped_) return Status::Closed("unmap of a mapping already unmapped");
  Teardown();
  unmapped_ = true;
  return handle_->Close();
}

void MappingImpl::Teardown() {
  // No direct I/O finds the range from now on.
  if (base_ != nullptr) as_->cache().mapped_ranges().Remove(base_);
  // No page_mkclean reaches a view on its way out.
  if (registered_view_) as_->RemoveView(this);
  registered_view_ = false;
  if (handler_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    handler_.join();
  }
  if (uffd_ >= 0) close(uffd_);  // unregisters the range
  if (stop_fd_ >= 0) close(stop_fd_);
  if (base_ != nullptr) munmap(base_, length_);
  uffd_ = stop_fd_ = -1;
  base_ = nullptr;
}

Status MappingImpl::Msync(size_t offset, size_t length, MsyncMode mode) {
  if (unmapped_) return Status::Closed("msync of an unmapped mapping");
  if (offset > length_ || length > length_ - offset)
    return Status::OutOfRange(
        fmt::format("msync: [{}, {}) is outside the mapping of {} bytes", offset, offset + length, length_));
  if (length == 0) length = length_ - offset;
  switch (mode) {
    case MsyncMode::kSync:
      return handle_->Sync();
    case MsyncMode::kAsync:
      return handle_->SyncRange(offset_ + offset, length, kSyncWrite);
    case MsyncMode::kInvalidate:
      return Status::Ok();  // one copy: nothing to invalidate
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- faults

void MappingImpl::Run() {
  pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  uffd_msg msgs[16];
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents & POLLIN) return;
    const ssize_t n = read(uffd_, msgs, sizeof msgs);
    if (n <= 0) continue;  // EAGAIN: another wake-up took it
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); i++) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      HandleFault(msgs[i].arg.pagefault.address, msgs[i].arg.pagefault.flags);
    }
  }
}

void MappingImpl::HandleFault(uint64_t address, uint64_t flags) {
  const uint64_t page_addr = address & ~(kPage - 1);
  const uint64_t idx = (offset_ + (page_addr - reinterpret_cast<uint64_t>(base_))) >> 12;
  if (flags & UFFD_PAGEFAULT_FLAG_WP)
    MkWrite(page_addr, idx);
  else
    MapIn(page_addr, idx);
}

// A missing or minor fault: make the page uptodate in the cache (its frame
// is the memfd page the mapping shows) and map it, write-protected when the
// mapping is writable, so the first store runs MkWrite.
void MappingImpl::MapIn(uint64_t page_addr, uint64_t idx) {
  std::shared_lock il(as_->invalidate_lock());  // no truncate meanwhile
  if (idx >= as_->EofPages()) {
    // The memfd ends at EOF, so the kernel raises SIGBUS on the retry; if
    // it still holds the page (a shrink that failed), raise it here.
    if (idx < as_->store()->pages())
      Poison(page_addr);
    else
      Wake(page_addr);
    return;
  }
  auto page = GetUptodatePage(*as_, idx);
  if (!page) {
    Poison(page_addr);  // the device cannot read it: SIGBUS, as on Linux
    return;
  }
  (*page)->SetFlags(Page::kReferenced);
  uffdio_continue c{};
  c.range = {page_addr, kPage};
  c.mode = writable_ && continue_wp_ ? UFFDIO_CONTINUE_MODE_WP : 0;
  int rc = UffdIoctl(uffd_, UFFDIO_CONTINUE, &c);
  if (rc != 0 && errno == EINVAL && c.mode != 0) {
    // No UFFDIO_CONTINUE_MODE_WP (Linux < 6.5): map it writable and count
    // the page dirty now, since a store will not fault.
    continue_wp_ = false;
    (*page)->Lock();
    if (!(*page)->Test(Page::kDetached)) as_->MarkDirty(page->get());
    c.mode = 0;
    rc = UffdIoctl(uffd_, UFFDIO_CONTINUE, &c);
    (*page)->Unlock();
  }
  if (rc != 0) Wake(page_addr);  // EEXIST: mapped meanwhile; else retry
}

// page_mkwrite: the first store to a page since it was cleaned.
void MappingImpl::MkWrite(uint64_t page_addr, uint64_t idx) {
  (void)as_->cache().BalanceDirtyPages(*as_);  // throttled like a writer
  PageRef p = as_->FindGet(idx);
  if (!p) {
    Wake(page_addr);  // evicted, so unmapped: the retry faults it back in
    return;
  }
  p->Lock();
  if (p->Test(Page::kDetached)) {
    p->Unlock();
    Wake(page_addr);
    return;
  }
  if (as_->policy() == StablePolicy::kWait && p->Test(Page::kWriteback)) {
    as_->cache().counters().stable_waits.fetch_add(1, std::memory_order_relaxed);
    p->WaitWriteback();
  }
  // Dirty before the store can land, and under the page lock, which
  // writeback holds from page_mkclean until it has taken the bytes.
  as_->MarkDirty(p.get());
  uffdio_writeprotect wp{};
  wp.range = {page_addr, kPage};
  wp.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE;  // un-protect
  (void)UffdIoctl(uffd_, UFFDIO_WRITEPROTECT, &wp);
  p->Unlock();
  // The writer resumes only once the page is unlocked: a writeback it
  // starts right after its store (Msync(kAsync) skips locked pages) finds
  // the page it dirtied.
  Wake(page_addr);
}

void MappingImpl::WriteProtect(uint64_t idx) {
  if (!writable_) return;
  const uint64_t first = offset_ >> 12;
  const uint64_t end = (offset_ + length_ + kPage - 1) >> 12;
  if (idx < first || idx >= end) return;
  uffdio_writeprotect wp{};
  wp.range = {reinterpret_cast<uint64_t>(base_) + ((idx - first) << 12), kPage};
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  (void)UffdIoctl(uffd_, UFFDIO_WRITEPROTECT, &wp);
}

void MappingImpl::Wake(uint64_t page_addr) {
  uffdio_range r{page_addr, kPage};
  (void)UffdIoctl(uffd_, UFFDIO_WAKE, &r);
}

void MappingImpl::Poison(uint64_t page_addr) {
  if (poison_) {
    const uint64_t idx = (offset_ + (page_addr - reinterpret_cast<uint64_t>(base_))) >> 12;
    bool poisoned = false;
    {
      std::lock_guard lk(poison_mu_);
      // Before the marker: a PageIndexed that runs once the access has its
      // SIGBUS must take poison_mu_ (and so find idx).
      any_poisoned_.store(true, std::memory_order_seq_cst);
      uffdio_poison p{};
      p.range = {page_addr, kPage};
      if (UffdIoctl(uffd_, UFFDIO_POISON, &p) == 0) {
        poisoned = true;
        poisoned_.insert(idx);
      }
      any_poisoned_.store(!poisoned_.empty(), std::memory_order_release);
    }
    // A page indexed before the marker was recorded told nobody.
    if (poisoned && as_->FindGet(idx)) PageIndexed(idx);
    if (poisoned) return;
  }
  Wake(page_addr);  // no way to raise SIGBUS: the access retries
}

// Linux raises SIGBUS for the access that met the read error only; the
// poison marker would raise it for every later access. Once the cache holds
// the page again (a Write, a Read, a retried fill), zap the marker: the next
// access faults and the handler maps (or reads, or poisons) it afresh.
void MappingImpl::PageIndexed(uint64_t idx) {
  if (!any_poisoned_.load(std::memory_order_acquire)) return;
  std::lock_guard lk(poison_mu_);
  if (poisoned_.erase(idx) == 0) return;
  any_poisoned_.store(!poisoned_.empty(), std::memory_order_release);
  const uint64_t first = offset_ >> 12;
  (void)madvise(base_ + ((idx - first) << 12), kPage, MADV_DONTNEED);
}

}  // namespace stablecache
