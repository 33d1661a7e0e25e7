// The FP8 KV-cache format of DeepSeek-V3.2 (656 bytes per token) and its quantizer.
#include "mla_test_util.h"

namespace ff::mla::test {
namespace {

TEST(MlaFp8, LayoutScalesAndRoundTrip) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> src(2 * 576);
  for (auto& x : src) x = nd(rng);
  for (int i = 0; i < 128; ++i) src[size_t(128 + i)] *= 1000.f;    // tile 1 of token 0: big values
  for (int i = 0; i < 128; ++i) src[size_t(576 + 256 + i)] = 0.f;  // tile 2 of token 1: zeros
  std::vector<uint8_t> q(2 * kFp8TokenBytes);
  std::vector<float> back(2 * 576);
  quantize_kv_fp8(TensorView(src.data(), DType::F32, {2, 576}),
                  TensorView(q.data(), DType::U8, {2, kFp8TokenBytes}));
  dequantize_kv_fp8(TensorView(q.data(), DType::U8, {2, kFp8TokenBytes}),
                    TensorView(back.data(), DType::F32, {2, 576}));
  for (int t = 0; t < 2; ++t) {
    const uint8_t* row = q.data() + t * kFp8TokenBytes;
    float scales[4];
    std::memcpy(scales, row + 512, 16);
    for (int tile = 0; tile < 4; ++tile) {
      float amax = 0.f;
      for (int i = 0; i < 128; ++i)
        amax = std::max(amax, std::fabs(src[size_t(t * 576 + tile * 128 + i)]));
      // A power of two, the smallest >= amax / 448 (and >= 1e-4).
      int e;
      EXPECT_EQ(std::frexp(scales[tile], &e), 0.5f) << "scale not a power of two";
      EXPECT_GE(scales[tile], std::max(amax / 448.f, 1e-4f));
      EXPECT_LT(scales[tile] / 2, std::max(amax / 448.f, 1e-4f));
      for (int i = 0; i < 128; ++i) {
        const size_t k = size_t(t * 576 + tile * 128 + i);
        EXPECT_EQ(back[k], e4m3_to_f32(row[tile * 128 + i]) * scales[tile]);
        // e4m3 keeps 3 mantissa bits: relative error <= 2^-4, plus the subnormal step.
        EXPECT_LE(std::fabs(back[k] - src[k]), std::fabs(src[k]) / 16 + scales[tile] * 0x1p-10f);
      }
    }
    for (int i = 0; i < 64; ++i) {  // RoPE part: bf16, unquantized
      uint16_t h;
      std::memcpy(&h, row + 528 + 2 * i, 2);
      EXPECT_EQ(h, f32_to_bf16(src[size_t(t * 576 + 512 + i)]));
      EXPECT_EQ(back[size_t(t * 576 + 512 + i)], bf16_to_f32(h));
    }
  }
}

TEST(MlaFp8, BadShapes) {
  std::vector<float> src(576);
  std::vector<uint8_t> q(kFp8TokenBytes);
  EXPECT_THROW(quantize_kv_fp8(TensorView(src.data(), DType::F32, {1, 575}),
                               TensorView(q.data(), DType::U8, {1, kFp8TokenBytes})),
               Error);
  EXPECT_THROW(quantize_kv_fp8(TensorView(src.data(), DType::F32, {1, 576}),
                               TensorView(q.data(), DType::U8, {1, 655})),
               Error);
  EXPECT_THROW(quantize_kv_fp8(TensorView(src.data(), DType::F16, {1, 576}),
                               TensorView(q.data(), DType::U8, {1, kFp8TokenBytes})),
               Error);
}

}  // namespace
}  // namespace ff::mla::test
