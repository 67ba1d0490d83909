#include "memory/frame_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <thread>

#include <fmt/format.h>

namespace stablecache {

namespace {
constexpr size_t kShards = 8;
}

Result<std::unique_ptr<FrameArena>> FrameArena::Create(uint32_t frames) {
  if (frames == 0) return Err(Status::InvalidArgument("frame arena needs at least one frame"));
  int fd = memfd_create("stablecache-frames", MFD_CLOEXEC);
  if (fd < 0) return Err(Status::FromErrno(errno, "memfd_create"));
  size_t bytes = size_t{frames} << kFrameShift;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    Status st = Status::FromErrno(errno, fmt::format("ftruncate memfd to {} bytes", bytes));
    close(fd);
    return Err(st);
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    Status st = Status::FromErrno(errno, fmt::format("mmap {} bytes of frames", bytes));
    close(fd);
    return Err(st);
  }
  return std::unique_ptr<FrameArena>(new FrameArena(fd, static_cast<std::byte*>(p), frames));
}

FrameArena::FrameArena(int fd, std::byte* base, uint32_t frames)
    : fd_(fd), base_(base), frames_(frames) {
  for (size_t i = 0; i < kShards; i++) shards_.push_back(std::make_unique<Shard>());
  // Deal frames round-robin, highest first so low frames are handed out first.
  for (uint32_t f = frames; f-- > 0;) shards_[f % kShards]->free.push_back(f);
}

FrameArena::~FrameArena() {
  munmap(base_, size_t{frames_} << kFrameShift);
  close(fd_);
}

FrameArena::Shard& FrameArena::HomeShard() {
  static std::atomic<size_t> next{0};
  thread_local size_t home = next.fetch_add(1, std::memory_order_relaxed);
  return *shards_[home % kShards];
}

constexpr int kScanPasses = 64;

uint32_t FrameArena::Allocate() {
  Shard& home = HomeShard();
  {
    std::lock_guard lk(home.mu);
    if (!home.free.empty()) {
      uint32_t f = home.free.back();
      home.free.pop_back();
      return f;
    }
  }
  // A scan takes one shard lock at a time, so a frame can move under it (a
  // Free into a shard already passed while another Allocate takes the one
  // ahead): a caller whose quota guarantees a free frame (the page pool)
  // would be told there is none. Scan again before saying so.
  for (int pass = 0; pass < kScanPasses; pass++) {
    for (auto& s : shards_) {
      std::lock_guard lk(s->mu);
      if (!s->free.empty()) {
        uint32_t f = s->free.back();
        s->free.pop_back();
        return f;
      }
    }
    std::this_thread::yield();
  }
  return kNoFrame;
}

void FrameArena::Free(uint32_t frame) {
  Shard& home = HomeShard();
  std::lock_guard lk(home.mu);
  home.free.push_back(frame);
}

uint32_t FrameArena::free_frames() const {
  uint32_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lk(s->mu);
    n += static_cast<uint32_t>(s->free.size());
  }
  return n;
}

}  // namespace stablecache
