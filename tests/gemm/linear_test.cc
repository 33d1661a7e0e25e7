// gemm::linear on every backend the CPU has, against a float64 oracle over dequantized weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::backends;
using testing::expect_error;
using testing::random_floats;
using testing::TestWeight;

// Y[r, i] = sum_j X[r, j] * W[i, j] in float64, plus sum_j |X[r, j] * W[i, j]| for the tolerance.
void oracle(const float* x, int64_t m, int64_t ldx, const Weight& w, std::vector<double>* y,
            std::vector<double>* mag) {
  y->assign(size_t(m * w.n), 0.0);
  mag->assign(size_t(m * w.n), 0.0);
  std::vector<float> row(size_t(w.k));
  for (int64_t i = 0; i < w.n; ++i) {
    dequantize_row(w, i, row.data());
    for (int64_t r = 0; r < m; ++r) {
      double s = 0.0, a = 0.0;
      for (int64_t j = 0; j < w.k; ++j) {
        const double p = double(x[r * ldx + j]) * double(row[size_t(j)]);
        s += p;
        a += std::fabs(p);
      }
      (*y)[size_t(r * w.n + i)] = s;
      (*mag)[size_t(r * w.n + i)] = a;
    }
  }
}

// fp32 products are exact in float64; each fp32 addition (and, for FP8, the rounding of
// weight * scale) adds at most 2^-24 relative to the running magnitude, and with the
// different summation orders of the backends (lanes, blocks) the errors behave like a random
// walk: |err| <~ 2^-24 * sqrt(k) * sum|x w|. 1e-6 (about 16 ulp) leaves room for the constant.
double tolerance(int64_t k, double magnitude) {
  return 1e-6 * std::sqrt(double(k)) * magnitude + 1e-30;
}

constexpr float kSentinel = 12345.f;

// Runs every backend on one case and checks every output against the oracle (computed once),
// and that the row padding of Y is untouched.
void check_case(DType dtype, int64_t m, int64_t n, int64_t k, int64_t pad) {
  const int64_t ld = k + pad, ldx = k + 2 * pad + 1, ldy = n + pad;
  TestWeight tw(dtype, n, k, ld, uint32_t(n * 131 + k * 7 + int(dtype)));
  const auto x = random_floats(size_t(std::max<int64_t>(m, 1) * ldx), uint32_t(m * 17 + k));
  std::vector<double> want, mag;
  oracle(x.data(), m, ldx, tw.w, &want, &mag);
  for (Isa isa : backends()) {
    std::vector<float> y(size_t(std::max<int64_t>(m, 1) * ldy), kSentinel);
    // The fp32-product kernels; the BF16 dot kernel has its own oracle (bf16dot_test.cc).
    linear_with_isa(isa, Bf16Kernel::Fma, x.data(), m, ldx, tw.w, y.data(), ldy);
    const std::string where = std::string(isa_name(isa)) + " " + dtype_name(dtype) +
                              " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                              " k=" + std::to_string(k) + " pad=" + std::to_string(pad);
    int bad = 0;
    for (int64_t r = 0; r < m && bad < 5; ++r) {
      for (int64_t i = 0; i < n && bad < 5; ++i) {
        const double got = y[size_t(r * ldy + i)], ref = want[size_t(r * n + i)];
        const double tol = tolerance(k, mag[size_t(r * n + i)]);
        if (!(std::fabs(got - ref) <= tol)) {
          ADD_FAILURE() << where << " at [" << r << ", " << i << "]: got " << got << ", want "
                        << ref << " (tol " << tol << ")";
          ++bad;
        }
      }
      for (int64_t i = n; i < ldy; ++i) {
        ASSERT_EQ(y[size_t(r * ldy + i)], kSentinel) << where << ": wrote padding of row " << r;
      }
    }
    if (m == 0) {
      EXPECT_EQ(y[0], kSentinel) << where;
    }
  }
}

const DType kDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3};

struct Shape {
  int64_t n, k;
};

