// Grouped products over fp32 activations: linear_batch and the m_grouped_linear_* layouts give
// bitwise the results of one linear() per product on every backend; DeepGEMM's nn-contiguous
// grouped form equals the nt form on transposed storage; packed UE8M0 scales round-trip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/fp8_gemm_kernels.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::backends;
using testing::expect_error;
using testing::TestWeight;

std::vector<float> randv(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = nd(rng);
  return v;
}

// Mixed problems (every weight dtype, decode and prefill row counts, unaligned n and k, an
// empty one, padded strides): one linear_batch == one linear() each, bit for bit.
TEST(LinearBatch, EqualsOneLinearPerProblemOnEveryBackend) {
  struct Shape {
    DType dt;
    int64_t m, n, k;
  };
  const std::vector<Shape> shapes = {{DType::BF16, 1, 700, 512},  {DType::F8_E4M3, 3, 257, 384},
                                     {DType::F32, 0, 64, 64},     {DType::F32, 17, 100, 130},
                                     {DType::BF16, 8, 1024, 256}, {DType::F8_E4M3, 130, 300, 256},
                                     {DType::BF16, 16, 96, 2048}, {DType::F16, 5, 33, 65}};
  std::vector<TestWeight> ws;
  std::vector<std::vector<float>> xs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    ws.emplace_back(s.dt, s.n, s.k, s.k + 3, uint32_t(100 + i));
    xs.push_back(randv(std::max<int64_t>(s.m, 1) * (s.k + 5), uint32_t(200 + i)));
  }
  for (Isa isa : backends()) {
    std::vector<std::vector<float>> want(shapes.size()), got(shapes.size());
    std::vector<LinearProblem> problems;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& s = shapes[i];
      want[i].assign(size_t(std::max<int64_t>(s.m, 1) * (s.n + 2)), -3.f);
      got[i] = want[i];
      linear_with_isa(isa, xs[i].data(), s.m, s.k + 5, ws[i].w, want[i].data(), s.n + 2);
      problems.push_back({xs[i].data(), s.m, s.k + 5, &ws[i].w, got[i].data(), s.n + 2});
    }
    linear_batch_with_isa(isa, problems);
    for (size_t i = 0; i < shapes.size(); ++i)
      ASSERT_EQ(0, std::memcmp(got[i].data(), want[i].data(), want[i].size() * 4))
          << isa_name(isa) << " problem " << i;
  }
}

TEST(LinearBatch, RejectsBadProblems) {
  TestWeight w(DType::BF16, 64, 128, 128, 1);
  std::vector<float> x(128 * 4), y(64 * 4);
  expect_error(
      [&] {
        linear_batch({{{x.data(), 2, 100, &w.w, y.data(), 64}}});
      },
      "problem 0: input row stride 100 < k 128");
  std::vector<LinearProblem> ps = {{x.data(), 1, 128, &w.w, y.data(), 64},
                                   {x.data(), 1, 128, nullptr, y.data(), 64}};
  expect_error([&] { linear_batch(ps); }, "problem 1 has no weight");
  ps[1] = {x.data(), 1, 128, &w.w, y.data(), 32};
  expect_error([&] { linear_batch(ps); }, "problem 1: output row stride 32 < n 64");
  linear_batch({});  // nothing to do
}

