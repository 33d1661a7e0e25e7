// Private: backend entry points for gemm::linear.
#pragma once
#include "gemm/gemm.h"

namespace ff::gemm {

// Picks the backend (active_isa()) and runs it over the thread pool.
void linear_dispatch(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy);

// Reference backend: rows [n0, n1) of the output columns, plain C++.
void linear_ref_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy, int64_t n0, int64_t n1);

}  // namespace ff::gemm
