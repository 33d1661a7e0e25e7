// Private: the backends behind gemm::linear and the entry point that picks one.
//
// Every backend computes output columns [n0, n1) for all m rows; linear_with_isa splits n
// across the global pool. A column's value depends only on the backend and m (not on which
// thread or tile computed it), so results are deterministic for any thread count.
#pragma once
#include <functional>
#include <span>

#include "core/cpu.h"
#include "gemm/gemm.h"

namespace ff::gemm {

// The two kernels for BF16 weights at more than kBf16DotMinRows rows on the AVX-512 backend:
// Fma widens the weights and multiplies fp32 X (as every other path does); Dot rounds X to bf16
// and multiplies on vdpbf16ps (linear_bf16dot_avx512.cc), twice the FMA rate where that
// instruction runs at full rate.
enum class Bf16Kernel { Fma, Dot };
constexpr int64_t kBf16DotMinRows = 17;  // decode (memory-bound) keeps the fp32 streaming path

// The kernel for this CPU: Dot on AMD family >= 0x19 with AVX512-BF16 (Zen 4, Zen 5; Intel runs
// vdpbf16ps at half the FMA rate), Fma elsewhere. ff_gemm_bf16_kernel (the FF_GEMM_BF16_KERNEL
// value; null or "" for none) "dot" or "fma" forces one; another value, or "dot" on a CPU
// without AVX512-BF16, throws ff::Error naming it. Depends on the CPU identity only, never on
// timing, so a model's output is the same on every run of one machine.
Bf16Kernel resolve_bf16_gemm_kernel(const CpuFeatures& cpu, const char* ff_gemm_bf16_kernel);

// resolve_bf16_gemm_kernel(cpu_features(), getenv("FF_GEMM_BF16_KERNEL")), read once per process
// (or what a ScopedBf16GemmKernel set).
Bf16Kernel bf16_gemm_kernel();

// For tests: replaces this process's choice while it lives (a test that compares an fp32 forward
// with fp32 goldens at 1e-4 keeps fp32 products; Dot needs AVX512-BF16). Not for concurrent use
// with other threads running gemm::linear.
class ScopedBf16GemmKernel {
 public:
  explicit ScopedBf16GemmKernel(Bf16Kernel kernel);
  ~ScopedBf16GemmKernel();
  ScopedBf16GemmKernel(const ScopedBf16GemmKernel&) = delete;
  ScopedBf16GemmKernel& operator=(const ScopedBf16GemmKernel&) = delete;

 private:
  Bf16Kernel previous_;
};

// Runs linear on backend `isa` (which the CPU must support) with `bf16` as the BF16 prefill
// kernel (Dot needs AVX512-BF16; it applies to the AVX-512 backend only). Validates like
// linear(); m == 0 is a no-op. Tests and benchmarks use it to compare backends within one
// process.
void linear_with_isa(Isa isa, Bf16Kernel bf16, const float* x, int64_t m, int64_t ldx,
                     const Weight& w, float* y, int64_t ldy);
// The same with this process's bf16_gemm_kernel().
void linear_with_isa(Isa isa, const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy);

// Runs linear_batch on backend `isa` (with `bf16`, or this process's choice).
void linear_batch_with_isa(Isa isa, Bf16Kernel bf16, std::span<const LinearProblem> problems);
void linear_batch_with_isa(Isa isa, std::span<const LinearProblem> problems);

// One product of a batch as the column split sees it: rows, the weight's n and k, bytes a weight.
struct BatchShape {
  int64_t m = 0, n = 0, k = 0;
  double weight_bytes = 0;
};
// linear_batch's split, for any kernel: the problems' output columns, concatenated, cut into one
// run per pool thread of about equal cost (reading weights against multiply-adds), at multiples
// of 32 columns inside a problem; run(i, c0, c1) computes columns [c0, c1) of problem i
// (problems with m == 0 are skipped). Small batches run on the calling thread.
void for_each_column_run(std::span<const BatchShape> shapes,
                         const std::function<void(size_t, int64_t, int64_t)>& run);

// Reference backend (FF_ISA=scalar): dequantize a row, fp32 dot products. Slow and simple.
void linear_ref_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                     int64_t n0, int64_t n1);

// SIMD backends (linear_simd.h instantiated for 8-lane AVX2 and 16-lane AVX-512).
void linear_avx2_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1);
void linear_avx512_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                        int64_t ldy, int64_t n0, int64_t n1);
// BF16 weights (no block format) on vdpbf16ps, X rounded to bf16; any m, meant for m > 16.
void linear_bf16dot_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                         int64_t ldy, int64_t n0, int64_t n1);

}  // namespace ff::gemm
