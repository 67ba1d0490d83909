// The File's size on the medium (issue 9): the "SCFILE01" record in the last
// two 4 KiB blocks of the device (doc/file_format.md). Reopens recover it,
// a Sync makes it durable after the data it covers, a conflicting
// initial_size or a medium that is not a file is refused with an error that
// says what is there, and a torn or failed record write loses nothing a
// Sync acknowledged.
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "block/metadata_record.h"
#include "crash/crash_replayer.h"
#include "devices/fault_device.h"
#include "devices/logwrites_device.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "stablecache/stack.h"
#include "test_util.h"

namespace stablecache {
namespace {

using testing::Pattern;
using testing::TempFile;

constexpr uint64_t kDev = 1 << 20;
// The two record slots at the end of a kDev device, and what the File may
// use: everything before them.
constexpr uint64_t kSlotA = kDev - 8192;
constexpr uint64_t kLimit = kSlotA;

std::shared_ptr<Cache> NewCache() {
  return *Cache::Create({.capacity_bytes = 1 << 20, .io_reserve_frames = 16});
}

std::shared_ptr<MemoryDevice> NewMemory(uint64_t size = kDev) { return *MemoryDevice::Create({.size_bytes = size}); }

std::vector<std::byte> ReadAll(File& f) {
  std::vector<std::byte> out(*f.Size());
  EXPECT_EQ(*f.Read(0, out), out.size());
  return out;
}

std::vector<std::byte> Raw(MemoryDevice& m, uint64_t off, size_t len) {
  std::vector<std::byte> v(len);
  m.ReadRaw(off, v.data(), len);
  return v;
}

TEST(FileSize, ReopenAfterCloseRecoversTheSize) {
  auto mem = NewMemory();
  const auto data = Pattern(10000, 1);
  {
    auto cache = NewCache();
    auto f = cache->Open(mem);
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(*(*f)->Size(), 0u);  // blank device, initial_size 0: an empty file
    ASSERT_TRUE((*f)->Write(0, data));
    ASSERT_TRUE((*f)->Close().ok());
  }
  auto cache = NewCache();
  auto f = cache->Open(mem);  // 0: whatever is there
  ASSERT_TRUE(f) << f.error().ToString();
  EXPECT_EQ(*(*f)->Size(), data.size());
  EXPECT_EQ(ReadAll(**f), data);
  ASSERT_TRUE((*f)->Close().ok());
  // The size it holds is also a valid initial_size.
  auto g = NewCache()->Open(mem, {.initial_size = data.size()});
  ASSERT_TRUE(g) << g.error().ToString();
  EXPECT_EQ(*(*g)->Size(), data.size());
}

TEST(FileSize, TheHandleDestructorPersistsTheSizeToo) {
  auto mem = NewMemory();
  {
    auto cache = NewCache();
    auto f = std::move(*cache->Open(mem));
    ASSERT_TRUE(f->Write(0, Pattern(5000, 2)));
  }  // dropped without Close
  auto f = NewCache()->Open(mem);
  ASSERT_TRUE(f) << f.error().ToString();
  EXPECT_EQ(*(*f)->Size(), 5000u);
}

TEST(FileSize, ReopenThroughBuildStackRecoversTheSize) {
  TempFile tmp("filesize");
  const std::string spec = fmt::format("file:{}(size=1M)", tmp.path());
  const auto data = Pattern(3 * 4096 + 77, 3);
  {
    auto dev = BuildStack(spec);
    ASSERT_TRUE(dev) << dev.error().ToString();
    auto f = NewCache()->Open(*dev, {.initial_size = 4096});
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(*(*f)->Size(), 4096u);
    ASSERT_TRUE((*f)->Write(100, data));
    ASSERT_TRUE((*f)->Close().ok());
  }
  auto dev = BuildStack(spec);
  ASSERT_TRUE(dev) << dev.error().ToString();
  auto f = NewCache()->Open(*dev);
  ASSERT_TRUE(f) << f.error().ToString();
  ASSERT_EQ(*(*f)->Size(), 100 + data.size());
  auto back = ReadAll(**f);
  EXPECT_EQ(std::vector<std::byte>(back.begin() + 100, back.end()), data);
  EXPECT_EQ(std::vector<std::byte>(back.begin(), back.begin() + 100), std::vector<std::byte>(100));
}

// Issue 9: "growing a device either moves what must move or fails
// clearly". The record sits at the end of the device; a device that grew
// (a file leaf reopened with a larger size=) has a blank end, and formatting
// it would hide the file (size 0) over its data. Open finds the old record
// below the blank end and refuses, naming both sizes; nothing is written.
TEST(FileSize, ADeviceThatGrewIsRefusedNotFormattedOver) {
  TempFile tmp("filesize-grow");
  const auto data = Pattern(3 * 4096, 8);
  {
    auto dev = BuildStack(fmt::format("file:{}(size=1M)", tmp.path()));
    ASSERT_TRUE(dev) << dev.error().ToString();
    auto f = NewCache()->Open(*dev);
    ASSERT_TRUE(f) << f.error().ToString();
    ASSERT_TRUE((*f)->Write(0, data));
    ASSERT_TRUE((*f)->Close().ok());
  }
  auto dev = BuildStack(fmt::format("file:{}(size=3M)", tmp.path()));
  ASSERT_TRUE(dev) << dev.error().ToString();
  auto f = NewCache()->Open(*dev);
  ASSERT_FALSE(f) << "a grown device was formatted as a new, empty file over the old one";
  EXPECT_NE(f.error().message().find("1048576"), std::string::npos) << f.error().ToString();
  EXPECT_NE(f.error().message().find("grew"), std::string::npos) << f.error().ToString();
  // Nothing was written: back at its old size the file is intact.
  auto again = BuildStack(fmt::format("file:{}(size=1M)", tmp.path()));
  ASSERT_TRUE(again) << again.error().ToString();
  auto g = NewCache()->Open(*again);
  ASSERT_TRUE(g) << g.error().ToString();
  EXPECT_EQ(ReadAll(**g), data);
}

// The same on a memory device holding a grown image, and a device that is
// blank all the way down still formats.
TEST(FileSize, AGrownImageIsRefusedAndABlankOneFormatted) {
  auto small = NewMemory();
  {
    auto f = NewCache()->Open(small, {.initial_size = 5000});
    ASSERT_TRUE(f) << f.error().ToString();
    ASSERT_TRUE((*f)->Close().ok());
  }
  auto big = NewMemory(4 * kDev);
  big->WriteRaw(0, Raw(*small, 0, kDev).data(), kDev);
  auto f = NewCache()->Open(big);
  ASSERT_FALSE(f) << "formatted over a grown image";
  EXPECT_NE(f.error().message().find("grew"), std::string::npos) << f.error().ToString();
  EXPECT_EQ(DecodeRecord(Raw(*big, 4 * kDev - 4096, 4096), "SCFILE01").state, RecordState::kBlank)
      << "the refused Open wrote a record";
  EXPECT_TRUE(NewCache()->Open(NewMemory(4 * kDev))) << "a blank device must still format";
}

TEST(FileSize, ABlankDeviceIsFormattedBeforeOpenReturns) {
  auto mem = NewMemory();
  auto f = NewCache()->Open(mem, {.initial_size = 12345});
  ASSERT_TRUE(f) << f.error().ToString();
  // Generation 1 sits in slot B (generation % 2), on the medium already.
  DecodedRecord b = DecodeRecord(Raw(*mem, kSlotA + 4096, 4096), "SCFILE01");
  ASSERT_EQ(b.state, RecordState::kValid) << DescribeRecord(b);
  EXPECT_EQ(b.record.generation, 1u);
  EXPECT_EQ(b.record.version, 1u);
  EXPECT_EQ(b.record.Get<uint64_t>(0), 12345u);  // file size
  EXPECT_EQ(b.record.Get<uint64_t>(8), kDev);    // device size
  EXPECT_FALSE(b.record.uuid.nil());
  EXPECT_EQ(DecodeRecord(Raw(*mem, kSlotA, 4096), "SCFILE01").state, RecordState::kBlank);
}

TEST(FileSize, TheRecordBlocksAreNotFileSpace) {
  auto mem = NewMemory();
  auto f = std::move(*NewCache()->Open(mem));
  const auto page = Pattern(4096, 4);
  ASSERT_TRUE(f->Write(kLimit - 4096, page));  // the last page the file may use
  auto w = f->Write(kLimit - 10, page);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code(), Code::kNoSpace);
  EXPECT_NE(w.error().message().find(std::to_string(kLimit)), std::string::npos) << w.error().ToString();
  Status t = f->Truncate(kLimit + 1);
  EXPECT_EQ(t.code(), Code::kOutOfRange);
  EXPECT_NE(t.message().find(std::to_string(kLimit)), std::string::npos) << t.ToString();
  ASSERT_TRUE(f->Truncate(kLimit).ok());
  ASSERT_TRUE(f->Close().ok());
  auto too_big = NewCache()->Open(NewMemory(), {.initial_size = kDev});
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code(), Code::kOutOfRange);
  EXPECT_NE(too_big.error().message().find(std::to_string(kLimit)), std::string::npos) << too_big.error().ToString();
}

