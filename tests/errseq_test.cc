// Writeback errors reach every File handle once (issue 8, item 4), ported
// from fstests:
//  - generic/441 (src/fsync-err.c, Jeff Layton): several fds on one file,
//    write and fsync on each, make the device fail, write and fsync on each
//    again (every fsync fails), heal, and new opens see no error.
//  - generic/487: an error that happened before an open, and that no fd
//    has seen yet, is reported to the fd opened after it.
// Here a handle is a File from Cache::Open on the same device (they share
// the pages), dm-error is a fault layer, and "sync" without scraping errors
// is SyncRange(kSyncWrite) followed by SyncRange(kSyncWaitBefore).
//
// One deliberate difference from Linux: a page whose writeback failed stays
// dirty and is written again by the next Sync (the PostgreSQL fsync
// lesson), so while the device is still failing every Sync fails anew.
// fsync-err's non-simple checks (a third fsync with the device still
// failing returns 0) therefore do not apply; its -s mode is ported, and the
// exact-once property is tested with a fault that fires once.
#include <cstdlib>

#include <gtest/gtest.h>

#include "devices/fault_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;
using Bytes = std::vector<std::byte>;

constexpr size_t kBufSize = 65 * 1024;  // fsync-err's default: not page aligned
constexpr int kHandles = 10;            // fsync-err's default number of fds


struct Fixture {
  std::shared_ptr<MemoryDevice> mem = *MemoryDevice::Create({.size_bytes = 4 << 20});
  std::shared_ptr<FaultDevice> fault = std::make_shared<FaultDevice>(mem);
  std::shared_ptr<Cache> cache = *Cache::Create({.capacity_bytes = 2 << 20, .writeback_interval_ms = 3600 * 1000});
  std::vector<std::unique_ptr<File>> handles;
  Bytes buf = Pattern(kBufSize, 0x7c);

  void OpenAll(int n) {
    for (int i = 0; i < n; i++) {
      auto f = cache->Open(fault);
      ASSERT_TRUE(f) << f.error().ToString();
      handles.push_back(std::move(*f));
    }
  }
  // Each handle writes its own stretch, like fsync-err's pwrite(fd[i], ..., i * bufsize).
  void WriteEach() {
    for (size_t i = 0; i < handles.size(); i++) {
      auto r = handles[i]->Write(i * kBufSize, buf);
      ASSERT_TRUE(r) << "write on handle " << i << ": " << r.error().ToString();
    }
  }
  // The device holds what every handle wrote (read through a fresh cache).
  void ExpectOnDevice() {
    auto fresh = *Cache::Create({.capacity_bytes = 2 << 20});
    auto f = fresh->Open(fault, {.initial_size = handles.size() * kBufSize});
    ASSERT_TRUE(f);
    Bytes got(handles.size() * kBufSize);
    auto n = (*f)->Read(0, got);
    ASSERT_TRUE(n) << n.error().ToString();
    for (size_t i = 0; i < handles.size(); i++)
      EXPECT_TRUE(std::equal(buf.begin(), buf.end(), got.begin() + i * kBufSize)) << "stretch of handle " << i;
  }
};

// generic/441, fsync-err -s.
TEST(Errseq, Generic441EveryHandleSeesTheWritebackError) {
  Fixture fx;
  fx.OpenAll(kHandles);
  fx.WriteEach();
  for (int i = 0; i < kHandles; i++) EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "first sync on handle " << i;

  fx.fault->AddRule({.count = -1});  // load_error_table: every bio fails
  fx.WriteEach();
  for (int i = 0; i < kHandles; i++) {
    Status st = fx.handles[i]->Sync();
    EXPECT_EQ(st.code(), Code::kIoError) << "second sync on handle " << i << " succeeded: " << st.ToString();
  }

  fx.fault->ClearRules();  // load_working_table
  // Each handle may be told once more (later handles' retries failed after
  // its own Sync), never twice; then every Sync is clean.
  for (int i = 0; i < kHandles; i++) (void)fx.handles[i]->Sync();
  for (int i = 0; i < kHandles; i++) EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "sync after healing, handle " << i;

  // Reopen each handle in turn (the file stays cached through the others):
  // a new open must not see an error that was already reported.
  for (int i = 0; i < kHandles; i++) {
    EXPECT_TRUE(fx.handles[i]->Close().ok()) << "close of handle " << i;
    auto f = fx.cache->Open(fx.fault);
    ASSERT_TRUE(f);
    fx.handles[i] = std::move(*f);
    EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "first sync after reopen of handle " << i;
  }
  fx.ExpectOnDevice();
}

