// Reference backend of gemm::linear (FF_ISA=scalar): dequantize one weight row, then plain
// fp32 dot products in k order. Simple on purpose; the SIMD backends are tested against a
// float64 oracle, and this one is the baseline the benchmark reports speed-ups over.
#include <vector>

#include "gemm/linear_kernels.h"

namespace ff::gemm {

void linear_ref_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                     int64_t n0, int64_t n1) {
  std::vector<float> row(size_t(w.k));
  for (int64_t i = n0; i < n1; ++i) {
    dequantize_row(w, i, row.data());
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * ldx;
      float acc = 0.f;
      for (int64_t j = 0; j < w.k; ++j) acc += xr[j] * row[j];
      y[r * ldy + i] = acc;
    }
  }
}

}  // namespace ff::gemm
