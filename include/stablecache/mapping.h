// Mapping: a file range mapped into the address space (File::Map), with
// Linux's MAP_SHARED semantics on the cache's own pages.
//
// Loads and stores go straight to the cache's pages: no copy, and no system
// call once a page is resident and (for stores) dirty. Every mapping of a
// file, and its File::Read and File::Write, see the same bytes at once.
//
// How it works (doc/design.md, "Mapped access"): the range is a MAP_SHARED
// mapping of the file's memfd (one VMA), registered with userfaultfd. A
// thread per mapping resolves its faults:
//  - a page not in the cache is read from the device into the cache, then
//    mapped (UFFDIO_CONTINUE); the mapping can be far larger than the
//    cache: clean pages are evicted (which unmaps them) and fault back in;
//  - a writable mapping maps pages write-protected; the first store after
//    a page was cleaned faults (page_mkwrite): the page is marked dirty,
//    and under policy kWait the store first waits for the page's writeback;
//    under the other policies it never waits for the device;
//  - writeback write-protects a page in every mapping before it takes the
//    page's bytes (page_mkclean), so no store is ever lost between the two.
// Accesses past EOF, and to a page the device cannot read, get SIGBUS.
// A store racing a Truncate is safe: it lands before (and is cut off with
// the page) or it faults after (SIGBUS past the new end).
//
// Msync(kSync) makes the whole file durable, as File::Sync does, and
// reports writeback errors the way a File handle does (the mapping has its
// own, opened by Map). Msync(kAsync) starts writeback of the range.
// Msync(kInvalidate) is a no-op: mappings and the cache are one copy.
// Unmap (or the destructor) removes the mapping and closes its handle,
// writing back what is dirty; Unmap reports a writeback error.
//
// Do not pass a mapping's own bytes to File::Write of the same file: the
// write holds the page it copies into while the load may fault on it.
//
// Thread-safety: loads and stores from any thread; Msync and Unmap from one.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stablecache/status.h"

namespace stablecache {

enum class MsyncMode : uint8_t { kSync, kAsync, kInvalidate };

class Mapping {
 public:
  virtual ~Mapping() = default;
  virtual std::byte* data() const = 0;
  virtual size_t size() const = 0;
  // The file offset of data()[0].
  virtual uint64_t offset() const = 0;
  // [offset, offset + length) relative to data(); length 0: to the end.
  virtual Status Msync(size_t offset, size_t length, MsyncMode mode) = 0;
  virtual Status Unmap() = 0;
};

}  // namespace stablecache
