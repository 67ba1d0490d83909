// The smallest useful program: a cache over a RAM disk, one write, one sync,
// one read back.
#include <cstdio>
#include <cstring>
#include <string_view>

#include <stablecache/cache.h>
#include <stablecache/stack.h>

int main() {
  using namespace stablecache;
  auto dev = BuildStack("memory:16M");
  if (!dev) return std::printf("%s\n", dev.error().ToString().c_str()), 1;
  auto cache = Cache::Create(CacheOptions{});
  if (!cache) return std::printf("%s\n", cache.error().ToString().c_str()), 1;
  auto file = (*cache)->Open(*dev);
  if (!file) return std::printf("%s\n", file.error().ToString().c_str()), 1;

  std::string_view msg = "stable pages, stable bytes";
  auto w = (*file)->Write(4000, std::as_bytes(std::span(msg)));  // straddles two pages
  if (!w) return std::printf("%s\n", w.error().ToString().c_str()), 1;
  if (Status st = (*file)->Sync(); !st.ok()) return std::printf("%s\n", st.ToString().c_str()), 1;

  char back[64] = {};
  auto r = (*file)->Read(4000, std::as_writable_bytes(std::span(back, msg.size())));
  if (!r || *r != msg.size() || std::memcmp(back, msg.data(), msg.size()) != 0) return std::printf("mismatch\n"), 1;
  std::printf("hello_cache: read back \"%s\"\n", back);
  return (*file)->Close().ok() ? 0 : 1;
}
