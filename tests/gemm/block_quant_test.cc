// Our GGUF quantizers: Q8_0 byte for byte against gguf-py (tests/fixtures/gguf_quant/, made by
// tools/make_gguf_goldens.py), Q4_K by its round-trip error, then edge cases and errors; and the
// Block <-> GgufType mapping and weight_bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::expect_error;
using testing::read_fixture;

TEST(BlockQuant, Q8_0BitExactWithGgufPy) {
  const std::vector<uint8_t> in = read_fixture("Q8_0.quant_in.f32.bin");
  const std::vector<uint8_t> want = read_fixture("Q8_0.quant_out.bin");
  ASSERT_FALSE(in.empty());
  const int64_t n = int64_t(in.size() / 4);
  ASSERT_EQ(int64_t(want.size()), n / 32 * 34);
  std::vector<float> x(static_cast<size_t>(n));
  std::memcpy(x.data(), in.data(), in.size());
  // Into an unaligned buffer: blocks are 34 bytes, GGUF promises nothing.
  std::vector<uint8_t> got(want.size() + 1, 0xee);
  quantize_q8_0(x.data(), n, got.data() + 1);
  for (int64_t b = 0; b < n / 32; ++b) {
    if (std::memcmp(got.data() + 1 + b * 34, want.data() + b * 34, 34) != 0) {
      ADD_FAILURE() << "block " << b << " differs from gguf-py";
      break;
    }
  }
  EXPECT_EQ(got[0], 0xee);
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float f : v) s += double(f) * f;
  return std::sqrt(s / double(v.size()));
}

double rms_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s / double(a.size()));
}

std::vector<float> round_trip(GgufType t, const std::vector<float>& x) {
  const int64_t n = int64_t(x.size());
  std::vector<uint8_t> q(size_t(row_bytes(t, n)));
  if (t == GgufType::Q8_0)
    quantize_q8_0(x.data(), n, q.data());
  else
    quantize_q4_k(x.data(), n, q.data());
  std::vector<float> out(x.size());
  dequantize_gguf(t, q.data(), n, out.data());
  return out;
}

// Plain per-32 min/max rounding with exact (fp32) scales: 16 levels across [min, max].
std::vector<float> min_max_4bit(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t b = 0; b < x.size(); b += 32) {
    float lo = x[b], hi = x[b];
    for (size_t i = b; i < b + 32; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    const float s = (hi - lo) / 15.f;
    for (size_t i = b; i < b + 32; ++i)
      out[i] = s > 0 ? lo + s * std::nearbyint((x[i] - lo) / s) : lo;
  }
  return out;
}

TEST(BlockQuant, Q4_KRoundTripError) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<float> x(256 * 512);
  for (float& v : x) v = normal(rng);
  const double err = rms_diff(x, round_trip(GgufType::Q4_K, x)) / rms(x);
  const double base = rms_diff(x, min_max_4bit(x)) / rms(x);
  const double q8 = rms_diff(x, round_trip(GgufType::Q8_0, x)) / rms(x);
  std::printf(
      "Gaussian data, relative RMS error: Q4_K %.4f, per-32 min/max 4-bit %.4f, Q8_0 %.5f\n", err,
      base, q8);
  EXPECT_LT(err, 0.1);
  EXPECT_LT(err, base);  // the search beats min/max even with 6-bit scales and f16 d, dmin
  EXPECT_LT(q8, 0.01);

  // A shifted distribution (all positive) and a skewed one fare the same.
  for (float& v : x) v = std::fabs(v) + 0.01f;
  EXPECT_LT(rms_diff(x, round_trip(GgufType::Q4_K, x)) / rms(x), 0.1);
}

