// Direct I/O through the File API (stablecache/direct.h): refused
// misalignment, coherency with cached and mapped pages, EOF and holes, the
// range a direct write holds against page creation, truncate and close
// against I/O in flight, and the asynchronous queue.
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "devices/file_device.h"
#include "devices/integrity_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/mapping.h"
#include "direct_test_util.h"
#include "held_writes.h"
#include "test_util.h"

namespace stablecache {
namespace {

using directtest::AlignedBuf;
using testing::Pattern;

using directtest::OpenOn;
using directtest::ReadAll;
using Opened = directtest::OpenedFile<MemoryDevice>;

Opened OpenMem(uint64_t size = 1 << 20, bool mappable = false) {
  return OpenOn(*MemoryDevice::Create({.size_bytes = 8 << 20}), size, mappable);
}

// A memory device that holds data writes until released, preformatted
// with a file of `size` whose bytes are `fill`.
Opened OpenHeld(uint64_t size, const std::vector<std::byte>& fill, bool mappable = false) {
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20, .late_copy = true, .manual_release = true});
  testing::PreformatHeld(*mem, size);
  mem->WriteRaw(0, fill.data(), fill.size());
  return OpenOn(std::move(mem), 0, mappable);
}

TEST(Direct, MisalignedCallsAreRefusedNamingWhatIsMisaligned) {
  Opened o = OpenMem();
  AlignedBuf buf(8192);
  auto expect_invalid = [](const Result<size_t>& r, const char* needle) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
  };
  expect_invalid(o.file->DirectRead(100, buf.span(512)), "offset 100 is not a multiple of the logical block size 512");
  expect_invalid(o.file->DirectWrite(0, buf.span(700)), "length 700 is not a multiple");
  expect_invalid(o.file->DirectRead(0, {buf.data() + 8, 512}), "is not aligned to the logical block size 512");
  // Vectored: the second buffer is named.
  DirectRequest req{DirectOp::kWrite, 0, {buf.span(512), {buf.data() + 1024, 100}}};
  expect_invalid(o.file->DirectIo(req), "buffer 1 length 100");
  // Past the file limit of the device.
  auto r = o.file->DirectWrite(8 << 20, buf.span(512));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Code::kNoSpace);
  // Nothing was written: the file is as it was.
  EXPECT_EQ(*o.file->Size(), 1u << 20);
  // A 4 KiB-block stack refuses 512-byte alignment.
  auto cache = *Cache::Create({});
  auto f = *cache->Open(*IntegrityDevice::Create(*MemoryDevice::Create({.size_bytes = 8 << 20}), {}),
                        {.initial_size = 1 << 20});
  expect_invalid(f->DirectRead(512, buf.span(4096)), "offset 512 is not a multiple of the logical block size 4096");
  expect_invalid(f->DirectWrite(0, buf.span(512)), "length 512 is not a multiple of the logical block size 4096");
  ASSERT_TRUE(f->Close().ok());
  // A closed file.
  ASSERT_TRUE(o.file->Close().ok());
  auto c = o.file->DirectRead(0, buf.span(512));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Code::kClosed);
}

TEST(Direct, AReadSeesABufferedWriteNotYetWrittenBack) {
  Opened o = OpenMem();
  auto a = Pattern(10000, 1);
  ASSERT_TRUE(o.file->Write(3000, a));
  AlignedBuf buf(16384);
  auto n = o.file->DirectRead(0, buf.span(16384));
  ASSERT_TRUE(n) << n.error().ToString();
  EXPECT_EQ(*n, 16384u);
  EXPECT_EQ(0, std::memcmp(buf.data() + 3000, a.data(), a.size()));
  EXPECT_EQ(buf.data()[2999], std::byte{0});
  // The device still has none of it: the bytes came from the cache.
  std::vector<std::byte> raw(10000);
  o.dev->ReadRaw(3000, raw.data(), raw.size());
  EXPECT_NE(raw, a);
}

