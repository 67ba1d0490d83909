#!/usr/bin/env bash
# Installs the build in $1 to a scratch prefix and builds examples/ against
# it twice: with find_package(stablecache) and with pkg-config, then runs the
# installed CLI from that prefix.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S examples -B "$prefix/example-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/example-build" >/dev/null
"$prefix/example-build/hello_cache"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig"
g++ -std=c++20 examples/hello_cache.cc -o "$prefix/hello_pc" $(pkg-config --cflags --libs stablecache) \
  -Wl,-rpath,"$(pkg-config --variable=libdir stablecache)"
"$prefix/hello_pc"
# The installed CLI runs from this non-system prefix without LD_LIBRARY_PATH.
env -u LD_LIBRARY_PATH "$prefix/bin/stablecache" wac --help >/dev/null
TMPDIR="$prefix" env -u LD_LIBRARY_PATH "$prefix/bin/stablecache" wac --profile A --duration 0.5 --threads 2 >/dev/null
echo "install check: examples built and ran against the installed package"
