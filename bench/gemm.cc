// Benchmark of the DeepGEMM-style FP8 GEMMs (gemm::fp8_gemm_nt and the m-grouped forms) on the
// DeepSeek-V3 shapes, against oneDNN's BF16 matmul and OpenBLAS SGEMM on the same dequantized
// problem in the same run (when the bench was built with them: FF_HAVE_DNNL / FF_HAVE_OPENBLAS).
//
// Per case: GFLOPs = 2mnk / t; GBps = bytes / t with DeepGEMM's count (A and B at 1 byte, the
// fp32 scales, D in bf16); frac_bw = weight bytes (1 per parameter + scales) / t / measured read
// bandwidth (the decode roofline); frac_bf16 = GFLOPs / measured vdpbf16ps peak, frac_fma =
// GFLOPs / fp32 FMA peak; frac_roof = max(flops / bf16 peak (fp32 FMA peak without AVX512-BF16),
// weight bytes / bandwidth) / t. vs_dnnl_bf16 / vs_openblas_f32 = t_baseline / t (> 1: faster).
// For m <= 16 every call reads another copy of the weights (>= 512 MiB in all, for every
// library), so decode figures are DRAM figures. Times are medians.
//
// BF16 cases (`kind=bf16`, m > 16): gemm::linear on the dense shapes' weights rounded to bf16
// (the oneDNN baseline's B), fp32 X, with each BF16 prefill kernel: the process's choice
// (`kernel=`, gemm::bf16_gemm_kernel: vdpbf16ps on X rounded to bf16 on Zen 4 / Zen 5) against
// oneDNN on the same bf16 data; fma_us / fma_GFLOPs: the fp32-FMA kernel in the same run.
//
// Usage: bench_gemm [--quick] [--rows M] [--no-grouped | --grouped-only | --bf16-only]
// (FF_NUM_THREADS sets the threads; the baselines get the same count through OMP_NUM_THREADS /
// openblas_set_num_threads)
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "core/core.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"

#ifdef FF_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif
#ifdef FF_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace ff::bench {
namespace {

constexpr size_t kRotationBytes = size_t(512) << 20;

struct Machine {
  double read_gbps, fma_gflops, bf16_gflops;
};

// G experts' weights [G, n, k]: FP8 (+ 128x128 scales), the dequantized bf16 and fp32 copies,
// each replicated `copies` times in separate memory.
struct Experts {
  int64_t g, n, k, kb, nb;
  int copies_fp8 = 1, copies_bf16 = 1, copies_f32 = 1;
  std::vector<std::unique_ptr<AlignedBuffer>> fp8, bf16, f32;
  std::vector<float> scales;

  Experts(int64_t g_, int64_t n_, int64_t k_, bool rotate, bool baselines)
      : g(g_), n(n_), k(k_), kb((k_ + 127) / 128), nb((n_ + 127) / 128) {
    const size_t elems = size_t(g * n * k);
    std::vector<float> w(size_t(n * k));
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 0.02f);
    auto q = std::make_unique<AlignedBuffer>(elems);
    scales.resize(size_t(g * nb * kb));
    for (int64_t e = 0; e < g; ++e) {
      for (float& v : w) v = nd(rng);
      gemm::quantize_per_block(w.data(), n, k, k, q->data() + e * n * k,
                               scales.data() + e * nb * kb);
    }
    const auto count = [&](size_t bytes) {
      return rotate ? int(std::max<size_t>(2, (kRotationBytes + bytes - 1) / bytes)) : 1;
    };
    copies_fp8 = count(elems);
    for (int c = 1; c < copies_fp8; ++c) {
      fp8.push_back(std::make_unique<AlignedBuffer>(elems));
      std::memcpy(fp8.back()->data(), q->data(), elems);
    }
    fp8.insert(fp8.begin(), std::move(q));
    if (!baselines) return;
    // Dequantized (exactly) to fp32, then bf16 (the bf16 rounding of the dequantized weights).
    auto f = std::make_unique<AlignedBuffer>(elems * 4);
    auto* fp = reinterpret_cast<float*>(f->data());
    const float* t = e4m3_table();
    for (int64_t e = 0; e < g; ++e)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const size_t idx = size_t((e * n + i) * k + j);
          fp[idx] = t[fp8[0]->data()[idx]] * scales[size_t((e * nb + i / 128) * kb + j / 128)];
        }
    copies_bf16 = count(elems * 2);
    for (int c = 0; c < copies_bf16; ++c) {
      bf16.push_back(std::make_unique<AlignedBuffer>(elems * 2));
      convert_f32_to_bf16(fp, reinterpret_cast<uint16_t*>(bf16.back()->data()), elems);
    }
    copies_f32 = count(elems * 4);
    for (int c = 1; c < copies_f32; ++c) {
      f32.push_back(std::make_unique<AlignedBuffer>(elems * 4));
      std::memcpy(f32.back()->data(), fp, elems * 4);
    }
    f32.insert(f32.begin(), std::move(f));
  }
  size_t weight_bytes() const { return size_t(g * n * k) + scales.size() * 4; }
};