TEST(BlockQuant, Q4_KEdgeCases) {
  std::vector<float> x(256, 0.f);
  EXPECT_EQ(round_trip(GgufType::Q4_K, x), x);  // all zero: zero d, dmin, q

  for (float c : {3.25f, -7.f, 1e-3f}) {  // constant blocks come back within a step
    std::fill(x.begin(), x.end(), c);
    for (float v : round_trip(GgufType::Q4_K, x)) EXPECT_NEAR(v, c, std::fabs(c) * 0.04) << c;
  }
  // Tiny values: f16 subnormal scales, as precise as they allow (never NaN or inf).
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (float& v : x) v = normal(rng) * 1e-6f;
  for (float v : round_trip(GgufType::Q4_K, x)) EXPECT_TRUE(std::isfinite(v));
  // Values well inside the f16 scale range (|x| ~ 1e5) keep the relative error.
  for (float& v : x) v = normal(rng) * 1e5f;
  const auto big = round_trip(GgufType::Q4_K, x);
  EXPECT_LT(rms_diff(x, big) / rms(x), 0.1);
  // Past it (max / 63 / 15 > 65504) the scales saturate and the values clip, finite.
  for (float& v : x) v = normal(rng) * 1e9f;
  for (float v : round_trip(GgufType::Q4_K, x)) EXPECT_TRUE(std::isfinite(v));
  // One outlier takes the block's d; the other sub-blocks keep 6-bit scales against it: fine
  // at 20x the data's spread, a constant (the format's limit, see gemm.h) at 1000x.
  const auto rest_error = [&](float outlier) {
    for (float& v : x) v = normal(rng);
    x[0] = outlier;
    const auto out = round_trip(GgufType::Q4_K, x);
    std::vector<float> rest(x.begin() + 32, x.end()), rest_out(out.begin() + 32, out.end());
    return rms_diff(rest, rest_out) / rms(rest);
  };
  EXPECT_LT(rest_error(20.f), 0.15);
  EXPECT_LT(rest_error(1000.f), 1.05);
}

TEST(BlockQuant, Q8_0EdgeCases) {
  std::vector<float> x(64, 0.f);
  EXPECT_EQ(round_trip(GgufType::Q8_0, x), x);
  std::fill(x.begin(), x.end(), -2.5f);
  for (float v : round_trip(GgufType::Q8_0, x)) EXPECT_NEAR(v, -2.5f, 2e-3f);
}

TEST(BlockQuant, Errors) {
  std::vector<float> x(256, 1.f);
  std::vector<uint8_t> out(1024);
  expect_error([&] { quantize_q8_0(x.data(), 33, out.data()); },
               "not a multiple of the block size");
  expect_error([&] { quantize_q4_k(x.data(), 128, out.data()); },
               "not a multiple of the block size");
  x[7] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { quantize_q8_0(x.data(), 32, out.data()); }, "element 7 is not finite");
  expect_error([&] { quantize_q4_k(x.data(), 256, out.data()); }, "element 7 is not finite");
  x[7] = std::numeric_limits<float>::infinity();
  expect_error([&] { quantize_q4_k(x.data(), 256, out.data()); }, "not finite");
  expect_error([&] { quantize_q8_0(nullptr, 32, out.data()); }, "null");
  quantize_q4_k(nullptr, 0, nullptr);  // nothing to do
}

TEST(BlockQuant, BlockTypesAndWeightBytes) {
  for (Block b : {Block::Q8_0, Block::Q4_K, Block::Q5_K, Block::Q6_K}) {
    const GgufType t = block_gguf_type(b);
    ASSERT_TRUE(block_of(t).has_value());
    EXPECT_EQ(*block_of(t), b);
  }
  EXPECT_EQ(block_gguf_type(Block::Q4_K), GgufType::Q4_K);
  EXPECT_FALSE(block_of(GgufType::Q4_0).has_value());
  EXPECT_FALSE(block_of(GgufType::BF16).has_value());
  expect_error([] { block_gguf_type(Block::None); }, "not a GGUF block type");

  Weight w;
  w.block = Block::Q4_K;
  w.n = 3;
  w.k = 512;
  w.ld = 1024;
  EXPECT_EQ(weight_bytes(w), 3 * 2 * 144);
  w.block = Block::Q8_0;
  EXPECT_EQ(weight_bytes(w), 3 * 16 * 34);
  w.block = Block::None;
  w.dtype = DType::BF16;
  EXPECT_EQ(weight_bytes(w), 3 * 512 * 2);
}

}  // namespace
}  // namespace ff::gemm
