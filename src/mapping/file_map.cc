// File::Map: the cache side of a mapping, for FileHandle (kept here, with
// the mapping code, so that cache/ does not include mapping/).
#include <fmt/format.h>

#include "cache/cache_impl.h"
#include "cache/file_handle.h"
#include "mapping/mapping_impl.h"

namespace stablecache {

Result<std::unique_ptr<Mapping>> FileHandle::Map(uint64_t offset, size_t length, MapAccess access) {
  OpGuard guard(*this);
  if (Status st = CheckRange("map", offset, length); !st.ok()) return Err(st);
  const std::string& name = as_->device().Info().name;
  if (!as_->mappable())
    return Err(Status::InvalidArgument(
        fmt::format("map of '{}': the file was opened without FileOptions::mappable", name)));
  if (offset % 4096 != 0)
    return Err(Status::InvalidArgument(fmt::format("map of '{}': offset {} is not a multiple of 4096", name, offset)));
  if (length == 0) return Err(Status::InvalidArgument(fmt::format("map of '{}': length 0", name)));
  const uint64_t limit = as_->device_pages() << 12;
  if (offset + length > limit)
    return Err(Status::OutOfRange(fmt::format("map of '{}': [{}, {}) ends past the file limit of the device ({} bytes)",
                                              name, offset, offset + length, limit)));
  FileOptions fo;
  fo.mappable = true;
  auto handle = cache_->Open(as_->device_ptr(), fo);
  if (!handle) return Err(handle.error());
  auto m = MappingImpl::Create(std::move(*handle), as_, offset, length, access);
  if (!m) return Err(m.error());
  return std::unique_ptr<Mapping>(std::move(*m));
}

}  // namespace stablecache