TEST(Direct, AWriteOverCachedPagesUpdatesThemAndTheDevice) {
  Opened o = OpenMem();
  auto old = Pattern(65536, 1), now = Pattern(65536, 2);
  ASSERT_TRUE(o.file->Write(0, old));
  ASSERT_TRUE(o.file->Sync().ok());
  ASSERT_EQ(ReadAll(*o.file, 0, 65536), old);  // cached, clean
  AlignedBuf buf(65536);
  std::memcpy(buf.data(), now.data(), 65536);
  // 512-byte aligned, not page aligned: partial pages at both ends.
  ASSERT_TRUE(o.file->DirectWrite(512, buf.span(65536 - 1024)));
  auto expect = old;
  std::memcpy(expect.data() + 512, now.data(), 65536 - 1024);
  EXPECT_EQ(ReadAll(*o.file, 0, 65536), expect);
  std::vector<std::byte> dev(65536);
  ASSERT_TRUE(o.file->ReadBypassingCache(0, dev).ok());
  EXPECT_EQ(dev, expect);  // on the device when the call returned
  EXPECT_EQ(o.cache->Stats().dirty_pages, 0u);
}

TEST(Direct, AWriteToUncachedPagesBypassesTheCache) {
  Opened o = OpenMem();
  auto a = Pattern(1 << 20, 3);
  AlignedBuf buf(1 << 20);
  std::memcpy(buf.data(), a.data(), a.size());
  const uint64_t before = o.cache->Stats().cached_pages;
  ASSERT_TRUE(o.file->DirectWrite(0, buf.span(1 << 20)));
  EXPECT_EQ(o.cache->Stats().cached_pages, before);
  std::vector<std::byte> raw(1 << 20);
  o.dev->ReadRaw(0, raw.data(), raw.size());
  EXPECT_EQ(raw, a);
  EXPECT_EQ(ReadAll(*o.file, 0, 1 << 20), a);
}

TEST(Direct, AReadIsShortAtEofAndNeverReturnsBytesPastIt) {
  auto garbage = Pattern(16384, 9);
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  Opened o = OpenOn(mem, 0);
  auto a = Pattern(5000, 4);
  ASSERT_TRUE(o.file->Write(0, a));
  ASSERT_TRUE(o.file->Sync().ok());
  mem->WriteRaw(5000, garbage.data(), 16384 - 5000);  // stale bytes past EOF on the medium
  // A fresh cache: nothing cached, the read goes to the device.
  Opened fresh = OpenOn(mem, 0);
  AlignedBuf buf(16384);
  std::memset(buf.data(), 0xAB, 16384);
  auto n = fresh.file->DirectRead(0, buf.span(16384));
  ASSERT_TRUE(n) << n.error().ToString();
  EXPECT_EQ(*n, 5000u);
  EXPECT_EQ(0, std::memcmp(buf.data(), a.data(), 5000));
  for (size_t i = 5000; i < 5120; i++) ASSERT_EQ(buf.data()[i], std::byte{0}) << i;  // the rest of its block
  auto past = fresh.file->DirectRead(8192, buf.span(512));
  ASSERT_TRUE(past);
  EXPECT_EQ(*past, 0u);
}

TEST(Direct, HolesReadAsZerosAndAPartialWriteOfOneZeroesTheRest) {
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto garbage = Pattern(1 << 20, 5);
  mem->WriteRaw(0, garbage.data(), garbage.size());  // a reused device: old bytes everywhere
  {
    Opened o = OpenOn(mem, 0);  // blank record: an empty file
    AlignedBuf buf(1024);
    auto a = Pattern(1024, 6);
    std::memcpy(buf.data(), a.data(), 1024);
    ASSERT_TRUE(o.file->DirectWrite(3 * 4096 + 512, buf.span(1024)));
    EXPECT_EQ(*o.file->Size(), 3u * 4096 + 1536);
    std::vector<std::byte> expect(3 * 4096 + 1536);
    std::memcpy(expect.data() + 3 * 4096 + 512, a.data(), 1024);
    EXPECT_EQ(ReadAll(*o.file, 0, expect.size()), expect);
    AlignedBuf back(4 * 4096);
    auto n = o.file->DirectRead(0, back.span(4 * 4096));
    ASSERT_TRUE(n);
    ASSERT_EQ(*n, expect.size());
    EXPECT_EQ(0, std::memcmp(back.data(), expect.data(), expect.size()));
    ASSERT_TRUE(o.file->Close().ok());
  }
  Opened again = OpenOn(mem, 0);
  ASSERT_EQ(*again.file->Size(), 3u * 4096 + 1536);
  std::vector<std::byte> expect(3 * 4096 + 1536);
  std::memcpy(expect.data() + 3 * 4096 + 512, Pattern(1024, 6).data(), 1024);
  EXPECT_EQ(ReadAll(*again.file, 0, expect.size()), expect);
}

