// Writeback: turning dirty pages into write bios, and ending them.
//
// Per page (steps numbered as in the code):
//  1. lock the page (sync mode waits; background mode skips a locked page);
//  2. make sure no earlier write of this page number is still in flight
//     (sync waits; background skips), so two writes of one block never race
//     below the cache, fork copies included;
//  3. clear Dirty; skip pages truncated away;
//  4. under policy bounce, copy into a bounce frame from the I/O reserve;
//  5. set Writeback, record the page as in flight, unlock;
//  6. batch contiguous pages into one bio, marked kStable.
// Completion: on error record it in the errseq and re-dirty the page (never
// drop it), free the bounce frame, end writeback, wake waiters.
#pragma once

#include <cstddef>
#include <cstdint>

namespace stablecache {

class AddressSpace;

enum class WritebackMode { kBackground, kSync };

// Starts writeback of dirty pages with numbers in [first, last]. Returns the
// number of pages submitted.
size_t WritebackRange(AddressSpace& as, uint64_t first, uint64_t last, WritebackMode mode,
                      size_t max_pages = SIZE_MAX);

// Waits until no write of a page numbered in [first, last] is in flight.
void WaitWritebackRange(AddressSpace& as, uint64_t first, uint64_t last);

}  // namespace stablecache
