// Adversary review of CLOCK eviction (AddressSpace::TryEvict) and the page
// lifecycle around it: the evictor finds descriptors without a reference, so
// every state a descriptor can be in when TryEvict looks at it is tried here,
// deterministically, and then an evictor that skips the scanner's prefilter
// hammers every descriptor while files are written, read, forked, truncated,
// synced and closed through a cache a few pages large.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache/address_space.h"
#include "cache/cache_impl.h"
#include "cache/file_handle.h"
#include "devices/memory_device.h"
#include "stablecache/cache.h"
#include "test_util.h"
#include "writeback/writeback.h"

namespace stablecache {
namespace {

using namespace std::chrono_literals;
using testing::Pattern;
constexpr uint64_t kPage = 4096;

// Aborts the process when `done` is not set within the limit: a hang (a
// lookup spinning on a poisoned slot, a lost wake-up) fails in seconds.
class Watchdog {
 public:
  Watchdog(const char* what, std::chrono::seconds limit = 30s)
      : thread_([this, what, limit] {
          for (auto until = std::chrono::steady_clock::now() + limit;
               !done_ && std::chrono::steady_clock::now() < until;)
            std::this_thread::sleep_for(10ms);
          if (!done_) {
            std::fprintf(stderr, "watchdog: %s still running after %llds\n", what,
                         static_cast<long long>(limit.count()));
            std::abort();
          }
        }) {}
  ~Watchdog() {
    done_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

struct Rig {
  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<Cache> cache;
  CacheImpl* impl = nullptr;
  std::unique_ptr<File> file;
  std::shared_ptr<AddressSpace> as;
};

// `held_page`: with manual_release, the page whose writes are held.
Rig MakeRig(uint64_t pages, uint32_t capacity_pages, MemoryDeviceOptions mo = {},
            StablePolicy policy = StablePolicy::kNone, uint64_t held_page = 0) {
  Rig r;
  mo.size_bytes = pages * kPage + 8192;
  r.mem = *MemoryDevice::Create(mo);
  if (mo.manual_release) r.mem->HoldOnly(held_page * kPage, kPage);
  for (uint64_t p = 0; p < pages; p++) {
    auto d = Pattern(kPage, static_cast<uint32_t>(p));
    r.mem->WriteRaw(p * kPage, d.data(), kPage);
  }
  CacheOptions co;
  co.capacity_bytes = capacity_pages * kPage;
  co.readahead_pages = 1;
  co.io_reserve_frames = 4;
  co.policy = policy;
  co.writeback_interval_ms = 60000;  // the test starts writeback itself
  r.cache = *Cache::Create(co);
  r.impl = static_cast<CacheImpl*>(r.cache.get());
  r.file = std::move(*r.cache->Open(r.mem, {.initial_size = pages * kPage}));
  auto spaces = r.impl->Spaces();
  EXPECT_EQ(spaces.size(), 1u);
  r.as = spaces.at(0);
  return r;
}

// Reads page idx into the cache and returns its descriptor, which then holds
// only the index's reference: what the scanner finds.
Page* CachedIdlePage(Rig& r, uint64_t idx) {
  std::vector<std::byte> buf(kPage);
  EXPECT_TRUE(r.file->Read(idx * kPage, buf));
  EXPECT_EQ(buf, Pattern(kPage, static_cast<uint32_t>(idx)));
  PageRef ref = r.as->FindGet(idx);
  EXPECT_TRUE(ref);
  return ref.get();
}

TEST(EvictAdversary, TryEvictClaimsOnlyAnIdleCleanIndexedPageAndChangesNothingElse) {
  Rig r = MakeRig(64, 16);
  Page* p = CachedIdlePage(r, 3);
  const uint64_t idle = p->Load();
  ASSERT_EQ(Page::Refs(idle), 1u);

  // Referenced by someone else (a reader copying its bytes).
  {
    PageRef reader = r.as->FindGet(3);
    const uint64_t w0 = p->Load();
    EXPECT_FALSE(r.as->TryEvict(p));
    EXPECT_EQ(p->Load(), w0) << "a refused eviction leaves the word as it found it";
  }
  // Each busy flag alone, with only the index's reference (as the scanner
  // would see it), and a pin.
  for (uint64_t flag : {Page::kLocked, Page::kDirty, Page::kWriteback}) {
    p->SetFlags(flag);
    const uint64_t w0 = p->Load();
    EXPECT_FALSE(r.as->TryEvict(p)) << "flag " << flag;
    EXPECT_EQ(p->Load(), w0) << "flag " << flag;
    p->ClearFlags(flag);
  }
  p->Pin();
  EXPECT_FALSE(r.as->TryEvict(p));
  p->Unpin();
  EXPECT_EQ(p->Load(), idle);

  const uint32_t cached = r.impl->pool().cached();
  const size_t indexed = r.as->index().Size();
  EXPECT_TRUE(r.as->TryEvict(p));
  EXPECT_FALSE(r.as->FindGet(3)) << "an evicted page stays in the index";
  EXPECT_EQ(r.as->index().Size(), indexed - 1);
  EXPECT_EQ(r.impl->pool().cached(), cached - 1) << "the evicted page's frame is not freed";
  EXPECT_EQ(p->Load(), 0u) << "a freed descriptor keeps flags or references";
  EXPECT_FALSE(r.as->TryEvict(p)) << "a freed descriptor was evicted again";
  EXPECT_EQ(r.impl->pool().cached(), cached - 1);

  std::vector<std::byte> buf(kPage);
  ASSERT_TRUE(r.file->Read(3 * kPage, buf));
  EXPECT_EQ(buf, Pattern(kPage, 3));
  ASSERT_TRUE(r.file->Close().ok());
  EXPECT_EQ(r.impl->pool().cached(), 0u);
}

// The CI hang: the scanner's descriptor was recycled and handed to a creator
// that has set owner and index but not yet inserted it (FindOrCreate,
// TryCreate), or inserted it locked. Whether the slot holds another page or
// nothing, TryEvict must not touch it; the creator then indexes a page that
// lookups find, locked and not uptodate, and that stays evictable later.
TEST(EvictAdversary, AFreshDescriptorBeforeAndAfterItsInsertIsNeverClaimed) {
  Rig r = MakeRig(64, 16);
  Page* other = CachedIdlePage(r, 5);
  for (uint64_t idx : {uint64_t{5}, uint64_t{6}}) {  // slot held by another page, slot empty
    Page* fresh = r.impl->pool().TryAllocPage();
    ASSERT_NE(fresh, nullptr);
    fresh->owner.store(r.as.get());
    fresh->SetIndex(idx);
    const uint64_t w0 = fresh->Load();
    EXPECT_FALSE(r.as->TryEvict(fresh)) << idx;
    EXPECT_EQ(fresh->Load(), w0) << "TryEvict changed a page that is not in the slot, idx " << idx;
    r.as->PrepareNewPage(fresh);
    EXPECT_EQ(fresh->Load(), Page::kLocked | 2 * Page::kRefOne) << idx;
    EXPECT_FALSE(r.as->TryEvict(fresh)) << idx;
    if (idx == 5) {
      EXPECT_FALSE(r.as->index().Insert(idx, fresh));
      r.as->AbandonNewPage(fresh);
      EXPECT_EQ(fresh->Load(), 0u) << "an abandoned page is not freed";
      PageRef still = r.as->FindGet(5);
      EXPECT_EQ(still.get(), other);
      continue;
    }
    ASSERT_TRUE(r.as->index().Insert(idx, fresh));
    EXPECT_FALSE(r.as->TryEvict(fresh)) << "a page its creator still fills was evicted";
    {
      PageRef seen = r.as->FindGet(idx);
      ASSERT_EQ(seen.get(), fresh) << "the creator's page is not found";
      EXPECT_EQ(seen->Load() & (Page::kDetached | Page::kUptodate), 0u);
    }
    std::memset(r.impl->pool().Data(fresh), 0x5a, kPage);
    fresh->SetFlags(Page::kUptodate);
    fresh->Unlock();
    r.impl->pool().Put(fresh);  // the creator's reference
    EXPECT_EQ(fresh->Load(), Page::kUptodate | Page::kRefOne);
    EXPECT_TRUE(r.as->TryEvict(fresh));
  }
  ASSERT_TRUE(r.file->Close().ok());
  EXPECT_EQ(r.impl->pool().cached(), 0u);
}

// A descriptor whose owner pointer names a space it is not indexed in (a
// recycled descriptor now in another file at the same page number).
TEST(EvictAdversary, APageOfAnotherSpaceAtTheSameIndexIsLeftAlone) {
  Rig a = MakeRig(64, 16);
  auto mem_b = *MemoryDevice::Create({.size_bytes = 64 * kPage + 8192});
  auto file_b = std::move(*a.cache->Open(mem_b, {.initial_size = 64 * kPage}));
  std::shared_ptr<AddressSpace> b;
  for (auto& s : a.impl->Spaces())
    if (s != a.as) b = s;
  ASSERT_TRUE(b);
  std::vector<std::byte> buf(kPage);
  ASSERT_TRUE(file_b->Read(7 * kPage, buf));
  Page* pb = b->FindGet(7).get();
  const uint64_t wb = pb->Load();
  EXPECT_FALSE(a.as->TryEvict(pb)) << "slot empty in a";
  Page* pa = CachedIdlePage(a, 7);
  const uint64_t wa = pa->Load();
  EXPECT_FALSE(a.as->TryEvict(pb)) << "slot holds a's own page";
  EXPECT_EQ(pb->Load(), wb);
  EXPECT_EQ(pa->Load(), wa);
  EXPECT_EQ(b->FindGet(7).get(), pb);
  EXPECT_EQ(a.as->FindGet(7).get(), pa);
  ASSERT_TRUE(file_b->Close().ok());
  ASSERT_TRUE(a.file->Close().ok());
  EXPECT_EQ(a.impl->pool().cached(), 0u);
}

// Fork: the old frame stays with the I/O, detached; the copy is dirty.
// Neither may be evicted until the write lands and the copy is written.
TEST(EvictAdversary, NeitherAForkedFrameUnderIoNorItsDirtyCopyIsEvicted) {
  Watchdog dog("fork eviction test");
  Rig r = MakeRig(64, 16, {.late_copy = true, .manual_release = true}, StablePolicy::kFork, /*held_page=*/2);
  auto v1 = Pattern(kPage, 1001), v2 = Pattern(kPage, 1002);
  ASSERT_TRUE(r.file->Write(2 * kPage, v1));
  Page* old_page = r.as->FindGet(2).get();
  ASSERT_EQ(WritebackRange(*r.as, 0, UINT64_MAX, WritebackMode::kBackground), 1u);
  ASSERT_TRUE(old_page->Test(Page::kWriteback));
  ASSERT_TRUE(r.file->Write(2 * kPage, v2));  // forks
  ASSERT_EQ(r.cache->Stats().forks, 1u);
  Page* copy = r.as->FindGet(2).get();
  ASSERT_NE(copy, old_page);
  const uint64_t wo = old_page->Load(), wc = copy->Load();
  EXPECT_TRUE(wo & Page::kDetached);
  EXPECT_FALSE(r.as->TryEvict(old_page));
  EXPECT_FALSE(r.as->TryEvict(copy));
  EXPECT_EQ(old_page->Load(), wo);
  EXPECT_EQ(copy->Load(), wc);
  // The cache's own scanner, too: reads of more pages than the cache holds
  // evict again and again around the two.
  std::vector<std::byte> buf(kPage);
  for (uint64_t idx = 10; idx < 60; idx++) {
    ASSERT_TRUE(r.file->Read(idx * kPage, buf));
    EXPECT_EQ(buf, Pattern(kPage, static_cast<uint32_t>(idx)));
  }
  EXPECT_GT(r.cache->Stats().evictions, 30u);
  EXPECT_EQ(r.as->FindGet(2).get(), copy);
  EXPECT_EQ(old_page->Load(), wo) << "the old frame under I/O changed";
  // From here every write is let through (Sync and Close write the copy).
  std::atomic<bool> done{false};
  std::thread releaser([&] {
    while (!done) {
      r.mem->ReleaseWrites();
      std::this_thread::sleep_for(1ms);
    }
  });
  EXPECT_TRUE(r.file->Sync().ok());
  EXPECT_TRUE(r.file->Read(2 * kPage, buf));
  EXPECT_EQ(buf, v2);
  EXPECT_TRUE(r.file->Close().ok());
  done = true;
  releaser.join();
  EXPECT_EQ(r.impl->pool().cached(), 0u);
  std::vector<std::byte> raw(kPage);
  r.mem->ReadRaw(2 * kPage, raw.data(), kPage);
  EXPECT_EQ(raw, v2);
}

// An evictor that skips the scanner's prefilter and calls TryEvict on every
// descriptor of every space, all the time, while each worker drives its own
// file (writes that extend, reads checked against a model, truncates, fork
// under in-flight writes, syncs, close and reopen) through a cache of 24
// pages, and readers churn a shared read-only file. Every read must match
// the model; at the end the devices must hold the model and the cache no
// page at all.
TEST(EvictAdversary, AnEvictorHammeringEveryDescriptorLosesNothing) {
  constexpr uint64_t kFilePages = 40;
  constexpr int kWorkers = 3;
  CacheOptions co;
  co.capacity_bytes = 24 * kPage;
  co.readahead_pages = 4;
  co.io_reserve_frames = 4;
  co.policy = StablePolicy::kFork;
  co.writeback_interval_ms = 5;
  auto cache = *Cache::Create(co);
  auto* impl = static_cast<CacheImpl*>(cache.get());

  auto shared_mem = *MemoryDevice::Create({.size_bytes = 64 * kPage + 8192});
  for (uint64_t p = 0; p < 64; p++) {
    auto d = Pattern(kPage, static_cast<uint32_t>(50000 + p));
    shared_mem->WriteRaw(p * kPage, d.data(), kPage);
  }
  auto shared_file = std::move(*cache->Open(shared_mem, {.initial_size = 64 * kPage}));

  std::vector<std::shared_ptr<MemoryDevice>> devs;
  for (int w = 0; w < kWorkers; w++)
    devs.push_back(*MemoryDevice::Create(
        {.size_bytes = kFilePages * kPage + 8192, .late_copy = w == 0, .delay = std::chrono::microseconds(w * 50)}));
  std::vector<std::vector<std::byte>> models(kWorkers);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0}, errors{0}, ops{0}, tries{0}, evicted{0};
  Watchdog dog("EvictAdversary hammer", 60s);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; w++)
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(w * 7919 + 1);
      std::vector<std::byte>& model = models[w];
      auto file = std::move(*cache->Open(devs[w], {}));
      const uint64_t limit = kFilePages * kPage;
      for (auto until = std::chrono::steady_clock::now() + 2s; std::chrono::steady_clock::now() < until;) {
        ops++;
        const int op = static_cast<int>(rng() % 100);
        if (op < 45) {  // write, maybe extending, maybe unaligned
          uint64_t off = rng() % limit;
          uint64_t len = std::min<uint64_t>(limit - off, 1 + rng() % (3 * kPage));
          auto data = Pattern(len, static_cast<uint32_t>(rng()));
          auto n = file->Write(off, data);
          if (!n) {
            errors++;
            continue;
          }
          if (model.size() < off + len) model.resize(off + len);
          std::memcpy(model.data() + off, data.data(), len);
        } else if (op < 80) {  // read and check
          if (model.empty()) continue;
          uint64_t off = rng() % model.size();
          uint64_t len = std::min<uint64_t>(model.size() - off, 1 + rng() % (3 * kPage));
          std::vector<std::byte> buf(len);
          auto n = file->Read(off, buf);
          if (!n || *n != len) {
            errors++;
            continue;
          }
          if (std::memcmp(buf.data(), model.data() + off, len) != 0) wrong++;
        } else if (op < 88) {  // truncate (down or up)
          uint64_t size = rng() % limit;
          if (!file->Truncate(size).ok()) {
            errors++;
            continue;
          }
          model.resize(size);  // growth reads as zeros
        } else if (op < 95) {
          if (!file->Sync().ok()) errors++;
        } else {  // close and reopen: the space is released and made again
          if (!file->Close().ok()) errors++;
          auto f = cache->Open(devs[w], {});
          if (!f) {
            errors++;
            return;
          }
          file = std::move(*f);
          auto size = file->Size();
          if (!size || *size != model.size()) wrong++;
        }
      }
      if (!file->Close().ok()) errors++;
    });
  for (int t = 0; t < 2; t++)
    threads.emplace_back([&, t] {
      std::vector<std::byte> buf(kPage);
      uint64_t x = t + 1;
      while (!stop) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t p = (x >> 33) % 64;
        if (!shared_file->Read(p * kPage, buf)) continue;
        wrong += buf != Pattern(kPage, static_cast<uint32_t>(50000 + p));
      }
    });
  // A second handle on a worker's file now and then: lookups, creations
  // and cache-bypassing reads (which create and detach locked pages) race
  // the owner's truncates and the evictor. Its bytes are not checked (the
  // owner writes meanwhile), only that nothing fails or hangs.
  threads.emplace_back([&] {
    std::mt19937_64 rng(4242);
    std::vector<std::byte> buf(2 * kPage);
    while (!stop) {
      auto f = cache->Open(devs[rng() % kWorkers], {});
      if (!f) {
        errors++;
        return;
      }
      for (int i = 0; i < 50; i++) {
        const uint64_t idx = rng() % (kFilePages - 2);
        if (i % 5 == 0) {
          if (!(*f)->ReadBypassingCache(idx * kPage, buf, nullptr).ok()) errors++;
        } else if (!(*f)->Read(idx * kPage, buf)) {
          errors++;
        }
      }
      if (!(*f)->Close().ok()) errors++;
    }
  });
  std::thread evictor([&] {
    const uint32_t n = impl->pool().arena().frames();
    while (!stop) {
      auto spaces = impl->Spaces();  // keeps each alive, even once it is released
      for (uint32_t f = 0; f < n; f++) {
        Page* p = impl->pool().Descriptor(f);
        AddressSpace* owner = p->owner.load(std::memory_order_acquire);
        for (auto& s : spaces)
          if (s.get() == owner) {
            tries++;
            evicted += s->TryEvict(p);
          }
      }
    }
  });
  for (int w = 0; w < kWorkers; w++) threads[w].join();
  stop = true;
  for (size_t t = kWorkers; t < threads.size(); t++) threads[t].join();
  evictor.join();

  EXPECT_EQ(wrong.load(), 0u) << "of " << ops.load() << " operations";
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_GT(evicted.load(), 100u) << "of " << tries.load();
  ASSERT_TRUE(shared_file->Close().ok());
  // Released spaces go at once or with the flusher's next pass.
  for (auto until = std::chrono::steady_clock::now() + 20s;
       impl->pool().cached() != 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(impl->pool().cached(), 0u) << "pages leaked by lost or doubled references";
  EXPECT_EQ(cache->Stats().dirty_pages, 0u);
  for (int w = 0; w < kWorkers; w++) {
    auto f = std::move(*cache->Open(devs[w], {}));
    ASSERT_EQ(*f->Size(), models[w].size()) << "worker " << w;
    std::vector<std::byte> raw(models[w].size()), buf(models[w].size());
    devs[w]->ReadRaw(0, raw.data(), raw.size());
    EXPECT_TRUE(raw == models[w]) << "worker " << w << ": the device does not hold what was written";
    if (!buf.empty()) {
      ASSERT_TRUE(f->Read(0, buf));
    }
    EXPECT_TRUE(buf == models[w]) << "worker " << w << ": a fresh space reads other bytes";
    ASSERT_TRUE(f->Close().ok());
  }
}

}  // namespace
}  // namespace stablecache