TEST(FileSize, ConflictingInitialSizeOnReopenFailsClearly) {
  auto mem = NewMemory();
  {
    auto f = std::move(*NewCache()->Open(mem));
    ASSERT_TRUE(f->Write(0, Pattern(6000, 5)));
    ASSERT_TRUE(f->Close().ok());
  }
  auto r = NewCache()->Open(mem, {.initial_size = 8192});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  const std::string& m = r.error().message();
  EXPECT_NE(m.find("holds a file of 6000 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("initial_size 8192 disagrees"), std::string::npos) << m;
  EXPECT_NE(m.find("pass 0"), std::string::npos) << m;
  // Nothing was changed by the refusal.
  auto again = NewCache()->Open(mem);
  ASSERT_TRUE(again);
  EXPECT_EQ(*(*again)->Size(), 6000u);
}

TEST(FileSize, SecondOpenOfAnOpenDeviceWithAnotherSizeFailsClearly) {
  auto mem = NewMemory();
  auto cache = NewCache();
  auto f = std::move(*cache->Open(mem, {.initial_size = 4096}));
  ASSERT_TRUE(f->Write(4096, Pattern(100, 6)));  // now 4196 bytes, in memory only
  auto g = cache->Open(mem, {.initial_size = 4096});
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), Code::kInvalidArgument);
  EXPECT_NE(g.error().message().find("holds a file of 4196 bytes"), std::string::npos) << g.error().ToString();
  EXPECT_NE(g.error().message().find("initial_size 4096 disagrees"), std::string::npos) << g.error().ToString();
  auto same = cache->Open(mem, {.initial_size = 4196});
  ASSERT_TRUE(same) << same.error().ToString();
  auto any = cache->Open(mem);
  ASSERT_TRUE(any) << any.error().ToString();
  EXPECT_EQ(*(*any)->Size(), 4196u);
}