// MoE layouts with per-expert weights: contiguous (padding rows zeroed, an expert with no rows,
// runs of one expert split in two) and masked (rows past masked_m untouched).
TEST(GroupedLinear, ContiguousAndMaskedEqualPerExpertLinear) {
  const int64_t G = 5, n = 200, k = 320;
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    std::vector<TestWeight> experts;
    std::vector<Weight> ew;
    for (int64_t g = 0; g < G; ++g) experts.emplace_back(dt, n, k, k, uint32_t(10 + g));
    for (const TestWeight& e : experts) ew.push_back(e.w);
    const std::vector<int32_t> idx = {3, 3, 3, -1, 0, 4, 4, -1, -1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const int64_t m = int64_t(idx.size());
    const std::vector<float> x = randv(m * k, 7);
    std::vector<float> y(size_t(m * n), 9.f), want(size_t(m * n), 0.f);
    m_grouped_linear_contiguous(x.data(), m, k, idx.data(), ew, y.data(), n);
    // A row's value depends on m (the kernel path), so compare each run with linear over it.
    for (int64_t i = 0; i < m;) {
      int64_t e = i + 1;
      while (e < m && idx[size_t(e)] == idx[size_t(i)]) ++e;
      if (idx[size_t(i)] >= 0)
        linear(x.data() + i * k, e - i, k, ew[size_t(idx[size_t(i)])], want.data() + i * n, n);
      i = e;
    }
    ASSERT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * 4)) << dtype_name(dt);

    const int64_t max_m = 6;
    const int32_t masked[G] = {6, 0, 1, 4, 2};
    const std::vector<float> xm = randv(G * max_m * k, 8);
    std::vector<float> ym(size_t(G * max_m * n), 5.f), wm = ym;
    m_grouped_linear_masked(xm.data(), max_m, k, ew, masked, ym.data(), n);
    for (int64_t g = 0; g < G; ++g)
      linear(xm.data() + g * max_m * k, masked[g], k, ew[size_t(g)], wm.data() + g * max_m * n, n);
    ASSERT_EQ(0, std::memcmp(ym.data(), wm.data(), ym.size() * 4)) << dtype_name(dt);
  }
}

TEST(GroupedLinear, RejectsBadLayouts) {
  TestWeight a(DType::BF16, 64, 128, 128, 1), b(DType::BF16, 64, 256, 256, 2);
  std::vector<Weight> two = {a.w, a.w}, mixed = {a.w, b.w};
  std::vector<float> x(4 * 128), y(4 * 64);
  const int32_t bad[4] = {0, 1, 2, -1};
  expect_error([&] { m_grouped_linear_contiguous(x.data(), 4, 128, bad, two, y.data(), 64); },
               "m_indices[2] = 2 is out of range [-1, 2)");
  const int32_t ok[2] = {0, 1};
  expect_error([&] { m_grouped_linear_contiguous(x.data(), 2, 128, ok, mixed, y.data(), 64); },
               "expert 1 is [64, 256] but expert 0 is [64, 128]");
  const int32_t over[2] = {1, 3};
  expect_error([&] { m_grouped_linear_masked(x.data(), 2, 128, two, over, y.data(), 64); },
               "masked_m[1] = 3 is outside [0, max_m = 2]");
  expect_error([&] { m_grouped_linear_masked(x.data(), 2, 128, {}, over, y.data(), 64); },
               "no experts");
}

