// Exhaustive round trips over every fp8 / f16 / bf16 code, ue8m0 against a float64 reference,
// dtype names and sizes, and the bulk API against the scalar one. (Bit-exactness against PyTorch
// is dtype_golden_test.cc.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/core.h"

namespace ff {
namespace {

TEST(DType, Bf16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    EXPECT_EQ(f32_bits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16(f), h | 0x40u) << h;  // quieted, sign and payload kept
    } else {
      EXPECT_EQ(f32_to_bf16(f), h) << h;
    }
  }
}

TEST(DType, F16RoundTripsEveryValue) {
  int finite = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    const bool nan_code = (h & 0x7fffu) > 0x7c00u;
    ASSERT_EQ(std::isnan(f), nan_code) << h;
    if (nan_code) {
      EXPECT_EQ(std::signbit(f), bool(h & 0x8000u)) << h;
      EXPECT_EQ(f32_to_f16(f), h | 0x200u) << h;  // quieted, sign and payload kept
    } else {
      EXPECT_EQ(f32_to_f16(f), h) << h;
      finite += std::isfinite(f);
    }
    // Widening is exact: f16 -> f32 -> f64 equals the value by formula.
    if (!nan_code && (h & 0x7fffu) < 0x7c00u) {
      const int e = int((h >> 10) & 0x1f), m = int(h & 0x3ff);
      const double v = e ? std::ldexp(1024 + m, e - 25) : std::ldexp(m, -24);
      EXPECT_EQ(double(f), (h & 0x8000u) ? -v : v) << h;
    }
  }
  EXPECT_EQ(finite, 2 * 31 * 1024);
}

TEST(DType, E4m3RoundTripsEveryValue) {
  int nans = 0;
  for (uint32_t c = 0; c < 256; ++c) {
    const float f = e4m3_to_f32(uint8_t(c));
    EXPECT_EQ(f32_bits(e4m3_table()[c]), f32_bits(f)) << c;
    if ((c & 0x7f) == 0x7f) {
      ++nans;
      EXPECT_TRUE(std::isnan(f));
      EXPECT_EQ(std::signbit(f), bool(c & 0x80));
      EXPECT_EQ(f32_to_e4m3(f), c);
      continue;
    }
    ASSERT_TRUE(std::isfinite(f)) << c;
    EXPECT_EQ(f32_to_e4m3(f), c) << c;
    const int e = int((c >> 3) & 0xf), m = int(c & 7);
    const double v = e ? std::ldexp(8 + m, e - 10) : std::ldexp(m, -9);
    EXPECT_EQ(double(f), (c & 0x80) ? -v : v) << c;
    // Every e4m3 value is exact in f16 and bf16.
    EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f) << c;
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), f) << c;
  }
  EXPECT_EQ(nans, 2);
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.f);
  EXPECT_EQ(e4m3_to_f32(0x01), 0x1p-9f);
}

TEST(DType, E5m2RoundTripsEveryValueAndIsTheTopByteOfF16) {
  for (uint32_t c = 0; c < 256; ++c) {
    const float f = e5m2_to_f32(uint8_t(c));
    EXPECT_EQ(f32_bits(f), f32_bits(f16_to_f32(uint16_t(c << 8)))) << c;
    if ((c & 0x7f) > 0x7c) {
      EXPECT_TRUE(std::isnan(f)) << c;
      EXPECT_EQ(std::signbit(f), bool(c & 0x80));
      EXPECT_EQ(f32_to_e5m2(f), c | 0x7fu) << c;
      continue;
    }
    EXPECT_EQ(f32_to_e5m2(f), c) << c;
    EXPECT_EQ(f32_to_f16(f), c << 8) << c;
  }
  EXPECT_EQ(e5m2_to_f32(0x7b), 57344.f);
  EXPECT_EQ(e5m2_to_f32(0x7c), INFINITY);
  EXPECT_EQ(e5m2_to_f32(0xfc), -INFINITY);
}

