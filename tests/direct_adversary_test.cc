// Adversarial tests of direct I/O (issue 11): callbacks that chain I/O,
// buffers that are mappings of the same file, the asynchronous queue's
// Reap, and errors from below. Races are forced with held writes; a hang
// aborts through the watchdog instead of blocking ctest.
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "devices/fault_device.h"
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
using Bytes = std::vector<std::byte>;

using testing::Watchdog;

using directtest::OpenOn;
using directtest::ReadAll;

// A direct read at or past EOF completes inline, inside SubmitDirect. Its
// callback chains the next I/O, as an asynchronous reader that found EOF
// would: a direct write that appends. That write extends the file, which
// takes the invalidate lock exclusive; SubmitDirect ran the read's
// completion while it still held that lock shared, so the thread waited for
// itself.
TEST(DirectAdversary, ACallbackOfAReadAtEofMayAppendWithADirectWrite) {
  Watchdog wd;
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto o = OpenOn(mem, 8192);
  AlignedBuf rbuf(4096), wbuf(4096);
  auto a = Pattern(4096, 5);
  std::memcpy(wbuf.data(), a.data(), a.size());
  std::promise<Result<size_t>> appended;
  Status st = o.file->SubmitDirect({DirectOp::kRead, 8192, {rbuf.span(4096)}}, [&](Result<size_t> r) {
    EXPECT_TRUE(r);
    EXPECT_EQ(*r, 0u);  // at EOF
    Status s = o.file->SubmitDirect({DirectOp::kWrite, 8192, {wbuf.span(4096)}},
                                    [&](Result<size_t> w) { appended.set_value(std::move(w)); });
    if (!s.ok()) appended.set_value(Err(s));
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto w = appended.get_future().get();
  ASSERT_TRUE(w) << w.error().ToString();
  EXPECT_EQ(*o.file->Size(), 12288u);
  EXPECT_EQ(ReadAll(*o.file, 8192, 4096), a);
}

// "Waits until at least `min_complete` completions are ready (fewer if less
// are in flight)": with one request in flight and nothing ready, Reap(2)
// must wait for that one, not return nothing while it is in flight.
TEST(DirectAdversary, ReapWaitsForWhatIsInFlightWhenFewerThanAsked) {
  Watchdog wd;
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20, .late_copy = true, .manual_release = true});
  testing::PreformatHeld(*mem, 65536);
  auto o = OpenOn(mem, 0);
  AlignedBuf buf(4096);
  DirectQueue q(*o.file, 4);
  ASSERT_TRUE(q.Submit({DirectOp::kWrite, 0, {buf.span(4096)}}, 7).ok());
  mem->WaitForPendingWrites(1);
  std::vector<DirectQueue::Completion> got;
  std::thread reaper([&] { got = q.Reap(2); });
  // Whether or not the reaper is waiting yet, it must come back with the
  // completion once the write is released.
  mem->ReleaseWrites();
  reaper.join();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].tag, 7u);
  EXPECT_TRUE(got[0].result);
  EXPECT_TRUE(q.Drain().ok());
}

// A direct write whose buffer is a mapping of the pages it writes (here, a
// page written onto itself, and a two-page move by one page). The bypass
// bio reads the caller's buffer while the write holds its range against
// page creation; the fault of the mapping needs a page in that range, so it
// waits for the write, which waits for the copy that faulted. Linux faults
// the buffer in before it takes its locks; so does stablecache now
// (PinMappedBuffers: each source page is faulted in and pinned before the
// write holds anything; one in the write's own range is then cached and
// goes through the cache).
TEST(DirectAdversary, ADirectWriteFromAMappingOfItsOwnRangeCompletes) {
  Watchdog wd(20);
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto old = Pattern(65536, 3);
  auto o = OpenOn(mem, 65536, /*mappable=*/true);
  mem->WriteRaw(0, old.data(), old.size());  // the file's bytes; nothing is cached yet
  auto map = o.file->Map(0, 65536, MapAccess::kRead);
  ASSERT_TRUE(map) << map.error().ToString();
  std::byte* base = (*map)->data();
  // Page 1 onto itself: nothing of it is cached, so it goes to the device.
  auto r = o.file->DirectWrite(4096, {base + 4096, 4096});
  ASSERT_TRUE(r) << r.error().ToString();
  // Pages 3..4 onto pages 2..3 (a move down by one page).
  r = o.file->DirectWrite(2 * 4096, {base + 3 * 4096, 2 * 4096});
  ASSERT_TRUE(r) << r.error().ToString();
  Bytes want(old.begin(), old.end());
  std::memcpy(want.data() + 2 * 4096, old.data() + 3 * 4096, 2 * 4096);
  EXPECT_EQ(ReadAll(*o.file, 0, 65536), want);
  ASSERT_TRUE((*map)->Unmap().ok());
}

