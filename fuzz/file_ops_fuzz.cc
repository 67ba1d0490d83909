// Fuzzes the File API with op sequences checked against a model: a
// std::vector<std::byte> holding what the file must contain.
//
// Each input: a small cache (16 pages, so eviction and writeback run) over
// a 1 MiB MemoryDevice, a policy, two handles on the one file, then ops:
// Write, Read, Truncate, Sync, SyncRange, Size on either handle, and a
// close-and-reopen of one handle. Checks: every Read equals the model,
// Size equals it, no op fails (the device never does); and after a final
// Sync a fresh cache over the same device reads back the model's bytes.
//
//
// The reserve of I/O frames is 4, smaller than a writeback bio can use, so
// bounce writeback competes for frames: that once deadlocked Sync and the
// flusher (fuzz/corpus/file_ops/hang-sync-vs-flusher-io-reserve).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "devices/memory_device.h"
#include "fuzz_check.h"
#include "stablecache/cache.h"

namespace {

using namespace stablecache;  // a fuzz target, not library code

constexpr uint64_t kPage = 4096;
constexpr uint64_t kDevice = 1 << 20;
constexpr uint64_t kMaxFile = 256 << 10;  // the ops stay well inside the device
constexpr size_t kMaxOps = 64;

enum class Op : uint8_t { kWrite, kRead, kTruncate, kSync, kSyncRange, kSize, kReopen, kMax = kReopen };

// An offset near a page boundary more often than not: that is where the
// partial-page, hole and extend logic lives.
uint64_t Offset(FuzzedDataProvider& in, uint64_t limit) {
  uint64_t page = in.ConsumeIntegralInRange<uint64_t>(0, limit / kPage);
  int64_t delta = in.ConsumeIntegralInRange<int64_t>(-3, 3);
  if (in.ConsumeBool()) delta = in.ConsumeIntegralInRange<int64_t>(0, kPage - 1);
  int64_t off = static_cast<int64_t>(page * kPage) + delta;
  return static_cast<uint64_t>(std::clamp<int64_t>(off, 0, static_cast<int64_t>(limit)));
}

const char* Name(const Status& st) { return st.message().c_str(); }

void ExpectReadMatches(File& f, const std::vector<std::byte>& model, uint64_t off, size_t len, const char* when) {
  std::vector<std::byte> buf(len, std::byte{0xee});
  auto n = f.Read(off, buf);
  FUZZ_CHECK(n.has_value(), "%s: Read(%llu, %zu) failed: %s", when, static_cast<unsigned long long>(off), len,
             n.error().message().c_str());
  const size_t want = off >= model.size() ? 0 : std::min<size_t>(len, model.size() - off);
  FUZZ_CHECK(*n == want, "%s: Read(%llu, %zu) returned %zu bytes, the model has %zu", when,
             static_cast<unsigned long long>(off), len, *n, want);
  for (size_t i = 0; i < want; i++)
    FUZZ_CHECK(buf[i] == model[off + i], "%s: Read(%llu, %zu): byte at %llu is 0x%02x, the model says 0x%02x", when,
               static_cast<unsigned long long>(off), len, static_cast<unsigned long long>(off + i),
               static_cast<unsigned>(buf[i]), static_cast<unsigned>(model[off + i]));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const auto policy = static_cast<StablePolicy>(in.ConsumeIntegralInRange<int>(0, 4));
  auto dev = MemoryDevice::Create(MemoryDeviceOptions{.size_bytes = kDevice});
  FUZZ_CHECK(dev.has_value(), "MemoryDevice::Create: %s", dev.error().message().c_str());
  CacheOptions co;
  co.capacity_bytes = 16 * kPage;
  co.io_reserve_frames = 4;
  co.max_bio_pages = 4;
  co.readahead_pages = 4;
  co.policy = policy;
  auto cache = Cache::Create(co);
  FUZZ_CHECK(cache.has_value(), "Cache::Create: %s", cache.error().message().c_str());
  std::unique_ptr<File> files[2];
  for (auto& f : files) {
    auto h = (*cache)->Open(*dev);
    FUZZ_CHECK(h.has_value(), "Open: %s", h.error().message().c_str());
    f = std::move(*h);
  }

  std::vector<std::byte> model;
  uint8_t stamp = 1;  // each write's bytes differ from the last one's
  for (size_t n = 0; n < kMaxOps && in.remaining_bytes() > 0; n++) {
    File& f = *files[in.ConsumeIntegralInRange<int>(0, 1)];
    switch (static_cast<Op>(in.ConsumeIntegralInRange<uint8_t>(0, static_cast<uint8_t>(Op::kMax)))) {
      case Op::kWrite: {
        uint64_t off = Offset(in, kMaxFile - 1);
        size_t len = in.ConsumeIntegralInRange<size_t>(1, std::min<uint64_t>(3 * kPage, kMaxFile - off));
        std::vector<std::byte> buf(len);
        for (size_t i = 0; i < len; i++) buf[i] = std::byte(static_cast<uint8_t>(stamp + i * 31 + (i >> 12)));
        stamp += 2;  // odd: never zero
        auto w = f.Write(off, buf);
        FUZZ_CHECK(w.has_value() && *w == len, "Write(%llu, %zu): %s", static_cast<unsigned long long>(off), len,
                   w ? "short" : w.error().message().c_str());
        if (model.size() < off + len) model.resize(off + len);
        std::memcpy(model.data() + off, buf.data(), len);
        break;
      }
      case Op::kRead: {
        uint64_t off = Offset(in, kMaxFile);
        size_t len = in.ConsumeIntegralInRange<size_t>(1, 3 * kPage);
        ExpectReadMatches(f, model, off, len, "during the ops");
        break;
      }
      case Op::kTruncate: {
        uint64_t to = Offset(in, kMaxFile);
        Status st = f.Truncate(to);
        FUZZ_CHECK(st.ok(), "Truncate(%llu): %s", static_cast<unsigned long long>(to), Name(st));
        model.resize(to);
        break;
      }
      case Op::kSync: {
        Status st = f.Sync();
        FUZZ_CHECK(st.ok(), "Sync: %s", Name(st));
        break;
      }
      case Op::kSyncRange: {
        uint64_t off = Offset(in, kMaxFile);
        uint64_t len = in.ConsumeIntegralInRange<uint64_t>(0, 8 * kPage);
        unsigned flags = in.ConsumeIntegralInRange<unsigned>(0, 7);
        Status st = f.SyncRange(off, len, flags);
        FUZZ_CHECK(st.ok(), "SyncRange(%llu, %llu, %u): %s", static_cast<unsigned long long>(off),
                   static_cast<unsigned long long>(len), flags, Name(st));
        break;
      }
      case Op::kSize: {
        auto s = f.Size();
        FUZZ_CHECK(s.has_value() && *s == model.size(), "Size() %llu, the model has %zu",
                   s ? static_cast<unsigned long long>(*s) : 0ull, model.size());
        break;
      }
      case Op::kReopen: {  // the other handle keeps the file open: same pages, same size
        std::unique_ptr<File>& h = &f == files[0].get() ? files[0] : files[1];
        Status st = h->Close();
        FUZZ_CHECK(st.ok(), "Close: %s", Name(st));
        auto again = (*cache)->Open(*dev);
        FUZZ_CHECK(again.has_value(), "reopen: %s", again.error().message().c_str());
        h = std::move(*again);
        break;
      }
    }
  }

  // Everything acknowledged by Sync is on the device: a fresh cache reads it.
  Status st = files[0]->Sync();
  FUZZ_CHECK(st.ok(), "final Sync: %s", Name(st));
  for (auto& f : files) {
    Status c = f->Close();
    FUZZ_CHECK(c.ok(), "Close: %s", Name(c));
  }
  auto fresh = Cache::Create(co);
  FUZZ_CHECK(fresh.has_value(), "Cache::Create: %s", fresh.error().message().c_str());
  auto reread = (*fresh)->Open(*dev, FileOptions{.initial_size = model.size()});
  FUZZ_CHECK(reread.has_value(), "Open in a fresh cache: %s", reread.error().message().c_str());
  for (uint64_t off = 0; off < model.size(); off += 4 * kPage)
    ExpectReadMatches(**reread, model, off, 4 * kPage, "in a fresh cache after Sync");
  Status c = (*reread)->Close();
  FUZZ_CHECK(c.ok(), "Close: %s", Name(c));
  return 0;
}
