// Benchmark of gemm::linear (Y = X W^T) on DeepSeek-V3 projection shapes, BF16 and FP8 weights,
// and GGUF block weights (Q8_0, Q4_K: `gemm_linear_block` lines).
//
// Decode (small m) is bounded by memory bandwidth, so each case reports the weight bytes read
// per second against the machine's read bandwidth measured in the same run (frac_bw). Prefill
// (large m) is bounded by FMA throughput and is read as GFLOPs. The baseline is the reference
// backend (FF_ISA=scalar) on the same shapes, same threads; ratio = t_ref / t.
//
// Every timed call reads a different copy of the weight, and the copies together exceed the
// last-level cache many times over, so decode figures are DRAM figures, not L3 figures.
//
// Block weights: where linear takes the integer kernels (AVX512-VNNI: Q4_K, Q8_0 past 8 rows;
// kernel=int8) the fp32 kernel is timed too in alternated rounds (float_GBps). For m <= 16 the
// baseline is the read bandwidth (ratio = frac_bw: weight bytes / time against the bound); for
// larger m it is BF16 linear on the same shape in the same run (ratio = t_bf16 / t), and
// frac_peak puts GFLOPs against the peak of the kernel's instruction.
//
// Usage: bench_gemm_linear [--quick] [--rows M] [--blocks]   (--rows: only the cases with m == M;
// --blocks: only the block-weight cases; FF_NUM_THREADS sets the threads, FF_ISA the backend)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/core.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"

namespace ff::bench {
namespace {

constexpr size_t kRotationBytes = size_t(1) << 30;  // > 2x any last-level cache we run on

// `copies` identical random weights of one shape, each with its own memory.
struct WeightSet {
  DType dtype;
  int64_t n, k;
  size_t bytes_per_copy = 0;  // weight + scales, what one call has to read
  std::vector<std::unique_ptr<AlignedBuffer>> data;
  std::vector<float> scales;
  std::vector<gemm::Weight> copies;

  WeightSet(DType dt, int64_t n_, int64_t k_, bool rotate) : dtype(dt), n(n_), k(k_) {
    const size_t wbytes = size_t(n * k) * dtype_size(dt);
    const int count = rotate ? int(std::max<size_t>(2, (kRotationBytes + wbytes - 1) / wbytes)) : 1;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 0.02f);
    const int64_t kb = (k + gemm::kFp8Block - 1) / gemm::kFp8Block;
    if (dt == DType::F8_E4M3) {
      scales.resize(size_t(((n + gemm::kFp8Block - 1) / gemm::kFp8Block) * kb));
      for (float& s : scales) s = 0.02f / 448.f * (1.f + 0.1f * normal(rng));
    }
    for (int c = 0; c < count; ++c) {
      data.push_back(std::make_unique<AlignedBuffer>(wbytes));
      uint8_t* p = data.back()->data();
      if (c > 0) {
        std::memcpy(p, data[0]->data(), wbytes);
      } else if (dt == DType::BF16) {
        auto* h = reinterpret_cast<uint16_t*>(p);
        for (int64_t i = 0; i < n * k; ++i) h[i] = f32_to_bf16(normal(rng));
      } else {
        // Block-quantised like the checkpoints: |w| / scale stays within e4m3's 448.
        for (int64_t i = 0; i < n * k; ++i)
          p[i] = f32_to_e4m3(std::clamp(normal(rng) * 448.f / 0.06f, -448.f, 448.f));
      }
      gemm::Weight w;
      w.dtype = dt;
      w.data = p;
      w.n = n;
      w.k = k;
      w.ld = k;
      w.scale_inv = scales.empty() ? nullptr : scales.data();
      copies.push_back(w);
    }
    bytes_per_copy = wbytes + scales.size() * sizeof(float);
  }
};

// `copies` identical block-quantized weights: a few rows quantized from Gaussian floats by our
// quantizers, repeated over the matrix (the values do not change the speed).
struct BlockWeightSet {
  gemm::Block block;
  int64_t n, k;
  size_t bytes_per_copy = 0;
  std::vector<std::unique_ptr<AlignedBuffer>> data;
  std::vector<gemm::Weight> copies;

