// Shared helpers for the benchmark programs: timing (median of N runs) and the machine's
// memory read bandwidth, measured in the same run so roofline fractions compare like with like.
//
// Bandwidth: every pool thread sums its contiguous share of a slice of a large buffer (1 GiB by
// default, far beyond any cache) with the widest vector loads the CPU has; the best of many
// passes is reported. That is the figure a bandwidth-bound kernel (decode GEMV) should approach.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/core.h"

namespace ff::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  double median = 0.0;  // seconds
  double best = 0.0;    // seconds; on a shared machine the least disturbed run
};

// Runs fn() `warmup` times untimed, then `reps` times timed.
template <typename Fn>
Timing time_runs(Fn&& fn, int reps, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  t.reserve(size_t(std::max(reps, 1)));
  for (int i = 0; i < std::max(reps, 1); ++i) {
    const double t0 = now_seconds();
    fn();
    t.push_back(now_seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

// The median of time_runs, in seconds.
template <typename Fn>
double median_seconds(Fn&& fn, int reps, int warmup = 1) {
  return time_runs(fn, reps, warmup).median;
}

// A 64-byte aligned, zero-initialised heap buffer that is freed on scope exit.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t bytes) : bytes_(bytes) {
    data_ = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    FF_CHECK(data_ != nullptr, "bench: cannot allocate {} bytes", bytes);
    std::memset(data_, 0, bytes);
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
};

namespace detail {

// The sums are returned (and folded into a sink) so the loads cannot be optimised away.
__attribute__((target("avx512f"))) inline float sum_avx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  // Lanes summed through memory: GCC 12 warns inside _mm512_reduce_add_ps (PR 105593).
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float s = 0.f;
  for (float v : lanes) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

__attribute__((target("avx2"))) inline float sum_avx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0.f;
  for (float v : lanes) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

inline float sum_scalar(const float* p, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

inline volatile float g_sink = 0.f;

}  // namespace detail

// Memory read bandwidth in GB/s (1e9 bytes/s) using all threads of the global pool: the best
// of `passes` reads of a 128 MiB slice, the slices taken in turn from a `bytes` buffer so each
// one was last touched a whole buffer ago (out of every cache). Short passes keep the figure
// honest on a shared machine, where a long pass rarely runs undisturbed.
inline double measure_read_bandwidth_gbps(size_t bytes = size_t(1) << 30, int passes = 32) {
  constexpr size_t kSlice = size_t(128) << 20;
  bytes = std::max(bytes / kSlice, size_t(1)) * kSlice;
  AlignedBuffer buf(bytes);
  float* data = reinterpret_cast<float*>(buf.data());
  // Page the buffer in with non-zero data so no pass measures page faults.
  std::fill(data, data + bytes / sizeof(float), 1.f);
  const auto& cpu = cpu_features();
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.size();
  const size_t n = kSlice / sizeof(float);
  std::vector<float> sums(size_t(threads), 0.f);
  double best = 0.0;
  for (int pass = 0; pass < passes; ++pass) {
    const float* p = data + (size_t(pass) % (bytes / kSlice)) * n;
    const double t0 = now_seconds();
    pool.run([&](int t) {
      // Chunks are multiples of 64 floats so every thread's start stays 64-byte aligned.
      const size_t chunk = (n / size_t(threads)) / 64 * 64;
      const size_t b = chunk * size_t(t);
      const size_t e = t + 1 == threads ? n : b + chunk;
      if (cpu.avx512)
        sums[size_t(t)] = detail::sum_avx512(p + b, e - b);
      else if (cpu.avx2_fma)
        sums[size_t(t)] = detail::sum_avx2(p + b, e - b);
      else
        sums[size_t(t)] = detail::sum_scalar(p + b, e - b);
    });
    const double dt = now_seconds() - t0;
    for (float s : sums) detail::g_sink = detail::g_sink + s;
    best = std::max(best, double(kSlice) / dt / 1e9);
  }
  return best;
}

namespace detail {

// 24 independent accumulator chains: enough to cover FMA latency x issue width.
__attribute__((target("avx512f,fma"))) inline float fma_loop_avx512(int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * float(i));
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  alignas(64) float lanes[16];
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  _mm512_store_ps(lanes, s);
  return lanes[0];
}

__attribute__((target("avx2,fma"))) inline float fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  alignas(32) float lanes[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(lanes, s);
  return lanes[0];
}

__attribute__((target("avx512f,avx512bf16"))) inline float dpbf16_loop(int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * float(i));
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh c = (__m512bh)_mm512_set1_epi16(0x3c00);  // bf16 2^-7
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], b, c);
  }
  alignas(64) float lanes[16];
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  _mm512_store_ps(lanes, s);
  return lanes[0];
}

// vpdpbusd (u8 x s8 quads) or, with Words, vpdpwssd (int16 pairs). 12 chains: GCC 12 spills 24
// such accumulators (half the rate on Zen 4); 12 cover the latency.
template <bool Words>
__attribute__((target("avx512f,avx512vnni"))) inline float int_dot_loop(int64_t iters) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i b = _mm512_set1_epi16(3), c = _mm512_set1_epi16(-2);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i)
      acc[i] = Words ? _mm512_dpwssd_epi32(acc[i], b, c) : _mm512_dpbusd_epi32(acc[i], b, c);
  }
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  return float(lanes[0]);
}

// Best-of-`passes` GFLOP/s of a register-only loop run on every pool thread at once.
template <typename Loop>
double loop_peak_gflops(Loop&& loop, double flops_per_iter, int passes) {
  ThreadPool& pool = ThreadPool::global();
  constexpr int64_t kIters = 2'000'000;
  double best = 0.0;
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = now_seconds();
    pool.run([&](int) { g_sink = g_sink + loop(kIters); });
    const double dt = now_seconds() - t0;
    best = std::max(best, flops_per_iter * double(kIters) * pool.size() / dt / 1e9);
  }
  return best;
}

}  // namespace detail

// fp32 FMA peak in GFLOP/s over all pool threads with the widest vectors the CPU has (what the
// fp32 GEMM kernels can reach at best); 0 without AVX2.
inline double measure_fp32_fma_peak_gflops(int passes = 5) {
  const auto& cpu = cpu_features();
  if (cpu.avx512) return detail::loop_peak_gflops(detail::fma_loop_avx512, 24 * 32, passes);
  if (cpu.avx2_fma) return detail::loop_peak_gflops(detail::fma_loop_avx2, 12 * 16, passes);
  return 0.0;
}

// AVX512-BF16 dot-product (vdpbf16ps) peak in GFLOP/s over all pool threads; 0 without it.
inline double measure_bf16_dot_peak_gflops(int passes = 5) {
  if (!cpu_features().avx512_bf16) return 0.0;
  return detail::loop_peak_gflops(detail::dpbf16_loop, 24 * 64, passes);
}

// AVX512-VNNI u8 x s8 dot-product (vpdpbusd) peak in G multiply-adds x 2 per second over all pool
// threads (comparable with GFLOP/s: 2mnk per GEMM); 0 without it.
inline double measure_int8_dot_peak_gops(int passes = 5) {
  if (!cpu_features().avx512_vnni) return 0.0;
  return detail::loop_peak_gflops(detail::int_dot_loop<false>, 12 * 128, passes);
}

// The same for int16 x int16 pairs (vpdpwssd, 32 multiply-adds an instruction).
inline double measure_int16_dot_peak_gops(int passes = 5) {
  if (!cpu_features().avx512_vnni) return 0.0;
  return detail::loop_peak_gflops(detail::int_dot_loop<true>, 12 * 64, passes);
}

}  // namespace ff::bench