// Rounding against a float64 reference: the code chosen for a positive x is at least as near as
// both its neighbouring codes (positive codes are ordered by value), and on a tie it is the even
// one. Every `step`-th f32 bit pattern from a quarter of the smallest subnormal up to the overflow
// threshold (the goldens cover every tie and the saturation edges exactly).
template <typename Enc, typename Dec>
void check_rne_against_f64(const char* what, Enc enc, Dec dec, uint32_t max_code, uint32_t step) {
  const double max = double(dec(max_code));
  const double threshold = max + (max - double(dec(max_code - 1))) / 2;
  const uint32_t lo_bits = f32_bits(float(double(dec(1)) / 4));
  const uint32_t hi_bits = f32_bits(float(std::min(threshold, 3.0e38)));
  int64_t checked = 0;
  for (uint32_t u = lo_bits; u < hi_bits; u += step) {
    const double x = double(f32_from_bits(u));
    const uint32_t c = enc(f32_from_bits(u));
    bool ok = c <= max_code;
    if (ok) {
      const double d = std::fabs(x - double(dec(c)));
      const double below = c > 0 ? std::fabs(x - double(dec(c - 1))) : INFINITY;
      const double above = c < max_code ? std::fabs(x - double(dec(c + 1))) : INFINITY;
      ok = d <= below && d <= above && ((d != below && d != above) || (c & 1) == 0);
    }
    ++checked;
    if (!ok) {
      ADD_FAILURE() << what << ": f32 0x" << std::hex << u << " gave code 0x" << c
                    << ", not the nearest (ties to even)";
      return;
    }
  }
  EXPECT_GT(checked, 1000000) << what;
}

TEST(DType, RoundToNearestEvenAgainstFloat64) {
  check_rne_against_f64(
      "e4m3", [](float x) { return uint32_t(f32_to_e4m3(x)); },
      [](uint32_t c) { return e4m3_to_f32(uint8_t(c)); }, 0x7e, 101);
  check_rne_against_f64(
      "e5m2", [](float x) { return uint32_t(f32_to_e5m2(x)); },
      [](uint32_t c) { return e5m2_to_f32(uint8_t(c)); }, 0x7b, 151);
  check_rne_against_f64(
      "f16", [](float x) { return uint32_t(f32_to_f16(x)); },
      [](uint32_t c) { return f16_to_f32(uint16_t(c)); }, 0x7bff, 199);
  check_rne_against_f64(
      "bf16", [](float x) { return uint32_t(f32_to_bf16(x)); },
      [](uint32_t c) { return bf16_to_f32(uint16_t(c)); }, 0x7f7f, 1009);
}

// ---- ue8m0 ----

uint8_t ue8m0_reference(float x) {
  const double a = std::fabs(double(x));
  if (std::isnan(a) || std::isinf(a)) return 0xff;
  if (a <= std::ldexp(1.0, -127)) return 0;
  const double e = std::ceil(std::log2(a)) + 127;
  return uint8_t(e > 254 ? 254 : e);
}

TEST(DType, Ue8m0ToF32) {
  for (int e = 0; e < 255; ++e)
    EXPECT_EQ(double(ue8m0_to_f32(uint8_t(e))), std::ldexp(1.0, e - 127));
  EXPECT_TRUE(std::isnan(ue8m0_to_f32(0xff)));
  EXPECT_EQ(ue8m0_to_f32(127), 1.0f);
}

TEST(DType, Ue8m0CeilAgainstFloat64) {
  auto check = [](uint32_t u) {
    const float x = f32_from_bits(u);
    const uint8_t got = f32_to_ue8m0_ceil(x);
    const uint8_t want = ue8m0_reference(x);
    if (got != want) {
      ADD_FAILURE() << "f32 0x" << std::hex << u << " (" << x << "): got 0x" << int(got)
                    << ", 2^ceil(log2 x) gives 0x" << int(want);
      return false;
    }
    // A scale is never smaller than the value (below 2^127).
    if (want < 0xfe && std::isfinite(x)) {
      EXPECT_GE(double(ue8m0_to_f32(got)), std::fabs(double(x)));
    }
    return true;
  };
  // Every power of two (incl. subnormal ones) and its neighbours, both signs.
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (int k = -149; k <= 127; ++k) {
      const uint32_t p = f32_bits(std::ldexp(1.0f, k));
      for (int d = -2; d <= 2; ++d)
        if (int64_t(p) + d >= 0) check(sign | uint32_t(int64_t(p) + d));
    }
    for (uint32_t u : {0u, 1u, 0x00400000u, 0x00400001u, 0x007fffffu, 0x7f000000u, 0x7f000001u,
                       0x7f7fffffu, 0x7f800000u, 0x7fc00000u, 0x7f800001u})
      check(sign | u);
  }
  // A sweep over all f32 bit patterns.
  for (uint64_t u = 0; u < 0x80000000u; u += 1021)
    if (!check(uint32_t(u))) break;
}

