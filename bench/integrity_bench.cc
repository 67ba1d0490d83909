// The per-4 KiB cost of what the stability-needing layers compute, beside
// a plain 4 KiB memcpy (the cost of one bounce copy), in one run:
// integrity's guard tags (ISA-L CRC16 T10-DIF and CRC32C; generation at
// submission and verification on read cost the same), verify's per-512 B
// CRC32C, and parity's XOR over two data chunks.
//
//   build/default/bench/integrity_bench --benchmark_min_time=1
#include <isa-l/crc.h>
#include <isa-l/raid.h>

#include <cstring>
#include <vector>

#include <benchmark/benchmark.h>

#include "ratio_reporter.h"

namespace {

constexpr size_t kBlock = 4096;

struct Buffers {
  alignas(64) unsigned char a[kBlock];
  alignas(64) unsigned char b[kBlock];
  alignas(64) unsigned char p[kBlock];
  Buffers() {
    for (size_t i = 0; i < kBlock; i++) a[i] = static_cast<unsigned char>(i * 131 + 7), b[i] = static_cast<unsigned char>(i * 17);
  }
};

void BM_Memcpy4K(benchmark::State& state) {
  Buffers buf;
  for (auto _ : state) {
    std::memcpy(buf.b, buf.a, kBlock);
    benchmark::DoNotOptimize(buf.b);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

void BM_Crc16T10Dif4K(benchmark::State& state) {
  Buffers buf;
  for (auto _ : state) benchmark::DoNotOptimize(crc16_t10dif(0, buf.a, kBlock));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

void BM_Crc32c4K(benchmark::State& state) {
  Buffers buf;
  for (auto _ : state) benchmark::DoNotOptimize(crc32_iscsi(buf.a, kBlock, 0xffffffff));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

void BM_Crc32cPer512B4K(benchmark::State& state) {  // the verify layer's sums
  Buffers buf;
  for (auto _ : state)
    for (size_t o = 0; o < kBlock; o += 512) benchmark::DoNotOptimize(crc32_iscsi(buf.a + o, 512, 0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

void BM_XorParity2x4K(benchmark::State& state) {  // parity over 2 data chunks
  Buffers buf;
  void* vec[3] = {buf.a, buf.b, buf.p};
  for (auto _ : state) {
    xor_gen(3, kBlock, vec);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

BENCHMARK(BM_Memcpy4K);
BENCHMARK(BM_Crc16T10Dif4K);
BENCHMARK(BM_Crc32c4K);
BENCHMARK(BM_Crc32cPer512B4K);
BENCHMARK(BM_XorParity2x4K);

}  // namespace

int main(int argc, char** argv) {
  stablecache::bench::RatioReporter reporter("vs memcpy");
  reporter.AddPair("CRC16 T10-DIF of 4 KiB (integrity guard)", "BM_Memcpy4K", "BM_Crc16T10Dif4K");
  reporter.AddPair("CRC32C of 4 KiB (integrity guard)", "BM_Memcpy4K", "BM_Crc32c4K");
  reporter.AddPair("8 x CRC32C of 512 B (verify)", "BM_Memcpy4K", "BM_Crc32cPer512B4K");
  reporter.AddPair("XOR parity of 2 x 4 KiB", "BM_Memcpy4K", "BM_XorParity2x4K");
  return stablecache::bench::RunWithRatios(argc, argv, reporter);
}
