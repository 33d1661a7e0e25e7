// gemm::linear's host side: input checks, the scalar dequantizer, backend dispatch and the
// split of output columns across the thread pool.
#include "core/core.h"
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
      case DType::F32:
        v = static_cast<const float*>(w.data)[idx];
        break;
      case DType::BF16:
        v = bf16_to_f32(static_cast<const uint16_t*>(w.data)[idx]);
        break;
      case DType::F16:
        v = f16_to_f32(static_cast<const uint16_t*>(w.data)[idx]);
        break;
      case DType::F8_E4M3:
        v = e4m3_to_f32(static_cast<const uint8_t*>(w.data)[idx]) *
            w.scale_inv[(row / kFp8Block) * kb + j / kFp8Block];
        break;
      default:
        fail("dequantize_row: unsupported dtype {}", dtype_name(w.dtype));
    }
    out[j] = v;
  }
}

namespace {

using RowsFn = void (*)(const float*, int64_t, int64_t, const Weight&, float*, int64_t, int64_t,
                        int64_t);

RowsFn backend(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return linear_avx512_rows;
    case Isa::Avx2:
      return linear_avx2_rows;
    default:
      return linear_ref_rows;
  }
}

// Below this many multiply-adds waking the pool costs more than it saves.
constexpr int64_t kMinParallelMacs = int64_t(1) << 16;
// Columns are handed out in multiples of the widest panel (2 x 16 lanes) so no thread gets a
// ragged panel in the middle of the matrix.
constexpr int64_t kColumnGrain = 32;

}  // namespace

void linear_with_isa(Isa isa, const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy) {
  FF_CHECK(m >= 0, "linear: negative row count {}", m);
  if (m == 0) return;  // nothing to compute, and nothing of w is read
  validate(w, "linear");
  FF_CHECK(x != nullptr && y != nullptr, "linear: null input or output");
  FF_CHECK(ldx >= w.k, "linear: input row stride {} < k {}", ldx, w.k);
  FF_CHECK(ldy >= w.n, "linear: output row stride {} < n {}", ldy, w.n);
  FF_CHECK(int(isa) <= int(best_isa()), "linear: backend {} not supported by this CPU",
           isa_name(isa));
  const RowsFn fn = backend(isa);
  if (m * w.n * w.k < kMinParallelMacs) {
    fn(x, m, ldx, w, y, ldy, 0, w.n);
    return;
  }
  parallel_for(
      w.n, [&](int64_t b, int64_t e) { fn(x, m, ldx, w, y, ldy, b, e); }, kColumnGrain);
}

void linear(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy) {
  linear_with_isa(active_isa(), x, m, ldx, w, y, ldy);
}

}  // namespace ff::gemm