// An I/O error below reaches the caller of a direct write and of a direct
// read, and leaves no in-flight count, range or handle operation behind:
// a shrinking Truncate (which waits for direct I/O in flight), an
// overlapping direct write (which waits for the range) and Close return.
TEST(DirectAdversary, ErrorsFromBelowReachTheCallerAndLeaveNothingHeld) {
  Watchdog wd;
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  auto o = OpenOn(fault, 65536);
  auto old = Pattern(65536, 1);
  mem->WriteRaw(0, old.data(), old.size());
  AlignedBuf buf(3 * 4096);
  std::memcpy(buf.data(), Pattern(3 * 4096, 2).data(), 3 * 4096);
  fault->AddRule({.op = BioOp::kWrite, .offset = 4 * 4096, .len = 3 * 4096});
  auto w = o.file->DirectWrite(4 * 4096, buf.span(3 * 4096));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), Code::kIoError) << w.error().ToString();
  fault->ClearRules();
  // Nothing reached the medium, and the cache does not claim the bytes.
  EXPECT_EQ(ReadAll(*o.file, 4 * 4096, 3 * 4096), Bytes(old.begin() + 4 * 4096, old.begin() + 7 * 4096));
  fault->AddRule({.op = BioOp::kRead, .offset = 13 * 4096, .len = 4096});
  auto r = o.file->DirectRead(12 * 4096, buf.span(3 * 4096));  // not cached: readahead stopped short of it
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Code::kIoError) << r.error().ToString();
  fault->ClearRules();
  ASSERT_TRUE(o.file->DirectWrite(4 * 4096, buf.span(3 * 4096)));  // the range was given back
  ASSERT_TRUE(o.file->Truncate(8 * 4096).ok());                    // the in-flight count too
  EXPECT_TRUE(o.file->Close().ok());
}

// A direct read whose buffer is a writable mapping of another part of the
// same file: the device's copy into it faults, and the fault needs the
// cache while the read is being submitted.
TEST(DirectAdversary, ADirectReadIntoAMappingOfTheSameFileCompletes) {
  Watchdog wd;
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto o = OpenOn(mem, 65536, /*mappable=*/true);
  auto old = Pattern(65536, 4);
  mem->WriteRaw(0, old.data(), old.size());
  auto map = o.file->Map(0, 65536, MapAccess::kReadWrite);
  ASSERT_TRUE(map) << map.error().ToString();
  std::byte* base = (*map)->data();
  auto r = o.file->DirectRead(0, {base + 8 * 4096, 2 * 4096});  // pages 0..1 onto pages 8..9
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(*r, 2u * 4096);
  Bytes want(old.begin(), old.end());
  std::memcpy(want.data() + 8 * 4096, old.data(), 2 * 4096);
  EXPECT_EQ(ReadAll(*o.file, 0, 65536), want);
  ASSERT_TRUE((*map)->Unmap().ok());
  ASSERT_TRUE(o.file->Sync().ok());
  Bytes medium(65536);
  mem->ReadRaw(0, medium.data(), medium.size());
  EXPECT_EQ(medium, want);
}

// A direct write past EOF that fails changed the file size anyway: the
// extension happens before the I/O and is not undone, so the file reads
// (and, after a Sync, stays) longer by zeros the caller never wrote. Linux
// (iomap) sets i_size at completion of an extending direct write, and
// truncates back on failure. Now an extending direct write runs under the
// invalidate lock held exclusive to its completion and undoes the
// extension if it failed.
TEST(DirectAdversary, AFailedDirectWritePastEofLeavesTheSizeAlone) {
  Watchdog wd;
  auto mem = *MemoryDevice::Create({.size_bytes = 8 << 20});
  auto fault = std::make_shared<FaultDevice>(mem);
  auto o = OpenOn(fault, 8192);
  AlignedBuf buf(4 * 4096);
  fault->AddRule({.op = BioOp::kWrite, .offset = 4 * 4096, .len = 4 * 4096});
  auto w = o.file->DirectWrite(4 * 4096, buf.span(4 * 4096));
  ASSERT_FALSE(w);
  fault->ClearRules();
  EXPECT_EQ(*o.file->Size(), 8192u);
}

}  // namespace
}  // namespace stablecache