struct Result {
  double t = 0;
};

#ifdef FF_HAVE_DNNL
// oneDNN BF16 matmul, src [m, k] bf16, weights [k, n] stored n-major ("ba": the [n, k] row-major
// layout of the weights), dst fp32; one primitive per (m, n, k), run once per expert.
struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  double time(const Experts& ex, const std::vector<int64_t>& ms, const uint16_t* x, float* y,
              int reps) {
    using md = dnnl::memory::desc;
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    std::vector<dnnl::matmul> prims;
    std::vector<md> amd, cmd;
    const md bmd({ex.k, ex.n}, dt::bf16, tag::ba);
    for (int64_t m_e : ms) {
      const int64_t m = std::max<int64_t>(m_e, 1);  // oneDNN traps on m = 0 (not run anyway)
      amd.emplace_back(dnnl::memory::dims{m, ex.k}, dt::bf16, tag::ab);
      cmd.emplace_back(dnnl::memory::dims{m, ex.n}, dt::f32, tag::ab);
#if DNNL_VERSION_MAJOR >= 3
      prims.emplace_back(dnnl::matmul::primitive_desc(eng, amd.back(), bmd, cmd.back()));
#else
      prims.emplace_back(
          dnnl::matmul::primitive_desc(dnnl::matmul::desc(amd.back(), bmd, cmd.back()), eng));
#endif
    }
    size_t next = 0;
    return time_runs(
               [&] {
                 const uint8_t* wb = ex.bf16[next]->data();
                 next = (next + 1) % ex.bf16.size();
                 int64_t row = 0;
                 for (size_t e = 0; e < ms.size(); ++e) {
                   if (ms[e] == 0) continue;
                   dnnl::memory a(amd[e], eng, const_cast<uint16_t*>(x + row * ex.k));
                   dnnl::memory b(bmd, eng, const_cast<uint8_t*>(wb + size_t(e) * ex.n * ex.k * 2));
                   dnnl::memory c(cmd[e], eng, y + row * ex.n);
                   prims[e].execute(strm,
                                    {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
                   row += ms[e];
                 }
                 strm.wait();
               },
               reps, 1)
        .median;
  }
};
#endif

#ifdef FF_HAVE_OPENBLAS
double time_openblas(const Experts& ex, const std::vector<int64_t>& ms, const float* x, float* y,
                     int reps) {
  size_t next = 0;
  return time_runs(
             [&] {
               const float* wb = reinterpret_cast<const float*>(ex.f32[next]->data());
               next = (next + 1) % ex.f32.size();
               int64_t row = 0;
               for (size_t e = 0; e < ms.size(); ++e) {
                 if (ms[e] == 0) continue;
                 cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(ms[e]), int(ex.n),
                             int(ex.k), 1.f, x + row * ex.k, int(ex.k),
                             wb + size_t(e) * ex.n * ex.k, int(ex.k), 0.f, y + row * ex.n,
                             int(ex.n));
                 row += ms[e];
               }
             },
             reps, 1)
      .median;
}
#endif