  BlockWeightSet(gemm::Block b, int64_t n_, int64_t k_) : block(b), n(n_), k(k_) {
    const gemm::GgufType t = gemm::block_gguf_type(b);
    const int64_t rb = gemm::row_bytes(t, k);
    const size_t wbytes = size_t(n * rb);
    const int count = int(std::max<size_t>(2, (kRotationBytes + wbytes - 1) / wbytes));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 0.02f);
    constexpr int64_t kDistinctRows = 16;
    std::vector<uint8_t> rows(size_t(kDistinctRows * rb));
    std::vector<float> x(static_cast<size_t>(k));
    for (int64_t r = 0; r < kDistinctRows; ++r) {
      for (float& v : x) v = normal(rng);
      if (b == gemm::Block::Q8_0)
        gemm::quantize_q8_0(x.data(), k, rows.data() + r * rb);
      else
        gemm::quantize_q4_k(x.data(), k, rows.data() + r * rb);
    }
    for (int c = 0; c < count; ++c) {
      data.push_back(std::make_unique<AlignedBuffer>(wbytes));
      uint8_t* p = data.back()->data();
      if (c > 0)
        std::memcpy(p, data[0]->data(), wbytes);
      else
        for (int64_t r = 0; r < n; ++r)
          std::memcpy(p + r * rb, rows.data() + (r % kDistinctRows) * rb, size_t(rb));
      gemm::Weight w;
      w.block = b;
      w.data = p;
      w.n = n;
      w.k = k;
      w.ld = k;
      copies.push_back(w);
    }
    bytes_per_copy = wbytes;
  }
};

// Times of one linear call, each call on the next weight copy.
Timing time_linear(Isa isa, const WeightSet& ws, const float* x, int64_t m, float* y, int reps,
                   int warmup) {
  size_t next = 0;
  return time_runs(
      [&] {
        gemm::linear_with_isa(isa, x, m, ws.k, ws.copies[next], y, ws.n);
        next = (next + 1) % ws.copies.size();
      },
      reps, warmup);
}

template <class Set>
Timing time_linear_set(Isa isa, const Set& ws, const float* x, int64_t m, float* y, int reps,
                       int warmup, std::optional<gemm::BlockKernel> kernel = std::nullopt) {
  size_t next = 0;
  return time_runs(
      [&] {
        if (kernel)
          gemm::linear_with_kernels(isa, gemm::bf16_gemm_kernel(), *kernel, x, m, ws.k,
                                    ws.copies[next], y, ws.n);
        else
          gemm::linear_with_isa(isa, x, m, ws.k, ws.copies[next], y, ws.n);
        next = (next + 1) % ws.copies.size();
      },
      reps, warmup);
}

const char* dtype_label(DType dt) {
  return dt == DType::BF16 ? "bf16" : "fp8";
}

struct Machine {
  double read_gbps;   // memory read bandwidth
  double fma_gflops;  // fp32 FMA peak
  double int8_gops;   // vpdpbusd peak (2 ops a multiply-add), 0 without AVX512-VNNI
  double int16_gops;  // vpdpwssd peak (the Q8_0 panel kernel's instruction)
};

void run_case(const WeightSet& ws, int64_t m, const Machine& mach, bool quick) {
  const double bandwidth_gbps = mach.read_gbps;
  std::vector<float> x(size_t(m * ws.k)), y(size_t(m * ws.n));
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  for (float& v : x) v = uni(rng);

  const double flops = 2.0 * double(m) * double(ws.n) * double(ws.k);
  // Aim for ~0.3 s of timed calls per case (at least 5), fewer for the slow reference.
  const double guess = std::max(double(ws.bytes_per_copy) / (bandwidth_gbps * 1e9), flops / 2e11);
  const int reps = quick ? 3 : std::clamp(int(0.3 / guess), 5, 200);
  const Timing timing = time_linear(active_isa(), ws, x.data(), m, y.data(), reps, /*warmup=*/2);
  const double t = timing.median;
  const double t_ref =
      time_linear(Isa::Scalar, ws, x.data(), m, y.data(), m <= 4 && !quick ? 3 : 1, /*warmup=*/0)
          .median;

  const double gbps = double(ws.bytes_per_copy) / t / 1e9;
  std::printf(
      "BENCH gemm_linear %s_%ldx%ld_m%ld m=%ld n=%ld k=%ld dtype=%s isa=%s time_us=%.1f "
      "GBps=%.2f GFLOPs=%.2f frac_bw=%.3f frac_fma=%.3f best_GBps=%.2f baseline=ref "
      "ratio=%.2f\n",
      dtype_label(ws.dtype), long(ws.n), long(ws.k), long(m), long(m), long(ws.n), long(ws.k),
      dtype_name(ws.dtype), isa_name(active_isa()), t * 1e6, gbps, flops / t / 1e9,
      gbps / bandwidth_gbps, flops / t / 1e9 / mach.fma_gflops,
      double(ws.bytes_per_copy) / timing.best / 1e9, t_ref / t);
  std::fflush(stdout);
}

