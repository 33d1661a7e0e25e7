// fireflyer gemm: matrix products over checkpoint weights (DeepGEMM's role).
//
// Layout: a weight W is [n, k] row-major (PyTorch nn.Linear layout, "NT" GEMM), row i at
// data + i * ld elements. FP8 (e4m3) weights carry fp32 block scales `scale_inv`
// [ceil(n/128), ceil(k/128)] (DeepSeek's weight_scale_inv): W[i,j] = W8[i,j] * s[i/128, j/128].
// Activations are fp32 rows. Kernels split n across the global thread pool; the result for a
// fixed thread count and backend is deterministic.
#pragma once
#include <cstdint>

#include "core/core.h"

namespace ff::gemm {

constexpr int64_t kFp8Block = 128;

struct Weight {
  DType dtype = DType::F32;  // F32, BF16, F16 or F8_E4M3
  const void* data = nullptr;
  int64_t n = 0, k = 0;
  int64_t ld = 0;                    // elements between rows (>= k)
  const float* scale_inv = nullptr;  // F8_E4M3 only: [ceil(n/128), ceil(k/128)]
};

// Y[m, n] = X[m, k] * W^T, X row stride ldx, Y row stride ldy (in floats); columns of Y past n
// are not touched. Throws ff::Error for a malformed weight (see validate), ldx < k, ldy < n or a
// null X / Y; m == 0 does nothing.
//
// Precision: products and sums are fp32 for every weight dtype (weights are widened exactly,
// FP8 block scales applied per 128 columns). X is never rounded to bf16 for vdpbf16ps: that
// would add ~2^-9 relative error per product, far above the 1e-4 at which fp32 models are
// checked against HF transformers; decode is bandwidth-bound anyway, and on the Sapphire
// Rapids-class CPUs we measured vdpbf16ps peaks at half the fp32 FMA rate (~105 vs ~214
// GFLOP/s per core), so prefill would not gain either.
// Backends: AVX-512, AVX2 or the scalar reference by ff::active_isa() (FF_ISA). Small m (up to
// 8; 16 for non-FP8 weights on AVX-512) streams W once (decode); larger m packs W into
// cache-resident panels (prefill). Output columns are split across the global thread pool.
void linear(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy);

// Dequantizes row `row` of W into out[k] as fp32.
void dequantize_row(const Weight& w, int64_t row, float* out);

// Checks that a weight is well-formed; throws ff::Error naming `what` otherwise.
void validate(const Weight& w, const char* what);

}  // namespace ff::gemm
