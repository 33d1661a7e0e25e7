#include <vector>

#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {

void validate(const Weight& w, const char* what) {
  FF_CHECK(w.data != nullptr, "{}: weight has no data", what);
  FF_CHECK(w.n > 0 && w.k > 0 && w.ld >= w.k, "{}: bad weight shape [{}, {}] (ld {})", what, w.n,
           w.k, w.ld);
  switch (w.dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      break;
    case DType::F8_E4M3:
      FF_CHECK(w.scale_inv != nullptr, "{}: F8_E4M3 weight without weight_scale_inv", what);
      break;
    default:
      fail("{}: unsupported weight dtype {}", what, dtype_name(w.dtype));
  }
}

void dequantize_row(const Weight& w, int64_t row, float* out) {
  const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
  for (int64_t j = 0; j < w.k; ++j) {
    const int64_t idx = row * w.ld + j;
    float v = 0.f;
    switch (w.dtype) {
      case DType::F32: v = static_cast<const float*>(w.data)[idx]; break;
      case DType::BF16: v = bf16_to_f32(static_cast<const uint16_t*>(w.data)[idx]); break;
      case DType::F16: v = f16_to_f32(static_cast<const uint16_t*>(w.data)[idx]); break;
      case DType::F8_E4M3:
        v = e4m3_to_f32(static_cast<const uint8_t*>(w.data)[idx]) *
            w.scale_inv[(row / kFp8Block) * kb + j / kFp8Block];
        break;
      default: fail("dequantize_row: unsupported dtype {}", dtype_name(w.dtype));
    }
    out[j] = v;
  }
}

void linear(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy) {
  if (m <= 0) return;
  linear_dispatch(x, m, ldx, w, y, ldy);
}

}  // namespace ff::gemm
