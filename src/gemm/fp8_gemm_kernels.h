// Private: the DeepGEMM-style GEMMs with an explicit backend, for tests and benchmarks.
// Isa::Scalar is the reference (DeepGEMM's per-128-k promotion, written out in scalar code);
// Avx2 / Avx512 dequantize A to fp32 and run gemm::linear's kernels on that backend.
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

}  // namespace ff::gemm
