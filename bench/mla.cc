// bench_mla: MLA decode (src/mla) against the machine's roofline and the reference backend.
//
// Counting follows FlashMLA's benchmark (tests/test_flash_mla*.py):
//   FLOPs = 2 * s_q * sum(s_k) * h_q * (d + dv)            (causal masking not subtracted)
//   bytes = KV + Q + O = sum(s_k) * h_kv * row_bytes + b * s_q * h_q * (d + dv) * 2
// with row_bytes 1152 (BF16) or 656 (FP8). The roofline bound of a case is the lower of
// peak_bf16 and bandwidth * FLOPs/byte; both limits are measured in this run on all pool threads
// (bench_util.h: read bandwidth over 1 GiB, vdpbf16ps register-only loop).
// Each case prints: time, GB/s, GFLOP/s, the roofline fraction, and the speed-up over the
// reference backend. The reference is timed on the first sequence only (it is linear in b; the
// full batch would take minutes) and scaled by b.
//
// Usage: FF_NUM_THREADS=2 bench_mla [--quick]     (FF_ISA picks the backend under test)
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "mla/cpu/kernels.h"
#include "mla/mla.h"

namespace {

using namespace ff;
using namespace ff::mla;

struct Case {
  int64_t b, s_q, h_q;
  bool fp8;
};

struct Setup {
  int64_t b = 0, s_q = 0, h_q = 0, len = 0;
  bool fp8 = false;
  std::vector<uint16_t> q;
  std::vector<uint8_t> cache;
  std::vector<int32_t> block_table, seqlens;
  std::vector<uint16_t> out;
  std::vector<float> lse;
};

Setup make_setup(const Case& c, int64_t len) {
  Setup s;
  s.b = c.b, s.s_q = c.s_q, s.h_q = c.h_q, s.len = len, s.fp8 = c.fp8;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  s.q.resize(size_t(c.b * c.s_q * c.h_q * 576));
  for (auto& x : s.q) x = f32_to_bf16(nd(rng));
  const int64_t blocks_per_seq = (len + 63) / 64, num_blocks = c.b * blocks_per_seq;
  const int64_t row = c.fp8 ? kFp8TokenBytes : 576 * 2;
  s.cache.resize(size_t(num_blocks * 64 * row));
  std::vector<float> tmp(576);
  for (int64_t t = 0; t < num_blocks * 64; ++t) {
    for (auto& x : tmp) x = 0.5f * nd(rng);
    uint8_t* dst = s.cache.data() + t * row;
    if (c.fp8) {
      quantize_kv_fp8(TensorView(tmp.data(), DType::F32, {1, 576}),
                      TensorView(dst, DType::U8, {1, kFp8TokenBytes}));
    } else {
      convert_f32_to_bf16(tmp.data(), reinterpret_cast<uint16_t*>(dst), 576);
    }
  }
  // Physical pages interleaved across sequences, as a serving cache would hold them.
  s.block_table.resize(size_t(c.b * blocks_per_seq));
  for (int64_t i = 0; i < c.b; ++i)
    for (int64_t j = 0; j < blocks_per_seq; ++j)
      s.block_table[size_t(i * blocks_per_seq + j)] = int32_t(j * c.b + i);
  s.seqlens.assign(size_t(c.b), int32_t(len));
  s.out.resize(size_t(c.b * c.s_q * c.h_q * 512));
  s.lse.resize(size_t(c.b * c.h_q * c.s_q));
  return s;
}

// Times decoding the first `b` sequences of the setup on kernel `kid`.
bench::Timing time_decode(Setup& s, int64_t b, KernelId kid, int reps) {
  const int64_t blocks_per_seq = (s.len + 63) / 64;
  const int64_t num_blocks = s.b * blocks_per_seq;
  TensorView q(s.q.data(), DType::BF16, {b, s.s_q, s.h_q, 576});
  TensorView kc = s.fp8 ? TensorView(s.cache.data(), DType::U8, {num_blocks, 64, 1, kFp8TokenBytes})
                        : TensorView(s.cache.data(), DType::BF16, {num_blocks, 64, 1, 576});
  TensorView bt(s.block_table.data(), DType::I32, {b, blocks_per_seq});
  TensorView sl(s.seqlens.data(), DType::I32, {b});
  TensorView out(s.out.data(), DType::BF16, {b, s.s_q, s.h_q, 512});
  TensorView lse(s.lse.data(), DType::F32, {b, s.h_q, s.s_q});
  MlaSchedule sched = get_mla_metadata(sl, s.s_q * s.h_q, 1);
  return bench::time_runs(
      [&] { mla_decode_with_kernel(kid, q, kc, bt, sl, 512, sched, 0.f, true, out, lse); }, reps);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int64_t len = 4096;
  const Isa isa = active_isa();
  const double bw = bench::measure_read_bandwidth_gbps();
  const double peak = bench::measure_bf16_dot_peak_gflops();
  const double fma_peak = bench::measure_fp32_fma_peak_gflops();
  // Without AVX512-BF16 the kernels run f32 FMAs: that is the compute roof then.
  const double roof_flops = peak > 0 ? peak : fma_peak;
  std::printf(
      "# threads=%d isa=%s read_bw=%.1f GB/s bf16_dot_peak=%.1f GFLOP/s fp32_fma_peak=%.1f "
      "GFLOP/s\n",
      ThreadPool::global().size(), isa_name(isa), bw, peak, fma_peak);
  std::vector<Case> cases;
  for (bool fp8 : {false, true})
    for (int64_t b : {1, 8, 32})
      for (int64_t s_q : {1, 2})
        for (int64_t h_q : {16, 128}) {
          if (quick && b == 32) continue;
          cases.push_back({b, s_q, h_q, fp8});
        }
  const KernelId main_kernel = default_kernel(isa, DType::BF16, 576, 512);
  // The measured ratio is for the reader only: the kernel is chosen by CPU identity
  // (resolve_bf16_kernel), so that its rounding never depends on a timing.
  std::printf("# kernel=%s (bf16_dot_peak / fp32_fma_peak here: %.2f)\n", kernel_name(main_kernel),
              fma_peak > 0 ? peak / fma_peak : 0.0);
  for (const Case& c : cases) {
    Setup s = make_setup(c, len);
    const double flops = 2.0 * double(c.s_q) * double(c.b * len) * double(c.h_q) * (576 + 512);
    const double kv_bytes = double(c.b * len) * (c.fp8 ? double(kFp8TokenBytes) : 1152.0);
    const double bytes = kv_bytes + double(c.b * c.s_q * c.h_q) * (576 + 512) * 2.0;
    const double t_ref = time_decode(s, 1, KernelId::Ref, 1).median * double(c.b);
    // The default kernel, and on AVX512-BF16 CPUs the other BF16 kernel for comparison.
    std::vector<KernelId> kids{main_kernel};
    if (isa == Isa::Avx512 && cpu_features().avx512_bf16)
      kids.push_back(main_kernel == KernelId::Avx512Bf16 ? KernelId::Avx512F32
                                                         : KernelId::Avx512Bf16);
    for (KernelId kid : kids) {
      const bench::Timing tm = time_decode(s, c.b, kid, c.b >= 8 ? 5 : 15);
      const double t = tm.median;
      const double t_bw = bytes / (bw * 1e9);
      const double bound = std::max(flops / (roof_flops * 1e9), t_bw);
      const double bound_best = std::max(flops / (std::max(roof_flops, fma_peak) * 1e9), t_bw);
      const std::string name =
          fmt::format("b{}_sq{}_hq{}_{}{}", c.b, c.s_q, c.h_q, c.fp8 ? "fp8" : "bf16",
                      kid == main_kernel ? "" : "_alt");
      std::printf(
          "BENCH mla %s kernel=%s time_ms=%.3f best_ms=%.3f gbps=%.1f gflops=%.1f "
          "intensity=%.1f roofline=%.3f roofline_fma=%.3f bound=%s baseline=ref ratio=%.1f\n",
          name.c_str(), kernel_name(kid), t * 1e3, tm.best * 1e3, bytes / t / 1e9, flops / t / 1e9,
          flops / bytes, bound / t, bound_best / t,
          flops / (roof_flops * 1e9) > t_bw ? "compute" : "memory", t_ref / t);
      std::fflush(stdout);
    }
  }
  return 0;
}