// kind: "dense" (G = 1), "contiguous" (rows per expert, each segment padded to 128) or
// "masked" (max_m rows per group, ms[e] valid).
void run_case(const char* kind, const Experts& ex, const std::vector<int64_t>& ms,
              const Machine& mach, bool quick) {
  const int64_t G = ex.g, n = ex.n, k = ex.k, kb = ex.kb;
  int64_t valid = 0;
  for (int64_t m : ms) valid += m;
  int64_t rows = valid;  // rows of A / D as laid out
  std::vector<int32_t> idx;
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());
  if (!std::strcmp(kind, "contiguous")) {
    for (int64_t e = 0; e < G; ++e) {
      for (int64_t r = 0; r < ms[size_t(e)]; ++r) idx.push_back(int32_t(e));
      while (idx.size() % 128) idx.push_back(-1);
    }
    rows = int64_t(idx.size());
  } else if (!std::strcmp(kind, "masked")) {
    rows = G * max_m;
  }
  // Activations: quantized per token (ours); the same values dequantized for the baselines.
  std::vector<float> xf(size_t(rows * k));
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (float& v : xf) v = nd(rng);
  std::vector<uint8_t> xq(xf.size());
  std::vector<float> xs(size_t(rows * kb));
  gemm::quantize_per_token(xf.data(), rows, k, k, xq.data(), xs.data());
  // Baselines' A: the valid rows, expert after expert, dequantized.
  std::vector<float> xd(size_t(valid * k));
  {
    int64_t src = 0, dst = 0;
    for (int64_t e = 0; e < G; ++e) {
      if (!std::strcmp(kind, "masked")) src = e * max_m;
      for (int64_t r = 0; r < ms[size_t(e)]; ++r, ++src, ++dst)
        for (int64_t j = 0; j < k; ++j)
          xd[size_t(dst * k + j)] =
              e4m3_table()[xq[size_t(src * k + j)]] * xs[size_t(src * kb + j / 128)];
      if (!std::strcmp(kind, "contiguous")) src = (src + 127) / 128 * 128;
    }
  }
  std::vector<uint16_t> d(size_t(rows * n));
  gemm::Matrix a;
  a.data = xq.data();
  a.rows = !std::strcmp(kind, "masked") ? max_m : rows;
  a.k = k;
  a.scales = xs.data();
  size_t next = 0;
  const double flops = 2.0 * double(valid) * double(n) * double(k);
  const double wbytes = double(ex.weight_bytes());
  const double bytes = wbytes + double(valid) * double(k + 4 * kb + 2 * n);
  const double peak = mach.bf16_gflops > 0 ? mach.bf16_gflops : mach.fma_gflops;
  const double guess = std::max(wbytes / (mach.read_gbps * 1e9), flops / (peak * 1e9) * 2);
  const int reps = quick ? 3 : std::clamp(int(0.5 / guess), 3, 100);
  // Before each library's runs: let the previous one's idle threads stop spinning.
  const auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  settle();
  const double t = time_runs(
                       [&] {
                         gemm::Matrix b;
                         b.data = ex.fp8[next]->data();
                         next = (next + 1) % ex.fp8.size();
                         b.rows = n;
                         b.k = k;
                         b.scales = ex.scales.data();
                         const gemm::Output o{DType::BF16, d.data(), 0, nullptr, 0};
                         if (!std::strcmp(kind, "contiguous"))
                           gemm::m_grouped_fp8_gemm_nt_contiguous(a, b, G, idx.data(), o);
                         else if (!std::strcmp(kind, "masked")) {
                           std::vector<int32_t> mm(ms.begin(), ms.end());
                           gemm::m_grouped_fp8_gemm_nt_masked(a, b, G, mm.data(), max_m, o);
                         } else
                           gemm::fp8_gemm_nt(a, b, o);
                       },
                       reps, 1)
                       .median;
  double t_dnnl = 0, t_blas = 0;
  std::vector<float> y(size_t(valid * n));
#ifdef FF_HAVE_DNNL
  {
    std::vector<uint16_t> xb(xd.size());
    convert_f32_to_bf16(xd.data(), xb.data(), xd.size());
    static Dnnl dnnl;
    settle();
    t_dnnl = dnnl.time(ex, ms, xb.data(), y.data(), reps);
  }
#endif
#ifdef FF_HAVE_OPENBLAS
  settle();
  t_blas = time_openblas(ex, ms, xd.data(), y.data(), reps);