// Block weights: small m against the read bandwidth, large m against BF16 on the same shape.
void run_block_case(const BlockWeightSet& ws, const WeightSet& bf16, int64_t m, const Machine& mach,
                    bool quick) {
  std::vector<float> x(size_t(m * ws.k)), y(size_t(m * ws.n));
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  for (float& v : x) v = uni(rng);
  const double flops = 2.0 * double(m) * double(ws.n) * double(ws.k);
  const double guess = std::max(double(ws.bytes_per_copy) / (mach.read_gbps * 1e9), flops / 1.5e11);
  const int reps = quick ? 3 : std::clamp(int(0.3 / guess), 5, 200);
  // Where linear runs the int8 kernel, the fp32 one too, in alternated rounds (best median of
  // each), so the two are compared under the same load.
  const gemm::BlockKernel kernel =
      active_isa() == Isa::Avx512 ? gemm::block_kernel() : gemm::BlockKernel::Float;
  const bool int8 = gemm::int8_block_path(active_isa(), kernel, ws.copies[0], m);
  Timing timing = time_linear_set(active_isa(), ws, x.data(), m, y.data(), reps, 2, kernel);
  double t_float = 0;
  for (int round = 0; int8 && round < 3; ++round) {
    const double tf =
        time_linear_set(active_isa(), ws, x.data(), m, y.data(), reps, 1, gemm::BlockKernel::Float)
            .median;
    t_float = round == 0 ? tf : std::min(t_float, tf);
    const Timing ti = time_linear_set(active_isa(), ws, x.data(), m, y.data(), reps, 1, kernel);
    if (ti.median < timing.median) timing = ti;
  }
  const double t = timing.median;
  const double gbps = double(ws.bytes_per_copy) / t / 1e9;
  const char* type = ws.block == gemm::Block::Q8_0 ? "q8_0" : "q4_k";
  double ratio = gbps / mach.read_gbps;
  const char* baseline = "read_bw";
  double t_bf16 = 0;
  if (m > 16) {
    t_bf16 = time_linear_set(active_isa(), bf16, x.data(), m, y.data(), reps, 2).median;
    ratio = t_bf16 / t;
    baseline = "bf16";
  }
  // The compute bound of the kernel that ran: vpdpbusd's peak for the int8 kernels (vpdpwssd's
  // for Q8_0's panel kernel), else fp32 FMA (Q8_0 at few rows).
  const bool int8_run = int8 && mach.int8_gops > 0;
  const double peak = !int8_run                       ? mach.fma_gflops
                      : ws.block == gemm::Block::Q8_0 ? mach.int16_gops
                                                      : mach.int8_gops;
  std::printf(
      "BENCH gemm_linear_block %s_%ldx%ld_m%ld m=%ld n=%ld k=%ld type=%s isa=%s kernel=%s "
      "time_us=%.1f GBps=%.2f GFLOPs=%.2f frac_bw=%.3f frac_peak=%.3f float_GBps=%.2f "
      "best_GBps=%.2f bf16_GFLOPs=%.2f baseline=%s ratio=%.3f\n",
      type, long(ws.n), long(ws.k), long(m), long(m), long(ws.n), long(ws.k), type,
      isa_name(active_isa()), int8 ? "int8" : "float", t * 1e6, gbps, flops / t / 1e9,
      gbps / mach.read_gbps, flops / t / 1e9 / peak,
      t_float > 0 ? double(ws.bytes_per_copy) / t_float / 1e9 : gbps,
      double(ws.bytes_per_copy) / timing.best / 1e9, t_bf16 > 0 ? flops / t_bf16 / 1e9 : 0.0,
      baseline, ratio);
  std::fflush(stdout);
}