// Odd sizes of the tiny test models and FP8 blocks cut by n and k. The rows cover m = 0, every
// streaming tile height (1..8; 9..16 as two tiles for non-FP8 weights on AVX-512), broadcast
// rows on AVX-512 with 1..4 groups of 16 rows, full and partial (13..64), and in 64-row blocks
// with a short last block (65, 100, 130, 300), and AVX2's packed panels with uneven row tiles,
// past one 144-row block of X (300).
TEST(Linear, MatchesFloat64OracleOnEveryBackend) {
  const int64_t rows[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,   9,   12,
                          16, 17, 31, 33, 48, 63, 64, 65, 100, 130, 300};
  const Shape shapes[] = {{1, 1}, {7, 40}, {64, 96}, {130, 160}, {257, 320}, {33, 192}};
  for (DType dt : kDTypes)
    for (const Shape& s : shapes)
      for (int64_t m : rows) check_case(dt, m, s.n, s.k, /*pad=*/3);
}

TEST(Linear, LongRowsMatchOracle) {
  // k = 7168 (a DeepSeek-V3 projection, 576 x 7168): many panel depths, broadcast-row passes,
  // FP8 blocks and streaming column chunks; m covers every path.
  const int64_t rows[] = {1, 5, 12, 16, 17, 40, 64, 80};
  for (DType dt : kDTypes)
    for (int64_t m : rows) check_case(dt, m, 576, 7168, /*pad=*/0);
}

TEST(Linear, DenseAndPaddedStridesAgree) {
  for (DType dt : kDTypes)
    for (int64_t m : {1, 4, 20})
      for (int64_t pad : {0, 1, 16}) check_case(dt, m, 100, 260, pad);
}

// Every non-NaN e4m3 code, subnormals included, through both SIMD paths: with one-hot rows of
// X each output is a single weight, which must equal dequantize_row's value exactly.
TEST(Linear, Fp8DecodeIsExactForEveryCode) {
  const int64_t n = 3, k = 256;
  std::vector<uint8_t> codes(size_t(n * k));
  for (int64_t i = 0; i < n * k; ++i) codes[size_t(i)] = uint8_t((i * 37 + i / k) & 0xff);
  for (uint8_t& c : codes)
    if ((c & 0x7f) == 0x7f) c = 0;
  const float scales[2] = {0.75f, 3.0e-3f};  // one row block, two column blocks
  Weight w{DType::F8_E4M3, Block::None, codes.data(), n, k, k, scales};
  std::vector<float> want(size_t(n * k));
  for (int64_t i = 0; i < n; ++i) dequantize_row(w, i, &want[size_t(i * k)]);
  for (Isa isa : backends()) {
    for (int64_t m : {int64_t(1), int64_t(7), k}) {  // streaming and panel paths
      for (int64_t j0 = 0; j0 < k; j0 += m) {
        const int64_t rows = std::min(m, k - j0);
        std::vector<float> x(size_t(rows * k), 0.f), y(size_t(rows * n), 0.f);
        for (int64_t r = 0; r < rows; ++r) x[size_t(r * k + j0 + r)] = 1.f;
        linear_with_isa(isa, x.data(), rows, k, w, y.data(), n);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_EQ(y[size_t(r * n + i)], want[size_t(i * k + j0 + r)])
                << isa_name(isa) << " m=" << m << " code " << int(codes[size_t(i * k + j0 + r)]);
          }
        }
      }
    }
  }
}

// The pool's split of n must not change any bit: compare against one thread doing all of n.
TEST(Linear, ResultDoesNotDependOnTheColumnSplit) {
  for (Isa isa : backends()) {
    for (DType dt : kDTypes) {
      for (int64_t m : {1, 6, 12, 15, 40, 70}) {  // streaming, broadcast rows, panels (AVX2)
        TestWeight tw(dt, 1000, 300, 300, 99);
        const auto x = random_floats(size_t(m * 300), 5);
        std::vector<float> split(size_t(m * 1000)), whole(size_t(m * 1000));
        linear_with_isa(isa, Bf16Kernel::Fma, x.data(), m, 300, tw.w, split.data(), 1000);
        const auto rows = isa == Isa::Avx512 ? linear_avx512_rows
                          : isa == Isa::Avx2 ? linear_avx2_rows
                                             : linear_ref_rows;
        rows(x.data(), m, 300, tw.w, whole.data(), 1000, 0, 1000);
        EXPECT_EQ(0, std::memcmp(split.data(), whole.data(), split.size() * sizeof(float)))
            << isa_name(isa) << " " << dtype_name(dt) << " m=" << m;
      }
    }
  }
}

