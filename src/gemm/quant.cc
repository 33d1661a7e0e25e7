// Quantization helpers with DeepSeek's / DeepGEMM's casts, and DeepGEMM's calc_diff.
#include <algorithm>
#include <cmath>

#include "core/core.h"
#include "gemm/gemm.h"

namespace ff::gemm {
namespace {

float group_scale(float amax, bool ue8m0) {
  float s = std::max(amax, 1e-4f) / 448.f;
  if (ue8m0) s = ue8m0_to_f32(f32_to_ue8m0_ceil(s));  // 2^ceil(log2 s), exact
  return s;
}

uint8_t cast(float x, float s, float inv, bool reciprocal) {
  return f32_to_e4m3(reciprocal ? x * inv : x / s);
}

}  // namespace

void quantize_per_token(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out,
                        float* scales, bool ue8m0, bool reciprocal) {
  FF_CHECK(m >= 0 && k > 0 && ldx >= k, "quantize_per_token: bad shape [{}, {}] (ld {})", m, k,
           ldx);
  const int64_t kb = (k + kFp8Block - 1) / kFp8Block;
  const auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t g = 0; g < kb; ++g) {
        const int64_t j0 = g * kFp8Block, j1 = std::min(k, j0 + kFp8Block);
        float amax = 0.f;
        for (int64_t j = j0; j < j1; ++j) amax = std::max(amax, std::fabs(x[i * ldx + j]));
        const float s = group_scale(amax, ue8m0), inv = 1.f / s;
        scales[i * kb + g] = s;
        for (int64_t j = j0; j < j1; ++j) out[i * k + j] = cast(x[i * ldx + j], s, inv, reciprocal);
      }
  };
  if (m * k >= (int64_t(1) << 16))
    parallel_for(m, rows, 1);
  else
    rows(0, m);
}

void quantize_per_block(const float* w, int64_t n, int64_t k, int64_t ldw, uint8_t* out,
                        float* scales, bool ue8m0, bool reciprocal) {
  FF_CHECK(n >= 0 && k > 0 && ldw >= k, "quantize_per_block: bad shape [{}, {}] (ld {})", n, k,
           ldw);
  const int64_t nb = (n + kFp8Block - 1) / kFp8Block, kb = (k + kFp8Block - 1) / kFp8Block;
  parallel_for(
      nb,
      [&](int64_t b0, int64_t b1) {
        for (int64_t bi = b0; bi < b1; ++bi) {
          const int64_t i0 = bi * kFp8Block, i1 = std::min(n, i0 + kFp8Block);
          for (int64_t g = 0; g < kb; ++g) {
            const int64_t j0 = g * kFp8Block, j1 = std::min(k, j0 + kFp8Block);
            float amax = 0.f;
            for (int64_t i = i0; i < i1; ++i)
              for (int64_t j = j0; j < j1; ++j) amax = std::max(amax, std::fabs(w[i * ldw + j]));
            const float s = group_scale(amax, ue8m0), inv = 1.f / s;
            scales[bi * kb + g] = s;
            for (int64_t i = i0; i < i1; ++i)
              for (int64_t j = j0; j < j1; ++j)
                out[i * k + j] = cast(w[i * ldw + j], s, inv, reciprocal);
          }
        }
      },
      1);
}

void pack_ue8m0_scales(const float* scales, int64_t rows, int64_t kb, int64_t mn_stride,
                       int32_t* packed) {
  FF_CHECK(rows >= 0 && kb >= 0, "pack_ue8m0_scales: bad shape [{}, {}]", rows, kb);
  FF_CHECK(mn_stride >= rows, "pack_ue8m0_scales: mn_stride {} < rows {}", mn_stride, rows);
  const int64_t words = (kb + 3) / 4;
  for (int64_t w = 0; w < words; ++w)
    for (int64_t r = 0; r < rows; ++r) {
      uint32_t v = 0;
      for (int64_t b = 0; b < 4 && 4 * w + b < kb; ++b)
        v |= uint32_t(f32_to_ue8m0_ceil(scales[r * kb + 4 * w + b])) << (8 * b);
      packed[w * mn_stride + r] = int32_t(v);
    }
}

void unpack_ue8m0_scales(const int32_t* packed, int64_t rows, int64_t kb, int64_t mn_stride,
                         float* scales) {
  FF_CHECK(rows >= 0 && kb >= 0, "unpack_ue8m0_scales: bad shape [{}, {}]", rows, kb);
  FF_CHECK(mn_stride >= rows, "unpack_ue8m0_scales: mn_stride {} < rows {}", mn_stride, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < kb; ++g) {
      const uint32_t v = uint32_t(packed[(g / 4) * mn_stride + r]);
      scales[r * kb + g] = ue8m0_to_f32(uint8_t(v >> (8 * (g % 4))));
    }
}

double calc_diff(const double* x, const double* y, int64_t n) {
  double xy = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    xy += x[i] * y[i];
    sq += x[i] * x[i] + y[i] * y[i];
  }
  return sq == 0 ? 0.0 : 1.0 - 2.0 * xy / sq;
}

}  // namespace ff::gemm