#endif
  const double gflops = flops / t / 1e9;
  const double roof = std::max(flops / (peak * 1e9), wbytes / (mach.read_gbps * 1e9));
  char name[96];
  std::snprintf(name, sizeof name, "%s_g%ld_%ldx%ld_m%ld", kind, long(G), long(n), long(k),
                long(valid / G));
  std::printf(
      "BENCH gemm %s kind=%s groups=%ld m=%ld n=%ld k=%ld time_us=%.1f GFLOPs=%.2f GBps=%.2f "
      "frac_bw=%.3f frac_bf16=%.3f frac_fma=%.3f frac_roof=%.3f dnnl_bf16_us=%.1f "
      "vs_dnnl_bf16=%.2f openblas_f32_us=%.1f vs_openblas_f32=%.2f\n",
      name, kind, long(G), long(valid), long(n), long(k), t * 1e6, gflops, bytes / t / 1e9,
      wbytes / t / 1e9 / mach.read_gbps, mach.bf16_gflops > 0 ? gflops / mach.bf16_gflops : 0.0,
      gflops / mach.fma_gflops, roof / t, t_dnnl * 1e6, t_dnnl > 0 ? t_dnnl / t : 0.0, t_blas * 1e6,
      t_blas > 0 ? t_blas / t : 0.0);
  std::fflush(stdout);
}

// One BF16 linear case (see the header): the chosen kernel, the FMA kernel and oneDNN.
void run_bf16_case(const Experts& ex, int64_t m, const Machine& mach, bool quick) {
  const int64_t n = ex.n, k = ex.k;
  std::vector<float> x(size_t(m * k)), y(size_t(m * n));
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (float& v : x) v = nd(rng);
  gemm::Weight w;
  w.dtype = DType::BF16;
  w.data = ex.bf16[0]->data();
  w.n = n;
  w.k = k;
  w.ld = k;
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const double peak = mach.bf16_gflops > 0 ? mach.bf16_gflops : mach.fma_gflops;
  const int reps = quick ? 5 : std::clamp(int(0.5 / (flops / (peak * 1e9) * 2)), 5, 100);
  const auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  const auto time_kernel = [&](gemm::Bf16Kernel kernel) {
    settle();
    return time_runs(
               [&] { gemm::linear_with_isa(active_isa(), kernel, x.data(), m, k, w, y.data(), n); },
               reps, 1)
        .median;
  };
  const gemm::Bf16Kernel chosen = gemm::bf16_gemm_kernel();
  const double t = time_kernel(chosen);
  const double t_fma = chosen == gemm::Bf16Kernel::Fma ? t : time_kernel(gemm::Bf16Kernel::Fma);
  double t_dnnl = 0;
#ifdef FF_HAVE_DNNL
  {
    std::vector<uint16_t> xb(x.size());
    convert_f32_to_bf16(x.data(), xb.data(), x.size());
    static Dnnl dnnl;
    settle();
    t_dnnl = dnnl.time(ex, {m}, xb.data(), y.data(), reps);
  }
#endif
  const double gflops = flops / t / 1e9;
  char name[96];
  std::snprintf(name, sizeof name, "bf16_%ldx%ld_m%ld", long(n), long(k), long(m));
  std::printf(
      "BENCH gemm %s kind=bf16 kernel=%s m=%ld n=%ld k=%ld time_us=%.1f GFLOPs=%.2f "
      "frac_bf16=%.3f frac_fma=%.3f fma_us=%.1f fma_GFLOPs=%.2f dnnl_bf16_us=%.1f "
      "vs_dnnl_bf16=%.2f\n",
      name, chosen == gemm::Bf16Kernel::Dot ? "dot" : "fma", long(m), long(n), long(k), t * 1e6,
      gflops, mach.bf16_gflops > 0 ? gflops / mach.bf16_gflops : 0.0, gflops / mach.fma_gflops,
      t_fma * 1e6, flops / t_fma / 1e9, t_dnnl * 1e6, t_dnnl > 0 ? t_dnnl / t : 0.0);
  std::fflush(stdout);
}

