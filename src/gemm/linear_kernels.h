// Private: the backends behind gemm::linear and the entry point that picks one.
//
// Every backend computes output columns [n0, n1) for all m rows; linear_with_isa splits n
// across the global pool. A column's value depends only on the backend and m (not on which
// thread or tile computed it), so results are deterministic for any thread count.
#pragma once
#include "core/cpu.h"
#include "gemm/gemm.h"

namespace ff::gemm {

// Runs linear on backend `isa` (which the CPU must support). Validates like linear(); m == 0
// is a no-op. Tests and benchmarks use it to compare backends within one process.
void linear_with_isa(Isa isa, const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy);

// Runs linear_batch on backend `isa`.
void linear_batch_with_isa(Isa isa, std::span<const LinearProblem> problems);

// Reference backend (FF_ISA=scalar): dequantize a row, fp32 dot products. Slow and simple.
void linear_ref_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                     int64_t n0, int64_t n1);

// SIMD backends (linear_simd.h instantiated for 8-lane AVX2 and 16-lane AVX-512).
void linear_avx2_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1);
void linear_avx512_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                        int64_t ldy, int64_t n0, int64_t n1);

// Rows of X up to which the SIMD backends stream W with every row's accumulators in registers
// (decode); above it they pack W into cache-resident panels (prefill). AVX-512 streams up to 16
// rows of BF16 / F16 / F32 weights (two 8-row tiles per weight row); see linear_simd.h.
inline int stream_max_rows(Isa isa, DType dtype) {
  return isa == Isa::Avx512 && dtype != DType::F8_E4M3 ? 16 : 8;
}

}  // namespace ff::gemm
