// FrameArena: a fixed pool of 4 KiB frames in one memfd mapping.
//
// All cache pages, fork copies and bounce copies live here, so the memory is
// one region that a leaf device registers once (io_uring fixed buffers) and
// that can later be mapped into user-visible views. The arena never grows:
// its size is the hard memory bound of a Cache.
//
// Allocation is sharded: each thread allocates from a home shard and steals
// from the others only when it is empty, so concurrent forks do not all
// contend on one lock. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "stablecache/status.h"

namespace stablecache {

inline constexpr uint32_t kFrameSize = 4096;
inline constexpr uint32_t kFrameShift = 12;
inline constexpr uint32_t kNoFrame = UINT32_MAX;

class FrameArena {
 public:
  [[nodiscard]] static Result<std::unique_ptr<FrameArena>> Create(uint32_t frames);
  ~FrameArena();
  FrameArena(const FrameArena&) = delete;
  FrameArena& operator=(const FrameArena&) = delete;

  // Returns kNoFrame when every frame is in use.
  uint32_t Allocate();
  void Free(uint32_t frame);

  std::byte* Data(uint32_t frame) const { return base_ + (size_t{frame} << kFrameShift); }
  uint32_t frames() const { return frames_; }
  uint32_t free_frames() const;
  int fd() const { return fd_; }
  std::span<std::byte> Region() const { return {base_, size_t{frames_} << kFrameShift}; }

 private:
  struct alignas(64) Shard {
    std::mutex mu;
    std::vector<uint32_t> free;
  };
  FrameArena(int fd, std::byte* base, uint32_t frames);
  Shard& HomeShard();

  int fd_;
  std::byte* base_;
  uint32_t frames_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace stablecache