int run(int argc, char** argv) {
  bool quick = false, grouped = true, dense = true, bf16 = true;
  int64_t only_rows = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--no-grouped")) {
      grouped = false;
    } else if (!std::strcmp(argv[i], "--grouped-only")) {
      dense = bf16 = false;
    } else if (!std::strcmp(argv[i], "--bf16-only")) {
      dense = grouped = false;
    } else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) {
      only_rows = std::atol(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--rows M] [--no-grouped | --grouped-only | --bf16-only]\n",
                   argv[0]);
      return 2;
    }
  }
  const int threads = ThreadPool::global().size();
#ifdef FF_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
  const bool baselines =
#if defined(FF_HAVE_DNNL) || defined(FF_HAVE_OPENBLAS)
      true;
#else
      false;
#endif
  const Machine mach{measure_read_bandwidth_gbps(), measure_fp32_fma_peak_gflops(),
                     measure_bf16_dot_peak_gflops()};
  std::printf(
      "# gemm: %d threads, backend %s; read bandwidth %.2f GB/s, fp32 FMA peak %.1f GFLOP/s, "
      "bf16 dot peak %.1f GFLOP/s; baselines:%s%s\n",
      threads, isa_name(active_isa()), mach.read_gbps, mach.fma_gflops, mach.bf16_gflops,
#ifdef FF_HAVE_DNNL
      " oneDNN-bf16-matmul",
#else
      "",
#endif
#ifdef FF_HAVE_OPENBLAS
      " OpenBLAS-sgemm"
#else
      ""
#endif
  );
  std::fflush(stdout);
  const int64_t shapes[][2] = {{2112, 7168},  {576, 7168},  {24576, 1536}, {32768, 512},
                               {7168, 16384}, {4096, 7168}, {7168, 2048}};
  const int64_t all_rows[] = {1, 16, 128, 512};
  for (const auto& s : shapes) {
    if (!dense) break;
    const bool small_wanted = only_rows == 0 || only_rows <= 16;
    const bool big_wanted = only_rows == 0 || only_rows > 16;
    if (small_wanted) {
      const Experts ex(1, s[0], s[1], /*rotate=*/true, baselines);
      for (int64_t m : all_rows)
        if (m <= 16 && (only_rows == 0 || m == only_rows)) run_case("dense", ex, {m}, mach, quick);
    }
    if (big_wanted) {
      const Experts ex(1, s[0], s[1], /*rotate=*/false, baselines);
      for (int64_t m : all_rows)
        if (m > 16 && (only_rows == 0 || m == only_rows)) run_case("dense", ex, {m}, mach, quick);
    }
  }
  for (const auto& s : shapes) {
    if (!bf16 || (only_rows != 0 && only_rows <= 16)) break;
    const Experts ex(1, s[0], s[1], /*rotate=*/false, /*baselines=*/true);
    for (int64_t m : all_rows)
      if (m > 16 && (only_rows == 0 || m == only_rows)) run_bf16_case(ex, m, mach, quick);
  }
  if (grouped) {
    // MoE: 8 experts of 2048 x 7168 (gate / up) and 7168 x 2048 (down).
    for (const auto& s : {std::array<int64_t, 2>{2048, 7168}, std::array<int64_t, 2>{7168, 2048}}) {
      {
        const Experts ex(8, s[0], s[1], /*rotate=*/false, baselines);
        run_case("contiguous", ex, {256, 200, 0, 128, 300, 256, 100, 220}, mach, quick);
      }
      {
        const Experts ex(8, s[0], s[1], /*rotate=*/true, baselines);
        run_case("masked", ex, {4, 2, 1, 4, 3, 4, 0, 2}, mach, quick);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace ff::bench

int main(int argc, char** argv) {
  // oneDNN here runs on OpenMP: give it the pool's thread count before its runtime starts.
  // Passive waiting: libgomp's idle threads otherwise spin for ~0.2 s after every region and
  // take the cores from whichever library is timed next.
  if (!std::getenv("OMP_NUM_THREADS")) {
    const std::string n = std::to_string(ff::ThreadPool::global().size());
    setenv("OMP_NUM_THREADS", n.c_str(), 1);
  }
  if (!std::getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  try {
    return ff::bench::run(argc, argv);
  } catch (const ff::Error& e) {
    std::fprintf(stderr, "bench_gemm: %s\n", e.what());
    return 1;
  }
}
