// The FP8 KV-cache format of DeepSeek-V3.2 (FlashMLA tests/quant.py), see mla.h for the layout.
// Scales are powers of two (amax / 448 rounded up), so e4m3 * scale is exact in bf16 and f32 and
// the kernels can dequantize to bf16 without a further rounding.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "mla/mla.h"

namespace ff::mla {

namespace {

void check_rows(const TensorView& v, int64_t cols, const char* what, bool bytes) {
  FF_CHECK(v.ndim == 2 && v.shape[1] == cols && v.stride[1] == 1,
           "{}: expected [n, {}] with contiguous rows, got {}", what, cols, v.shape_str());
  if (bytes)
    FF_CHECK(v.dtype == DType::U8 || v.dtype == DType::F8_E4M3, "{}: FP8 rows must be U8, got {}",
             what, dtype_name(v.dtype));
}

}  // namespace

void quantize_kv_fp8(const TensorView& src, const TensorView& dst) {
  constexpr int64_t d = kFp8NopeDim + kFp8RopeDim;
  check_rows(src, d, "quantize_kv_fp8 src", false);
  check_rows(dst, kFp8TokenBytes, "quantize_kv_fp8 dst", true);
  FF_CHECK(src.dtype == DType::F32 || src.dtype == DType::BF16,
           "quantize_kv_fp8: src must be F32 or BF16, got {}", dtype_name(src.dtype));
  FF_CHECK(src.shape[0] == dst.shape[0], "quantize_kv_fp8: {} source rows, {} destination rows",
           src.shape[0], dst.shape[0]);
  float x[d];
  for (int64_t t = 0; t < src.shape[0]; ++t) {
    if (src.dtype == DType::F32)
      std::memcpy(x, src.at<float>({t, 0}), sizeof x);
    else
      convert_bf16_to_f32(src.at<uint16_t>({t, 0}), x, size_t(d));
    uint8_t* out = dst.at<uint8_t>({t, 0});
    float scales[4];
    for (int64_t tile = 0; tile < 4; ++tile) {
      float amax = 0.f;
      for (int64_t i = tile * kFp8TileSize; i < (tile + 1) * kFp8TileSize; ++i)
        amax = std::max(amax, std::fabs(x[i]));
      const float scale = std::exp2(std::ceil(std::log2(std::max(amax / 448.f, 1e-4f))));
      scales[tile] = scale;
      for (int64_t i = tile * kFp8TileSize; i < (tile + 1) * kFp8TileSize; ++i)
        out[i] = f32_to_e4m3(x[i] / scale);
    }
    std::memcpy(out + kFp8NopeDim, scales, sizeof scales);
    for (int64_t i = 0; i < kFp8RopeDim; ++i) {
      const uint16_t h = f32_to_bf16(x[kFp8NopeDim + i]);
      std::memcpy(out + kFp8NopeDim + 16 + 2 * i, &h, 2);
    }
  }
}

void dequantize_kv_fp8(const TensorView& src, const TensorView& dst) {
  constexpr int64_t d = kFp8NopeDim + kFp8RopeDim;
  check_rows(src, kFp8TokenBytes, "dequantize_kv_fp8 src", true);
  check_rows(dst, d, "dequantize_kv_fp8 dst", false);
  FF_CHECK(dst.dtype == DType::F32, "dequantize_kv_fp8: dst must be F32, got {}",
           dtype_name(dst.dtype));
  FF_CHECK(src.shape[0] == dst.shape[0], "dequantize_kv_fp8: {} source rows, {} destination rows",
           src.shape[0], dst.shape[0]);
  const float* table = e4m3_table();
  for (int64_t t = 0; t < src.shape[0]; ++t) {
    const uint8_t* in = src.at<uint8_t>({t, 0});
    float* out = dst.at<float>({t, 0});
    float scales[4];
    std::memcpy(scales, in + kFp8NopeDim, sizeof scales);
    for (int64_t i = 0; i < kFp8NopeDim; ++i) out[i] = table[in[i]] * scales[i / kFp8TileSize];
    for (int64_t i = 0; i < kFp8RopeDim; ++i) {
      uint16_t h;
      std::memcpy(&h, in + kFp8NopeDim + 16 + 2 * i, 2);
      out[kFp8NopeDim + i] = bf16_to_f32(h);
    }
  }
}

}  // namespace ff::mla