void run_blocks(int64_t only_rows, const Machine& mach, bool quick) {
  struct Shape {
    int64_t n, k;
  };
  const Shape shapes[] = {{2048, 7168}, {7168, 2048}, {4096, 512}};
  const int64_t rows[] = {1, 4, 16, 128, 512};
  for (const Shape& s : shapes) {
    const bool large = std::any_of(std::begin(rows), std::end(rows), [&](int64_t m) {
      return m > 16 && (only_rows == 0 || m == only_rows);
    });
    const WeightSet bf16(DType::BF16, large ? s.n : 1, large ? s.k : 1, /*rotate=*/false);
    for (gemm::Block b : {gemm::Block::Q8_0, gemm::Block::Q4_K}) {
      const BlockWeightSet ws(b, s.n, s.k);
      for (int64_t m : rows)
        if (only_rows == 0 || m == only_rows) run_block_case(ws, bf16, m, mach, quick);
    }
  }
}

int run(int argc, char** argv) {
  bool quick = false, blocks_only = false;
  int64_t only_rows = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--blocks")) {
      blocks_only = true;
    } else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) {
      only_rows = std::atol(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--rows M] [--blocks]\n", argv[0]);
      return 2;
    }
  }
  auto wanted = [&](int64_t m) { return only_rows == 0 || m == only_rows; };
  const Machine mach{measure_read_bandwidth_gbps(), measure_fp32_fma_peak_gflops(),
                     measure_int8_dot_peak_gops(), measure_int16_dot_peak_gops()};
  std::printf(
      "# gemm_linear: %d threads, backend %s; memory read bandwidth %.2f GB/s, fp32 FMA peak "
      "%.1f GFLOP/s, bf16 dot (vdpbf16ps) peak %.1f GFLOP/s, int8 dot (vpdpbusd) peak %.1f "
      "GOP/s, int16 dot (vpdpwssd) peak %.1f GOP/s (best runs)\n",
      ThreadPool::global().size(), isa_name(active_isa()), mach.read_gbps, mach.fma_gflops,
      measure_bf16_dot_peak_gflops(), mach.int8_gops, mach.int16_gops);
  std::printf(
      "# GBps: weight bytes (+ FP8 scales) one call reads / time; frac_bw = GBps / read "
      "bandwidth; GFLOPs = 2mnk / time; frac_fma = GFLOPs / fp32 FMA peak; frac_peak (blocks) = "
      "GFLOPs / the peak of the kernel's instruction (int8: vpdpbusd, Q8_0 vpdpwssd); times are "
      "medians "
      "(best_GBps: the fastest run)\n");
  std::fflush(stdout);

  struct Shape {
    int64_t n, k;
  };
  const Shape shapes[] = {{7168, 2048}, {2048, 7168}, {4096, 7168}};
  const int64_t rows[] = {1, 4, 16, 128};
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    if (blocks_only) break;
    for (const Shape& s : shapes) {
      if (std::none_of(std::begin(rows), std::end(rows), wanted)) continue;
      const WeightSet ws(dt, s.n, s.k, /*rotate=*/true);
      for (int64_t m : rows)
        if (wanted(m)) run_case(ws, m, mach, quick);
    }
    // One ~256 MiB weight on its own: far beyond cache even without the rotation.
    if (wanted(1)) {
      const WeightSet big(dt, 16384, dt == DType::BF16 ? 8192 : 16384, /*rotate=*/true);
      run_case(big, 1, mach, quick);
    }
  }
  run_blocks(only_rows, mach, quick);
  return 0;
}

}  // namespace
}  // namespace ff::bench

int main(int argc, char** argv) {
  try {
    return ff::bench::run(argc, argv);
  } catch (const ff::Error& e) {
    std::fprintf(stderr, "bench_gemm_linear: %s\n", e.what());
    return 1;
  }
}
