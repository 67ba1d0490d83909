// The logwrites layer: what it records, in which order, and that the bytes
// it records are the bytes the device below receives.
#include <cstring>

#include <gtest/gtest.h>

#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {

TEST(LogWritesDevice, RecordsWritesFlushesAndMarksInOrder) {
  auto mem = MemoryDevice::Create({.size_bytes = 1 << 20});
  ASSERT_TRUE(mem);
  LogWritesDevice log(*mem);
  auto a = testing::Pattern(8192, 1);
  ASSERT_TRUE(WriteSync(log, 4096, a.data(), 8192).ok());
  ASSERT_TRUE(FlushSync(log).ok());
  log.Mark("sync 1 acknowledged");
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(ReadSync(log, 4096, back.data(), 8192).ok());  // not logged

  auto entries = log.Snapshot();
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].kind, LogEntry::Kind::kWrite);
  EXPECT_EQ(entries[0].offset, 4096u);
  EXPECT_EQ(*entries[0].data, a);
  EXPECT_EQ(entries[0].submitted_at, 0u);
  EXPECT_TRUE(entries[0].status.ok());
  EXPECT_EQ(entries[1].kind, LogEntry::Kind::kFlush);
  EXPECT_EQ(entries[2].kind, LogEntry::Kind::kFlushDone);
  EXPECT_EQ(entries[2].flush_index, 1u);
  EXPECT_EQ(entries[3].kind, LogEntry::Kind::kMark);
  EXPECT_EQ(entries[3].label, "sync 1 acknowledged");
}

// A write still in flight when a flush is submitted is logged after the
// flush entry: the flush does not cover it, and submitted_at says it was in
// flight.
TEST(LogWritesDevice, AFlushCoversOnlyWritesCompletedBeforeIt) {
  auto mem = MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .manual_release = true});
  ASSERT_TRUE(mem);
  auto log = std::make_shared<LogWritesDevice>(*mem);
  std::vector<std::byte> page(4096, std::byte{7});
  std::atomic<bool> done{false};
  auto bio = Bio::Make(BioOp::kWrite, 0, Stability::kStable);
  bio->AddSegment(page.data(), 4096);
  bio->on_complete = [&](BioPtr, Status st) {
    EXPECT_TRUE(st.ok());
    done = true;
    done.notify_all();
  };
  log->Submit(std::move(bio));
  (*mem)->WaitForPendingWrites(1);
  ASSERT_TRUE(FlushSync(*log).ok());
  (*mem)->ReleaseWrites();
  done.wait(false);
  auto entries = log->Snapshot();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].kind, LogEntry::Kind::kFlush);
  EXPECT_EQ(entries[1].kind, LogEntry::Kind::kFlushDone);
  EXPECT_EQ(entries[2].kind, LogEntry::Kind::kWrite);
  EXPECT_EQ(entries[2].submitted_at, 0u);
}

// An unstable bio is bounced once here, so a caller scribbling on its
// buffer after Submit changes neither the log nor the medium.
TEST(LogWritesDevice, LogsExactlyTheBytesTheDeviceBelowReceives) {
  auto mem = MemoryDevice::Create({.size_bytes = 1 << 20, .late_copy = true, .manual_release = true});
  ASSERT_TRUE(mem);
  auto log = std::make_shared<LogWritesDevice>(*mem);
  std::vector<std::byte> page(4096, std::byte{1});
  std::atomic<bool> done{false};
  auto bio = Bio::Make(BioOp::kWrite, 8192, Stability::kUnstable);
  bio->AddSegment(page.data(), 4096);
  bio->fua = true;
  bio->on_complete = [&](BioPtr, Status) {
    done = true;
    done.notify_all();
  };
  log->Submit(std::move(bio));
  (*mem)->WaitForPendingWrites(1);
  std::memset(page.data(), 2, 4096);
  (*mem)->ReleaseWrites();
  done.wait(false);
  std::vector<std::byte> medium(4096);
  (*mem)->ReadRaw(8192, medium.data(), 4096);
  EXPECT_EQ(medium, std::vector<std::byte>(4096, std::byte{1}));
  auto entries = log->Snapshot();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(*entries[0].data, medium);
  EXPECT_TRUE(entries[0].fua);
  std::vector<LayerStats> stats;
  log->CollectStats(stats);
  EXPECT_EQ(stats[0].bytes_bounced, 4096u);
}

TEST(LogWritesDevice, BuiltFromAStackSpec) {
  auto stack = BuildStack("logwrites,memory:1M");
  ASSERT_TRUE(stack) << stack.error().ToString();
  auto log = std::dynamic_pointer_cast<LogWritesDevice>(*stack);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->Info().name, "logwrites");
  auto bad = BuildStack("logwrites(x=1),memory:1M");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("unknown option 'x'"), std::string::npos) << bad.error().message();
}

}  // namespace stablecache