// DeepGEMM's nn-contiguous form (B stored [G, k, n]) gives exactly the nt form's result on the
// same values stored [G, n, k], on every backend, FP8 and BF16.
TEST(Fp8Gemm, GroupedContiguousNnEqualsNt) {
  const int64_t G = 3, n = 192, k = 256, kb = 2, m = 256;
  std::vector<int32_t> idx(size_t(m), -1);
  for (int64_t i = 0; i < 100; ++i) idx[size_t(i)] = 2;
  for (int64_t i = 128; i < 250; ++i) idx[size_t(i)] = 0;
  const std::vector<float> asrc = randv(m * k, 3), bsrc = randv(G * n * k, 4);
  std::vector<uint8_t> aq(size_t(m * k)), bq(size_t(G * n * k)), bqt(bq.size());
  std::vector<float> as(size_t(m * kb)), bs(size_t(G * 2 * kb));
  quantize_per_token(asrc.data(), m, k, k, aq.data(), as.data());
  for (int64_t g = 0; g < G; ++g)
    quantize_per_block(bsrc.data() + g * n * k, n, k, k, bq.data() + g * n * k,
                       bs.data() + g * 2 * kb);
  std::vector<uint16_t> ab(size_t(m * k)), bb(bq.size()), bbt(bq.size());
  for (size_t i = 0; i < ab.size(); ++i) ab[i] = f32_to_bf16(asrc[i]);
  for (size_t i = 0; i < bb.size(); ++i) bb[i] = f32_to_bf16(bsrc[i]);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t t = 0; t < k; ++t) {
        bqt[size_t(g * n * k + t * n + j)] = bq[size_t(g * n * k + j * k + t)];
        bbt[size_t(g * n * k + t * n + j)] = bb[size_t(g * n * k + j * k + t)];
      }
  for (DType dt : {DType::F8_E4M3, DType::BF16}) {
    const bool f8 = dt == DType::F8_E4M3;
    Matrix a{dt, f8 ? static_cast<const void*>(aq.data()) : ab.data(),
             m,  k,
             0,  f8 ? as.data() : nullptr};
    Matrix b{dt, f8 ? static_cast<const void*>(bq.data()) : bb.data(),
             n,  k,
             0,  f8 ? bs.data() : nullptr};
    Matrix bt = b;
    bt.data = f8 ? static_cast<const void*>(bqt.data()) : bbt.data();
    for (Isa isa : backends()) {
      std::vector<float> d1(size_t(m * n), 1.f), d2(size_t(m * n), 2.f);
      m_grouped_contiguous_with_isa(isa, dt, a, b, G, idx.data(), {DType::F32, d1.data()}, {},
                                    true);
      m_grouped_contiguous_with_isa(isa, dt, a, bt, G, idx.data(), {DType::F32, d2.data()}, {},
                                    false);
      ASSERT_EQ(0, std::memcmp(d1.data(), d2.data(), d1.size() * 4))
          << isa_name(isa) << " " << dtype_name(dt);
    }
  }
  // The public entry points, and their name in errors.
  Matrix a{DType::BF16, ab.data(), m, k};
  Matrix bt{DType::BF16, bbt.data(), n, k};
  std::vector<float> d(size_t(m * n));
  m_grouped_bf16_gemm_nn_contiguous(a, bt, G, idx.data(), {DType::F32, d.data()});
  idx[0] = 7;
  expect_error(
      [&] {
        m_grouped_bf16_gemm_nn_contiguous(a, bt, G, idx.data(), {DType::F32, d.data()});
      },
      "m_grouped_bf16_gemm_nn_contiguous: m_indices[0] = 7 is out of range");
}

// Packed UE8M0: four exponent bytes per int32 along k, little-endian, MN-major with a padded
// stride; power-of-two scales round-trip exactly, others round up.
TEST(Quant, PackedUe8m0Scales) {
  const int64_t rows = 3, kb = 6, stride = 4;
  std::vector<float> s(size_t(rows * kb));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < kb; ++g) s[size_t(r * kb + g)] = std::ldexp(1.f, int(g - 10 + r));
  std::vector<int32_t> packed(size_t(2 * stride), -1);
  pack_ue8m0_scales(s.data(), rows, kb, stride, packed.data());
  // Row 0: exponents 117..122; word 0 = groups 0..3, word 1 = groups 4, 5 and two zero bytes.
  EXPECT_EQ(uint32_t(packed[0]), 117u | 118u << 8 | 119u << 16 | 120u << 24);
  EXPECT_EQ(uint32_t(packed[size_t(stride)]), 121u | 122u << 8);
  EXPECT_EQ(packed[3], -1);  // the stride's padding slot is not written
  std::vector<float> back(s.size());
  unpack_ue8m0_scales(packed.data(), rows, kb, stride, back.data());
  EXPECT_EQ(back, s);
  const float odd = 0.3f;  // 2^-2 < 0.3 < 2^-1: rounds up to 0.5
  int32_t one = 0;
  pack_ue8m0_scales(&odd, 1, 1, 1, &one);
  float got = 0;
  unpack_ue8m0_scales(&one, 1, 1, 1, &got);
  EXPECT_EQ(got, 0.5f);
  expect_error([&] { pack_ue8m0_scales(s.data(), rows, kb, 2, packed.data()); },
               "mn_stride 2 < rows 3");
}

}  // namespace
}  // namespace ff::gemm