// Whole pages a direct write puts past EOF bypass the cache; they are file
// data from then on, not holes a Sync would write zeros over.
TEST(Direct, WholePagesWrittenPastEofAreFileDataAfterSync) {
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto a = Pattern(8 * 4096, 7);
  {
    Opened o = OpenOn(mem, 4096);
    AlignedBuf buf(a.size());
    std::memcpy(buf.data(), a.data(), a.size());
    ASSERT_TRUE(o.file->DirectWrite(4 * 4096, buf.span(a.size())));
    ASSERT_TRUE(o.file->Sync().ok());
    EXPECT_EQ(ReadAll(*o.file, 4 * 4096, a.size()), a);
    ASSERT_TRUE(o.file->Close().ok());
  }
  Opened again = OpenOn(mem, 0);
  EXPECT_EQ(*again.file->Size(), 12u * 4096);
  EXPECT_EQ(ReadAll(*again.file, 4 * 4096, a.size()), a);
  EXPECT_EQ(ReadAll(*again.file, 4096, 3 * 4096), std::vector<std::byte>(3 * 4096));  // the gap: zeros
}

// While a direct write is in flight over pages the cache does not hold, a
// buffered read must not fill a page from the device's old bytes: it would
// return them now, and keep hiding the new ones after the write lands.
TEST(Direct, ABufferedReadWaitsForADirectWriteInFlight) {
  auto old = Pattern(65536, 1), now = Pattern(4096, 2);
  Opened o = OpenHeld(65536, old);
  AlignedBuf buf(4096);
  std::memcpy(buf.data(), now.data(), 4096);
  std::promise<Result<size_t>> done;
  ASSERT_TRUE(o.file->SubmitDirect({DirectOp::kWrite, 8192, {buf.span(4096)}},
                                   [&](Result<size_t> r) { done.set_value(std::move(r)); })
                  .ok());
  o.dev->WaitForPendingWrites(1);
  std::atomic<bool> read_done{false};
  std::vector<std::byte> seen(4096);
  std::thread reader([&] {
    // Readahead from page 0 covers page 2 too; reading page 2 itself must wait.
    (void)o.file->Read(0, seen);
    (void)o.file->Read(8192, seen);
    read_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // room for a wrong early return
  EXPECT_FALSE(read_done.load());
  o.dev->ReleaseWrites();
  ASSERT_TRUE(done.get_future().get());
  reader.join();
  EXPECT_EQ(seen, now);
  EXPECT_EQ(ReadAll(*o.file, 8192, 4096), now);  // and no stale page was left behind
}

TEST(Direct, AMappedLoadWaitsForADirectWriteInFlight) {
  auto old = Pattern(65536, 1), now = Pattern(4096, 2);
  Opened o = OpenHeld(65536, old, /*mappable=*/true);
  auto map = o.file->Map(0, 65536, MapAccess::kRead);
  ASSERT_TRUE(map) << map.error().ToString();
  AlignedBuf buf(4096);
  std::memcpy(buf.data(), now.data(), 4096);
  std::promise<Result<size_t>> done;
  ASSERT_TRUE(o.file->SubmitDirect({DirectOp::kWrite, 4096, {buf.span(4096)}},
                                   [&](Result<size_t> r) { done.set_value(std::move(r)); })
                  .ok());
  o.dev->WaitForPendingWrites(1);
  std::vector<std::byte> seen(4096);
  std::thread reader([&] { std::memcpy(seen.data(), (*map)->data() + 4096, 4096); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  o.dev->ReleaseWrites();
  ASSERT_TRUE(done.get_future().get());
  reader.join();
  EXPECT_EQ(seen, now);
  ASSERT_TRUE((*map)->Unmap().ok());
}

TEST(Direct, TruncateWaitsForDirectIoInFlight) {
  auto old = Pattern(65536, 1);
  Opened o = OpenHeld(65536, old);
  AlignedBuf buf(4096);
  std::memcpy(buf.data(), Pattern(4096, 2).data(), 4096);
  std::atomic<bool> write_done{false}, truncated{false};
  ASSERT_TRUE(o.file->SubmitDirect({DirectOp::kWrite, 32768, {buf.span(4096)}},
                                   [&](Result<size_t> r) {
                                     EXPECT_TRUE(r);
                                     write_done = true;
                                   })
                  .ok());
  o.dev->WaitForPendingWrites(1);
  std::thread t([&] {
    EXPECT_TRUE(o.file->Truncate(4096).ok());
    EXPECT_EQ(o.dev->PendingWrites(), 0u);  // the write's I/O ended first
    truncated = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(truncated.load());
  o.dev->ReleaseWrites();
  t.join();
  while (!write_done.load()) std::this_thread::yield();  // its callback may still be running
  EXPECT_EQ(*o.file->Size(), 4096u);
  ASSERT_TRUE(o.file->Truncate(65536).ok());
  EXPECT_EQ(ReadAll(*o.file, 32768, 4096), std::vector<std::byte>(4096));  // truncated away: zeros
}

TEST(Direct, CloseWaitsForAsynchronousDirectIo) {
  Opened o = OpenHeld(65536, Pattern(65536, 1));
  AlignedBuf buf(4096);
  std::atomic<bool> completed{false};
  ASSERT_TRUE(o.file->SubmitDirect({DirectOp::kWrite, 0, {buf.span(4096)}},
                                   [&](Result<size_t>) { completed = true; })
                  .ok());
  o.dev->WaitForPendingWrites(1);
  std::thread closer([&] {
    EXPECT_TRUE(o.file->Close().ok());
    EXPECT_TRUE(completed.load());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  o.dev->ReleaseWrites();
  closer.join();
}

TEST(Direct, AQueueKeepsItsDepthAndReportsEveryCompletion) {
  Opened o = OpenMem(4 << 20);
  constexpr int kOps = 512;
  AlignedBuf buf(uint64_t{kOps} * 4096);
  for (int i = 0; i < kOps; i++) std::memcpy(buf.data() + i * 4096, Pattern(4096, 100 + i).data(), 4096);
  DirectQueue q(*o.file, 16);
  std::vector<int> seen(kOps, 0);
  int reaped = 0;
  for (int i = 0; i < kOps; i++) {
    // Block i goes to file block (i * 37) % 1024: scattered, no overlaps.
    ASSERT_TRUE(q.Submit({DirectOp::kWrite, uint64_t(i * 37 % 1024) * 4096, {{buf.data() + i * 4096, 4096}}}, i).ok());
    EXPECT_LE(q.InFlight(), 16u);
    for (auto& c : q.Reap(0)) {
      ASSERT_TRUE(c.result);
      seen[c.tag]++;
      reaped++;
    }
  }
  while (reaped < kOps) {
    for (auto& c : q.Reap(1)) {
      ASSERT_TRUE(c.result);
      seen[c.tag]++;
      reaped++;
    }
  }
  for (int i = 0; i < kOps; i++) EXPECT_EQ(seen[i], 1) << i;
  for (int i = 0; i < kOps; i++)
    ASSERT_EQ(ReadAll(*o.file, uint64_t(i * 37 % 1024) * 4096, 4096), Pattern(4096, 100 + i)) << i;
}

// A direct read into a mapping of another file of the same cache: the
// mapped pages are pinned for the read and dirty after it, so the bytes the
// device stored reach the mapped file's medium at its Sync. With the io_uring
// file leaf the kernel stores through its own pin of the pages (no fault the
// cache could see); over a memory leaf, plain stores.
void ReadIntoAMappingOfTheSameCache(std::shared_ptr<BlockDevice> source_dev) {
  auto cache = *Cache::Create({.capacity_bytes = 4 << 20, .writeback_interval_ms = 600000});
  auto target_mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto data = Pattern(256 << 10, 11);
  auto source = *cache->Open(source_dev, {.initial_size = 1 << 20});
  ASSERT_TRUE(source->Write(0, data));
  ASSERT_TRUE(source->Sync().ok());
  ASSERT_TRUE(source->Close().ok());  // nothing of it cached: the read goes to the device
  source = *cache->Open(source_dev);
  auto target = *cache->Open(target_mem, {.initial_size = 1 << 20, .mappable = true});
  auto map = target->Map(0, 1 << 20, MapAccess::kReadWrite);
  ASSERT_TRUE(map) << map.error().ToString();
  // Half the target pages are cached and clean, half not yet faulted in.
  std::vector<std::byte> sink(128 << 10);
  ASSERT_TRUE(target->Read(0, sink));
  auto n = source->DirectRead(0, {(*map)->data() + 4096, data.size()});
  ASSERT_TRUE(n) << n.error().ToString();
  ASSERT_EQ(*n, data.size());
  EXPECT_EQ(0, std::memcmp((*map)->data() + 4096, data.data(), data.size()));
  EXPECT_GE(cache->Stats().dirty_pages, data.size() / 4096);
  ASSERT_TRUE((*map)->Unmap().ok());
  ASSERT_TRUE(target->Close().ok());
  ASSERT_TRUE(source->Close().ok());
  // On the target's medium, as a fresh cache reads it.
  auto fresh = *Cache::Create({});
  auto again = *fresh->Open(target_mem);
  std::vector<std::byte> got(data.size());
  ASSERT_TRUE(again->Read(4096, got));
  EXPECT_TRUE(got == data);
}

TEST(DirectPins, AReadIntoAMappingOfTheSameCacheDirtiesItsPages) {
  ReadIntoAMappingOfTheSameCache(*MemoryDevice::Create({.size_bytes = 8 << 20}));
}

TEST(DirectPins, AKernelReadIntoAMappingOfTheSameCacheDirtiesItsPages) {
  testing::TempFile tmp("pins");
  auto dev = FileDevice::Open({.path = tmp.path(), .size_bytes = 8 << 20, .create = true, .direct = DirectMode::kOn});
  if (!dev) GTEST_SKIP() << "no O_DIRECT file device here: " << dev.error().ToString();
  ReadIntoAMappingOfTheSameCache(*dev);
}

TEST(DirectPins, AReadIntoAReadOnlyMappingOrPastItsEndIsRefused) {
  auto cache = *Cache::Create({.capacity_bytes = 4 << 20});
  auto source = *cache->Open(*MemoryDevice::Create({.size_bytes = 8 << 20}), {.initial_size = 1 << 20});
  auto target = *cache->Open(*MemoryDevice::Create({.size_bytes = 8 << 20}), {.initial_size = 64 << 10, .mappable = true});
  auto ro = *target->Map(0, 64 << 10, MapAccess::kRead);
  auto r = source->DirectRead(0, {ro->data(), 4096});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  EXPECT_NE(r.error().message().find("read-only mapping"), std::string::npos) << r.error().message();
  auto rw = *target->Map(0, 128 << 10, MapAccess::kReadWrite);
  r = source->DirectRead(0, {rw->data() + (64 << 10), 4096});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("past its end"), std::string::npos) << r.error().message();
  EXPECT_TRUE(source->DirectRead(0, {rw->data(), 4096}));
  ASSERT_TRUE(ro->Unmap().ok());
  ASSERT_TRUE(rw->Unmap().ok());
}

}  // namespace
}  // namespace stablecache