TEST(FileSize, ACorruptRecordIsRefusedAndLeftAlone) {
  auto mem = NewMemory();
  auto junk = Pattern(8192, 7);
  mem->WriteRaw(kSlotA, junk.data(), junk.size());
  auto r = NewCache()->Open(mem, {.initial_size = 4096});
  ASSERT_FALSE(r);
  const std::string& m = r.error().message();
  EXPECT_NE(m.find(mem->Info().name), std::string::npos) << m;
  EXPECT_NE(m.find("corrupt"), std::string::npos) << m;
  EXPECT_NE(m.find(std::to_string(kSlotA)), std::string::npos) << m;
  EXPECT_EQ(Raw(*mem, kSlotA, 8192), junk);  // not formatted over
  // A record whose checksum fails is corrupt too, and says so.
  MetadataRecord rec{.magic = "SCFILE01", .generation = 4};
  rec.Put<uint64_t>(0, 100);
  rec.Put<uint64_t>(8, kDev);
  auto enc = EncodeRecord(rec);
  enc[64] ^= std::byte{1};
  std::vector<std::byte> zero(8192);
  mem->WriteRaw(kSlotA, zero.data(), zero.size());
  mem->WriteRaw(kSlotA, enc.data(), enc.size());
  auto c = NewCache()->Open(mem);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("checksum"), std::string::npos) << c.error().ToString();
}

