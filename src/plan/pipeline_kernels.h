// The dense kernels of the pipeline executor's toy model (plan/pipeline_model.h): one matmul and
// the exact GELU. Private to the plan module (tests include it; plan.h does not).
//
// Determinism is the point, not speed: the executor's losses must equal the sequential
// reference's bit for bit, so each output element is computed by one fixed sequence of rounded
// operations, acc = ((0 + a0*b0) + a1*b1) + ..., in ascending k, whatever the tiling, the vector
// width or the thread that runs it. Nothing here contracts a*b+c into an FMA (baseline x86-64 has
// none) and nothing is split across threads.
#pragma once
#include <cstddef>

namespace ff::plan {

// c[i*n + j] = sum over p in 0..k-1 (ascending) of a(i, p) * b[p*n + j], with
// a(i, p) = a[i*a_row_stride + p*a_col_stride], so `a` may be read transposed (a_row_stride = 1,
// a_col_stride = m). b is row-major [k, n], c row-major [m, n] and overwritten.
// Tiling: blocks of 256 columns x 256 k, and inside them 4 rows x one vector of columns kept in
// registers across the k block; each element still accumulates in ascending k.
template <typename T>
void matmul(const T* a, ptrdiff_t a_row_stride, ptrdiff_t a_col_stride, const T* b, T* c, int m,
            int n, int k);

// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (torch.nn.functional.gelu's default), and its
// derivative 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
template <typename T>
T gelu(T x);
template <typename T>
T gelu_grad(T x);

}  // namespace ff::plan