// The exact-once form: one failed write bio, seen by every handle once.
TEST(Errseq, OneWritebackErrorIsReportedToEveryHandleExactlyOnce) {
  Fixture fx;
  fx.OpenAll(kHandles);
  fx.WriteEach();
  fx.fault->AddRule({.op = BioOp::kWrite, .count = 1});
  for (int i = 0; i < kHandles; i++) {
    Status st = fx.handles[i]->Sync();
    EXPECT_EQ(st.code(), Code::kIoError) << "handle " << i << " was not told: " << st.ToString();
  }
  EXPECT_EQ(fx.fault->injected(), 1u);
  for (int i = 0; i < kHandles; i++) EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "handle " << i << " told twice";
  fx.ExpectOnDevice();
}

// The error happens in background writeback, before anyone syncs: every
// handle, including one opened after the error, reports it once.
TEST(Errseq, ABackgroundWritebackErrorReachesEveryHandleOnce) {
  Fixture fx;
  fx.OpenAll(3);
  fx.WriteEach();
  fx.fault->AddRule({.op = BioOp::kWrite, .count = 1});
  ASSERT_TRUE(fx.handles[0]->SyncRange(0, 0, kSyncWrite).ok());         // starts writeback
  ASSERT_TRUE(fx.handles[0]->SyncRange(0, 0, kSyncWaitBefore).ok());    // waits; scrapes no error
  EXPECT_EQ(fx.fault->injected(), 1u);
  fx.OpenAll(1);  // opened after the error, which nobody has seen
  for (size_t i = 0; i < fx.handles.size(); i++) {
    EXPECT_EQ(fx.handles[i]->Sync().code(), Code::kIoError) << "handle " << i;
    EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "handle " << i << " told twice";
  }
  fx.handles.pop_back();
  fx.ExpectOnDevice();
}

// generic/487: a handle held open, data synced; the device fails, the
// data is rewritten and written back by a sync that scrapes no error; the
// device heals; a handle opened now must see the error.
TEST(Errseq, Generic487AnOpenAfterTheErrorSeesIt) {
  Fixture fx;
  fx.OpenAll(1);  // fd 5, held open
  const Bytes data = Pattern(65536, 487);
  ASSERT_TRUE(fx.handles[0]->Write(0, data));
  ASSERT_TRUE(fx.handles[0]->Sync().ok());

  fx.fault->AddRule({.count = -1});  // load_error_table
  ASSERT_TRUE(fx.handles[0]->Write(0, data));
  ASSERT_TRUE(fx.handles[0]->SyncRange(0, 0, kSyncWrite).ok());
  ASSERT_TRUE(fx.handles[0]->SyncRange(0, 0, kSyncWaitBefore).ok());
  EXPECT_GT(fx.fault->injected(), 0u);
  fx.fault->ClearRules();  // load_working_table

  auto late = fx.cache->Open(fx.fault);
  ASSERT_TRUE(late);
  EXPECT_EQ((*late)->Sync().code(), Code::kIoError) << "the fsync after reopen should fail with EIO";
  EXPECT_TRUE((*late)->Sync().ok());
  // fd 5 never saw it either.
  EXPECT_EQ(fx.handles[0]->Sync().code(), Code::kIoError);
  EXPECT_TRUE(fx.handles[0]->Sync().ok());
}

// A failed device flush is a writeback error too: the flush that failed
// covered every handle's data, so every handle's Sync reports it once.
// Defect 7: today only the Sync that issued the flush is told.
TEST(Errseq, AFailedFlushIsReportedToEveryHandleExactlyOnce) {
  Fixture fx;
  fx.OpenAll(kHandles);
  fx.WriteEach();
  fx.fault->AddRule({.op = BioOp::kFlush, .count = 1});
  for (int i = 0; i < kHandles; i++) {
    Status st = fx.handles[i]->Sync();
    EXPECT_EQ(st.code(), Code::kIoError) << "handle " << i << " was not told of the failed flush: " << st.ToString();
  }
  EXPECT_EQ(fx.fault->injected(), 1u);
  for (int i = 0; i < kHandles; i++) EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "handle " << i << " told twice";
  fx.ExpectOnDevice();
}

// The same with the flush failing forever while the handles sync, then
// healed: each handle fails while broken and is clean after at most one
// more report.
TEST(Errseq, FlushesFailingUntilHealed) {
  Fixture fx;
  fx.OpenAll(4);
  fx.WriteEach();
  fx.fault->AddRule({.op = BioOp::kFlush, .count = -1});
  for (size_t i = 0; i < fx.handles.size(); i++)
    EXPECT_EQ(fx.handles[i]->Sync().code(), Code::kIoError) << "handle " << i;
  fx.fault->ClearRules();
  for (size_t i = 0; i < fx.handles.size(); i++) (void)fx.handles[i]->Sync();
  for (size_t i = 0; i < fx.handles.size(); i++) EXPECT_TRUE(fx.handles[i]->Sync().ok()) << "handle " << i;
  fx.ExpectOnDevice();
}

}  // namespace
}  // namespace stablecache
