#!/usr/bin/env bash
# Installs the Debian packages stablecache builds with, if any are missing.
set -euo pipefail
pkgs=(cmake g++ make pkg-config liburing-dev libisal-dev libgtest-dev libbenchmark-dev
      libcli11-dev libfmt-dev nlohmann-json3-dev libexpected-dev e2fsprogs util-linux mount
      clang-14 libclang-rt-14-dev libfuzzer-14-dev)  # the last three: the fuzz preset (scripts/run-fuzz)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