TEST(FileSize, AnotherLayersRecordAtTheEndIsNamed) {
  auto mem = NewMemory();
  auto enc = EncodeRecord(
      MetadataRecord{.magic = "SCMIRROR", .generation = 1, .uuid = Uuid::Random(), .payload = std::vector<std::byte>(16)});
  mem->WriteRaw(kSlotA, enc.data(), enc.size());
  auto r = NewCache()->Open(mem);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("mirror"), std::string::npos) << r.error().ToString();
  EXPECT_EQ(Raw(*mem, kSlotA, 4096), enc);
}

TEST(FileSize, BlockZeroHoldingAnotherLayersRecordGetsAHint) {
  auto enc = EncodeRecord(
      MetadataRecord{.magic = "SCINTEG1", .generation = 1, .uuid = Uuid::Random(), .payload = std::vector<std::byte>(16)});
  for (bool corrupt_end : {false, true}) {
    SCOPED_TRACE(corrupt_end ? "corrupt end" : "blank end");
    auto mem = NewMemory();
    mem->WriteRaw(0, enc.data(), enc.size());
    if (corrupt_end) {
      auto junk = Pattern(8192, 8);
      mem->WriteRaw(kSlotA, junk.data(), junk.size());
    }
    auto r = NewCache()->Open(mem);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("block 0 holds an integrity superblock"), std::string::npos)
        << r.error().ToString();
    EXPECT_NE(r.error().message().find("is the spec missing a layer?"), std::string::npos) << r.error().ToString();
    if (!corrupt_end) {
      EXPECT_EQ(Raw(*mem, kSlotA, 8192), std::vector<std::byte>(8192));  // not formatted
    }
  }
}

// Writes garbage over the newest record slot, like a record write torn by a
// crash: the other slot, one generation older, must still open.
TEST(FileSize, ATornRecordWriteLeavesThePreviousGenerationReadable) {
  for (int which : {0, 1}) {
    SCOPED_TRACE(which == 0 ? "newest slot torn" : "older slot torn");
    auto mem = NewMemory();
    {
      auto f = std::move(*NewCache()->Open(mem));
      ASSERT_TRUE(f->Write(0, Pattern(5000, 9)));
      ASSERT_TRUE(f->Sync().ok());
      ASSERT_TRUE(f->Write(5000, Pattern(4000, 10)));
      ASSERT_TRUE(f->Sync().ok());
      ASSERT_TRUE(f->Close().ok());
    }
    DecodedRecord a = DecodeRecord(Raw(*mem, kSlotA, 4096), "SCFILE01");
    DecodedRecord b = DecodeRecord(Raw(*mem, kSlotA + 4096, 4096), "SCFILE01");
    ASSERT_EQ(a.state, RecordState::kValid);
    ASSERT_EQ(b.state, RecordState::kValid);
    ASSERT_EQ(std::max(a.record.generation, b.record.generation), std::min(a.record.generation, b.record.generation) + 1);
    const bool a_newest = a.record.generation > b.record.generation;
    const bool tear_a = which == 0 ? a_newest : !a_newest;
    auto junk = Pattern(4096, 11);
    std::memcpy(junk.data(), "SCFILE01", 8);  // a half-written record: magic, bad checksum
    mem->WriteRaw(tear_a ? kSlotA : kSlotA + 4096, junk.data(), junk.size());
    auto f = NewCache()->Open(mem);
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(*(*f)->Size(), which == 0 ? 5000u : 9000u);
    // The next record write goes to the torn slot's turn and repairs it.
    ASSERT_TRUE((*f)->Truncate(7000).ok());
    ASSERT_TRUE((*f)->Close().ok());
    auto g = NewCache()->Open(mem);
    ASSERT_TRUE(g) << g.error().ToString();
    EXPECT_EQ(*(*g)->Size(), 7000u);
  }
}