// ---- names and sizes ----

TEST(DType, NamesSizesAndParsing) {
  struct Row {
    DType t;
    const char* name;
    size_t size;
  };
  const Row rows[] = {
      {DType::F32, "F32", 4},       {DType::F64, "F64", 8},         {DType::F16, "F16", 2},
      {DType::BF16, "BF16", 2},     {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
      {DType::UE8M0, "F8_E8M0", 1}, {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
      {DType::I16, "I16", 2},       {DType::I32, "I32", 4},         {DType::I64, "I64", 8},
      {DType::BOOL, "BOOL", 1}};
  for (const Row& r : rows) {
    EXPECT_EQ(dtype_size(r.t), r.size) << r.name;
    EXPECT_STREQ(dtype_name(r.t), r.name);
    DType parsed = DType::BOOL;
    if (r.t == DType::BOOL) parsed = DType::F32;
    EXPECT_TRUE(parse_dtype(r.name, &parsed)) << r.name;
    EXPECT_EQ(parsed, r.t) << r.name;
  }
  DType out = DType::I64;
  for (const char* bad : {"", "f32", "bf16", "F8", "F8_E4M3FN", "FLOAT", "F32 ", "U32"}) {
    EXPECT_FALSE(parse_dtype(bad, &out)) << bad;
    EXPECT_EQ(out, DType::I64) << "unchanged on failure: " << bad;
  }
  EXPECT_EQ(dtype_size(DType(200)), 0u);
  EXPECT_STREQ(dtype_name(DType(200)), "?");
}

// ---- bulk API vs scalar, odd sizes and misaligned pointers ----

TEST(DType, BulkMatchesScalarAtEverySizeAndAlignment) {
  std::mt19937 rng(7);
  std::vector<float> src(300);
  for (auto& x : src) x = f32_from_bits(uint32_t(rng()));
  for (size_t i = 0; i < src.size(); i += 5) src[i] = float(int(rng() % 2000) - 1000) / 64.f;
  std::vector<uint16_t> h(src.size() + 8);
  std::vector<uint8_t> b(src.size() + 8);
  std::vector<float> f(src.size() + 8);
  for (size_t off = 0; off < 4; ++off) {
    for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(15), size_t(16), size_t(17),
                     size_t(63), size_t(257)}) {
      const float* in = src.data() + off;
      auto same = [](float a, float c) { return f32_bits(a) == f32_bits(c); };
      h.assign(h.size(), 0xabcd);
      convert_f32_to_bf16(in, h.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[off + i], f32_to_bf16(in[i]));
      ASSERT_EQ(h[off + n], 0xabcd) << "wrote past the end";
      convert_bf16_to_f32(h.data() + off, f.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_TRUE(same(f[off + i], bf16_to_f32(h[off + i])));
      convert_f32_to_f16(in, h.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[off + i], f32_to_f16(in[i]));
      convert_f16_to_f32(h.data() + off, f.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_TRUE(same(f[off + i], f16_to_f32(h[off + i])));
      b.assign(b.size(), 0x5a);
      convert_f32_to_e4m3(in, b.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(b[off + i], f32_to_e4m3(in[i]));
      ASSERT_EQ(b[off + n], 0x5a) << "wrote past the end";
      convert_e4m3_to_f32(b.data() + off, f.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_TRUE(same(f[off + i], e4m3_to_f32(b[off + i])));
      convert_f32_to_e5m2(in, b.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(b[off + i], f32_to_e5m2(in[i]));
      convert_e5m2_to_f32(b.data() + off, f.data() + off, n);
      for (size_t i = 0; i < n; ++i) ASSERT_TRUE(same(f[off + i], e5m2_to_f32(b[off + i])));
    }
  }
}

}  // namespace
}  // namespace ff