TEST(Linear, PublicEntryUsesTheActiveBackend) {
  TestWeight tw(DType::BF16, 70, 50, 50, 3);
  const auto x = random_floats(3 * 50, 4);
  std::vector<float> a(3 * 70), b(3 * 70);
  linear(x.data(), 3, 50, tw.w, a.data(), 70);
  linear_with_isa(active_isa(), x.data(), 3, 50, tw.w, b.data(), 70);
  EXPECT_EQ(a, b);
}

// ---- failures ----------------------------------------------------------------------------

TEST(Linear, ValidateRejectsMalformedWeights) {
  float data[8] = {};
  float scale = 1.f;
  expect_error(
      [&] {
        validate(Weight{DType::F32, Block::None, nullptr, 2, 4, 4, nullptr}, "wq");
      },
      "wq: weight has no data");
  expect_error(
      [&] {
        validate(Weight{DType::F32, Block::None, data, 2, 4, 3, nullptr}, "wq");
      },
      "wq: bad weight shape [2, 4] (ld 3)");
  expect_error(
      [&] {
        validate(Weight{DType::F32, Block::None, data, 0, 4, 4, nullptr}, "wq");
      },
      "bad weight shape");
  expect_error(
      [&] {
        validate(Weight{DType::F32, Block::None, data, 2, -1, 4, nullptr}, "wq");
      },
      "bad weight shape");
  expect_error(
      [&] {
        validate(Weight{DType::F8_E4M3, Block::None, data, 2, 4, 4, nullptr}, "w1");
      },
      "w1: F8_E4M3 weight without weight_scale_inv");
  expect_error(
      [&] {
        validate(Weight{DType::I32, Block::None, data, 2, 4, 4, nullptr}, "w2");
      },
      "w2: unsupported weight dtype I32");
  expect_error(
      [&] {
        validate(Weight{DType::F8_E5M2, Block::None, data, 2, 4, 4, &scale}, "w3");
      },
      "unsupported weight dtype F8_E5M2");
  EXPECT_NO_THROW(validate(Weight{DType::F8_E4M3, Block::None, data, 2, 4, 4, &scale}, "ok"));
}

TEST(Linear, RejectsBadArgumentsAndWritesNothing) {
  float wdata[12] = {}, x[8] = {}, y[8];
  std::fill(std::begin(y), std::end(y), kSentinel);
  const Weight w{DType::F32, Block::None, wdata, 3, 4, 4, nullptr};
  for (Isa isa : backends()) {
    expect_error([&] { linear_with_isa(isa, x, 1, 3, w, y, 3); }, "input row stride 3 < k 4");
    expect_error([&] { linear_with_isa(isa, x, 1, 4, w, y, 2); }, "output row stride 2 < n 3");
    expect_error([&] { linear_with_isa(isa, nullptr, 1, 4, w, y, 3); }, "null input or output");
    expect_error([&] { linear_with_isa(isa, x, -1, 4, w, y, 3); }, "negative row count");
    expect_error([&] { linear_with_isa(isa, x, 1, 4, Weight{}, y, 3); },
                 "linear: weight has no data");
  }
  for (float v : y) EXPECT_EQ(v, kSentinel);
  // m == 0 reads nothing: not even the weight is looked at.
  EXPECT_NO_THROW(linear(nullptr, 0, 0, Weight{}, nullptr, 0));
}

}  // namespace
}  // namespace ff::gemm