// Crash right after a Sync's acknowledgement: the medium the replayer
// builds holds the synced size and bytes, whatever happened to what was
// written after the Sync.
TEST(FileSize, ACrashAfterSyncRecoversTheSyncedSizeAndData) {
  auto mem = NewMemory();
  auto log = std::make_shared<LogWritesDevice>(mem);
  const auto synced = Pattern(3 * 4096 + 100, 12);
  uint64_t mark = 0;
  {
    auto cache = NewCache();
    auto f = std::move(*cache->Open(log));
    ASSERT_TRUE(f->Write(0, synced));
    ASSERT_TRUE(f->Sync().ok());
    mark = log->Mark("sync acknowledged");
    // After the acknowledgement: an extension that reaches the medium (or
    // not) but is never synced, and a second Sync that fails never comes.
    ASSERT_TRUE(f->Write(synced.size(), Pattern(5 * 4096, 13)));
    ASSERT_TRUE(f->SyncRange(0, 0, kSyncWrite | kSyncWaitAfter).ok());  // data, not the size
    auto log_after = log->Snapshot();
    CrashReplayer replayer(std::move(log_after), std::vector<std::byte>(kDev));
    for (Unflushed u : {Unflushed::kDropAll, Unflushed::kApplyAll, Unflushed::kDropReorderTear}) {
      for (uint64_t pos : {mark + 1, replayer.log().size()}) {
        for (uint64_t seed = 0; seed < (u == Unflushed::kDropReorderTear ? 4u : 1u); seed++) {
          CrashState st = replayer.Build(CrashPoint{pos, u, seed, "after the sync"});
          SCOPED_TRACE(st.Describe());
          auto medium = NewMemory();
          medium->WriteRaw(0, st.images[0].data(), st.images[0].size());
          auto g = NewCache()->Open(medium);
          ASSERT_TRUE(g) << g.error().ToString();
          ASSERT_EQ(*(*g)->Size(), synced.size());
          EXPECT_EQ(ReadAll(**g), synced);
        }
      }
    }
    (void)f->Close();
  }
}

