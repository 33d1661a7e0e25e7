// Private: the DeepGEMM-style GEMMs with an explicit backend, for tests and benchmarks.
// Isa::Scalar is the reference (DeepGEMM's per-128-k promotion, written out in scalar code);
// Avx2 / Avx512 dequantize A to fp32 and run gemm::linear's kernels on that backend; on Avx512,
// FP8 products of at most kW8A8MaxRows rows run on the W8A8 kernel instead where the CPU has
// AVX512-FP16.
#pragma once
#include "core/cpu.h"
#include "gemm/gemm.h"

namespace ff::gemm {

enum class Layout { NT, NN, TN, TT };

// Checks everything the public function of that layout checks; `dtype` is F8_E4M3 or BF16.
void gemm_with_isa(Isa isa, Layout layout, DType dtype, const Matrix& a, const Matrix& b,
                   const Output& d, const GemmOptions& opt);
void m_grouped_contiguous_with_isa(Isa isa, DType dtype, const Matrix& a, const Matrix& b,
                                   int64_t num_groups, const int32_t* m_indices, const Output& d,
                                   const GemmOptions& opt, bool b_k_major = true);
void m_grouped_masked_with_isa(Isa isa, DType dtype, const Matrix& a, const Matrix& b,
                               int64_t num_groups, const int32_t* masked_m, const Output& d,
                               const GemmOptions& opt);

void k_grouped_with_isa(Isa isa, DType dtype, const void* a, const float* sfa, int64_t m,
                        const void* b, const float* sfb, int64_t n, const int64_t* ks,
                        int64_t num_groups, float* d, const float* c);

// ---- W8A8 (w8a8_avx512fp16.cc) ----
// FP8 x FP8 products of few rows with both operands in e4m3, for decode, where widening the
// weights to fp32 would bound the streaming rate: e4m3 -> f16 (exact), f16 products summed in
// f16 within a 128-wide k block, then promoted to fp32 with A's 1x128 and B's 128x128 scale.
// Differs from the reference's fp32 block sums by the f16 rounding of the partial sums (relative
// 2^-11 each; calc_diff against the reference ~1e-8).
constexpr int kW8A8MaxRows = 4;
// A enters as its e4m3 value times 8 (B as value / 2^8): every product of two e4m3 values is then
// an exact f16 (|a b| <= 3584 * 1.75 = 6272; the smallest, 2^-9 * 8 * 2^-17 = 2^-23, is an f16
// subnormal), and the 8 products a lane adds per block stay below 50176 < 65504.
constexpr float kW8A8AScale = 8.f;

struct W8A8Rows {
  const uint16_t* a;  // A's e4m3 values * kW8A8AScale as f16 bits; rows lda apart, zero k..lda
  int64_t m, lda;     // 1 <= m <= kW8A8MaxRows; lda a multiple of 32, >= k
  const float* sa;    // A's scales [m, ceil(k/128)]
  const Weight* w;    // F8_E4M3 [n, k] with 128x128 scale_inv
  float* y;           // Y[m, n], rows ldy apart
  int64_t ldy;
};
// Columns [n0, n1) of Y. Needs cpu_features().avx512_fp16.
void w8a8_f16_rows(const W8A8Rows& p, int64_t n0, int64_t n1);

}  // namespace ff::gemm