// The size becomes durable only with the data it covers: a crash after the
// flush of the data but before the record leaves the old size; after the
// record's write, the new one. Truncates reach the medium at the next Sync.
TEST(FileSize, TheSizeIsWrittenAfterTheDataItCoversAndTruncatesAtTheNextSync) {
  auto mem = NewMemory();
  auto log = std::make_shared<LogWritesDevice>(mem);
  auto cache = NewCache();
  auto f = std::move(*cache->Open(log));
  ASSERT_TRUE(f->Write(0, Pattern(20000, 14)));
  ASSERT_TRUE(f->Sync().ok());
  const uint64_t synced = log->Mark("sync 1");
  ASSERT_TRUE(f->Truncate(3000).ok());
  const uint64_t truncated = log->Mark("truncated, not synced");
  ASSERT_TRUE(f->Sync().ok());
  const uint64_t synced2 = log->Mark("sync 2");
  ASSERT_TRUE(f->Close().ok());
  CrashReplayer replayer(log->Snapshot(), std::vector<std::byte>(kDev));
  auto size_at = [&](uint64_t pos) -> uint64_t {
    CrashState st = replayer.Build(CrashPoint{pos, Unflushed::kDropAll, 0, ""});
    auto medium = NewMemory();
    medium->WriteRaw(0, st.images[0].data(), st.images[0].size());
    auto g = NewCache()->Open(medium);
    EXPECT_TRUE(g) << g.error().ToString();
    return g ? *(*g)->Size() : UINT64_MAX;
  };
  EXPECT_EQ(size_at(synced), 20000u);
  EXPECT_EQ(size_at(truncated + 1), 20000u);
  EXPECT_EQ(size_at(synced2), 3000u);
  // Every data write of the first Sync precedes the record write that
  // covers it in the log, and a flush separates them.
  auto entries = replayer.log();
  int64_t last_data = -1, first_record = -1, flush_between = -1;
  for (size_t i = 0; i < synced; i++) {
    const auto& e = entries[i];
    if (e.kind == LogEntry::Kind::kWrite && e.offset < kSlotA) last_data = static_cast<int64_t>(i);
    if (e.kind == LogEntry::Kind::kWrite && e.offset >= kSlotA && first_record < 0 && last_data >= 0)
      first_record = static_cast<int64_t>(i);
    if (e.kind == LogEntry::Kind::kFlushDone && last_data >= 0 && first_record < 0) flush_between = static_cast<int64_t>(i);
  }
  ASSERT_GE(last_data, 0);
  ASSERT_GT(first_record, last_data);
  EXPECT_GT(flush_between, last_data);
  EXPECT_LT(flush_between, first_record);
}

// nth=2: the format (generation 1) passes; the first Sync's record write
// fails. That Sync reports it, every other handle hears of it once, and
// the next Sync writes the record.
TEST(FileSize, AFailedRecordWriteFailsThatSyncAndALaterSyncPersists) {
  auto stack = BuildStack(fmt::format("fault(op=write,offset={},len=8192,nth=2),memory:1M", kSlotA));
  ASSERT_TRUE(stack) << stack.error().ToString();
  auto cache = NewCache();
  auto f = std::move(*cache->Open(*stack));
  auto other = std::move(*cache->Open(*stack));
  ASSERT_TRUE(f->Write(0, Pattern(9000, 15)));
  Status first = f->Sync();
  EXPECT_EQ(first.code(), Code::kIoError) << first.ToString();
  EXPECT_NE(first.message().find("file size"), std::string::npos) << first.ToString();
  {
    // On the medium: still the formatted size.
    auto g = NewCache()->Open(*stack);
    ASSERT_TRUE(g) << g.error().ToString();
    EXPECT_EQ(*(*g)->Size(), 0u);
    (*g).reset();
  }
  Status second = other->Sync();  // hears of it once, and retries the record
  EXPECT_EQ(second.code(), Code::kIoError) << second.ToString();
  EXPECT_TRUE(other->Sync().ok());
  EXPECT_TRUE(f->Sync().ok());
  {
    auto g = NewCache()->Open(*stack);
    ASSERT_TRUE(g) << g.error().ToString();
    EXPECT_EQ(*(*g)->Size(), 9000u);
  }
  ASSERT_TRUE(f->Close().ok());
  ASSERT_TRUE(other->Close().ok());
}

TEST(FileSize, AFailedRecordWriteIsRetriedByTheNextSyncOfTheSameHandle) {
  auto stack = BuildStack(fmt::format("fault(op=write,offset={},len=8192,nth=2),memory:1M", kSlotA));
  ASSERT_TRUE(stack) << stack.error().ToString();
  {
    auto f = std::move(*NewCache()->Open(*stack));
    ASSERT_TRUE(f->Write(0, Pattern(9000, 16)));
    EXPECT_FALSE(f->Sync().ok());
    EXPECT_TRUE(f->Sync().ok());
    ASSERT_TRUE(f->Close().ok());
  }
  auto g = NewCache()->Open(*stack);
  ASSERT_TRUE(g) << g.error().ToString();
  EXPECT_EQ(*(*g)->Size(), 9000u);
}

}  // namespace
}  // namespace stablecache
