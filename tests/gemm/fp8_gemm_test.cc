// DeepGEMM-style GEMMs: every backend against a float64 product of the unquantized inputs with
// DeepGEMM's calc_diff (< 1e-3 FP8, < 1e-5 BF16), SIMD backends against the scalar reference,
// grouped layouts, the quantization casts, and the errors for malformed layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/fp8_gemm_kernels.h"
#include "gemm/gemm.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::backends;
using testing::expect_error;
Isa fastest() {
  return best_isa();
}

// Whether an FP8 product of m rows on `isa` runs on the W8A8 (AVX512-FP16) kernel.
bool w8a8_runs(Isa isa, int64_t m) {
  return isa == Isa::Avx512 && m <= kW8A8MaxRows && cpu_features().avx512_fp16;
}

int64_t cdiv(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

std::vector<float> randn(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(nd(rng)));  // bf16 inputs, as DeepGEMM's tests
  return v;
}

// A quantized operand (K-major, packed) with its unquantized source.
struct Q {
  int64_t rows = 0, k = 0;
  std::vector<float> src;
  std::vector<uint8_t> q;
  std::vector<float> s;
  std::vector<uint16_t> bf;
  Q(int64_t rows_, int64_t k_, uint32_t seed, bool block, bool ue8m0 = false)
      : rows(rows_), k(k_), src(randn(rows_ * k_, seed)), q(size_t(rows_ * k_)) {
    s.resize(size_t((block ? cdiv(rows, 128) : rows) * cdiv(k, 128)));
    if (block)
      quantize_per_block(src.data(), rows, k, k, q.data(), s.data(), ue8m0);
    else
      quantize_per_token(src.data(), rows, k, k, q.data(), s.data(), ue8m0);
    bf.resize(src.size());
    for (size_t i = 0; i < src.size(); ++i) bf[i] = f32_to_bf16(src[i]);
  }
  Matrix fp8() const {
    Matrix mt;
    mt.dtype = DType::F8_E4M3;
    mt.data = q.data();
    mt.rows = rows;
    mt.k = k;
    mt.scales = s.data();
    return mt;
  }
  Matrix bf16() const {
    Matrix mt;
    mt.dtype = DType::BF16;
    mt.data = bf.data();
    mt.rows = rows;
    mt.k = k;
    return mt;
  }
};

// float64 oracle of A * B^T over the unquantized sources, for columns `cols` of every row.
std::vector<double> oracle(const Q& a, const Q& b, const std::vector<int64_t>& cols) {
  std::vector<double> out(size_t(a.rows) * cols.size());
  parallel_for(a.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (size_t c = 0; c < cols.size(); ++c) {
        double acc = 0;
        const float* x = &a.src[size_t(i * a.k)];
        const float* y = &b.src[size_t(cols[c] * b.k)];
        for (int64_t j = 0; j < a.k; ++j) acc += double(x[j]) * double(y[j]);
        out[size_t(i) * cols.size() + c] = acc;
      }
  });
  return out;
}

std::vector<double> pick(const std::vector<float>& d, int64_t m, int64_t n,
                         const std::vector<int64_t>& cols) {
  std::vector<double> out(size_t(m) * cols.size());
  for (int64_t i = 0; i < m; ++i)
    for (size_t c = 0; c < cols.size(); ++c)
      out[size_t(i) * cols.size() + c] = d[size_t(i * n + cols[c])];
  return out;
}

double diff(const std::vector<double>& x, const std::vector<double>& y) {
  return calc_diff(x.data(), y.data(), int64_t(x.size()));
}

std::vector<int64_t> all_cols(int64_t n) {
  std::vector<int64_t> c(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) c[size_t(j)] = j;
  return c;
}
// About 256 columns spread over n, including the last (a partial 128-block when n is unaligned).
std::vector<int64_t> sample_cols(int64_t n) {
  if (n <= 256) return all_cols(n);
  std::vector<int64_t> c;
  for (int64_t j = 0; j < n; j += n / 251) c.push_back(j);
  c.push_back(n - 1);
  return c;
}

std::vector<float> run_fp8(Isa isa, const Q& a, const Q& b, DType out = DType::F32) {
  std::vector<float> d(size_t(a.rows * b.rows));
  std::vector<uint16_t> dbf(d.size());
  Output o;
  o.dtype = out;
  o.data = out == DType::F32 ? static_cast<void*>(d.data()) : static_cast<void*>(dbf.data());
  gemm_with_isa(isa, Layout::NT, DType::F8_E4M3, a.fp8(), b.fp8(), o, {});
  if (out == DType::BF16)
    for (size_t i = 0; i < d.size(); ++i) d[i] = bf16_to_f32(dbf[i]);
  return d;
}

// DeepGEMM's normal grid: m in {1, 17, 128, 300} x the DeepSeek-V3 (n, k), on the fastest
// backend (plus AVX2 on the smaller shapes); every shape's B is quantized once.
TEST(Fp8Gemm, DeepGemmShapeGrid) {
  const int64_t shapes[][2] = {{2112, 7168},  {576, 7168},  {24576, 1536}, {32768, 512},
                               {7168, 16384}, {4096, 7168}, {7168, 2048}};
  uint32_t seed = 1;
  for (const auto& nk : shapes) {
    const int64_t n = nk[0], k = nk[1];
    const Q b(n, k, seed++, true);
    const auto cols = sample_cols(n);
    for (int64_t m : {1, 17, 128, 300}) {
      const Q a(m, k, seed++, false);
      const auto ref = oracle(a, b, cols);
      std::vector<Isa> isas{fastest()};
      if (n * k <= 2112 * 7168 && fastest() == Isa::Avx512) isas.push_back(Isa::Avx2);
      for (Isa isa : isas) {
        const double dd = diff(pick(run_fp8(isa, a, b), m, n, cols), ref);
        EXPECT_LT(dd, 1e-3) << isa_name(isa) << " m=" << m << " n=" << n << " k=" << k;
      }
    }
  }
}

// Small and unaligned shapes on every backend, including the scalar reference: each against the
// float64 oracle, and the SIMD backends against the reference to near fp32 rounding.
TEST(Fp8Gemm, UnalignedEveryBackend) {
  const int64_t shapes[][3] = {{1, 1, 1},      {3, 130, 200},   {17, 257, 129},  {33, 64, 384},
                               {20, 300, 100}, {130, 129, 513}, {9, 1000, 4096}, {2, 7, 1000},
                               {4, 133, 31},   {1, 257, 2049}};
  uint32_t seed = 100;
  for (const auto& s : shapes) {
    const Q a(s[0], s[2], seed++, false), b(s[1], s[2], seed++, true);
    const auto cols = all_cols(b.rows);
    const auto ref = oracle(a, b, cols);
    const auto want = run_fp8(Isa::Scalar, a, b);
    std::vector<double> wantd(want.begin(), want.end());
    for (Isa isa : backends()) {
      const auto got = run_fp8(isa, a, b);
      const std::vector<double> gd(got.begin(), got.end());
      // Tiny k has few products: quantization noise dominates, bound loosely there.
      EXPECT_LT(diff(gd, ref), s[2] >= 64 ? 1e-3 : 3e-3)
          << isa_name(isa) << " " << s[0] << "x" << s[1] << "x" << s[2];
      // The W8A8 kernel (few rows, AVX512-FP16) sums f16 products within a block: ~1e-8.
      EXPECT_LT(diff(gd, wantd), w8a8_runs(isa, s[0]) ? 1e-6 : 1e-9) << isa_name(isa);
    }
  }
}

// The W8A8 kernel at e4m3's extremes: every product +448 * 448 (the f16 partial sums' largest
// magnitude: no overflow, and exact, so equal to the reference to fp32 rounding), all subnormals
// (2^-9 * 2^-9 products: exact, not flushed to zero), and any finite values with random signs
// (f16 rounding of the partial sums: within 2^-9 of the sum of |products|, the bound for 5
// roundings at 2^-11); m = 1..4, a 4-column tile plus single columns, a short last k block and
// vector.
TEST(Fp8Gemm, W8A8Extremes) {
  if (!w8a8_runs(Isa::Avx512, 1)) GTEST_SKIP() << "no AVX512-FP16";
  const int64_t n = 6, k = 300, kb = cdiv(k, 128);
  for (int mode = 0; mode < 3; ++mode) {
    for (int64_t m = 1; m <= kW8A8MaxRows; ++m) {
      std::mt19937 rng(uint32_t(mode * 10 + m));
      const auto pick_byte = [&]() -> uint8_t {
        const uint8_t sign = (rng() & 1) ? 0x80 : 0;
        if (mode == 0) return 0x7e;                                    // +448
        if (mode == 1) return uint8_t(sign | (1 + rng() % 7));         // subnormals
        return uint8_t(sign | (rng() % 2 ? 0x7e : 1 + rng() % 0x7d));  // any finite value
      };
      std::vector<uint8_t> qa(size_t(m * k)), qb(size_t(n * k));
      for (auto& v : qa) v = pick_byte();
      for (auto& v : qb) v = pick_byte();
      std::vector<float> sa(size_t(m * kb));
      std::vector<float> sb(static_cast<size_t>(kb));
      for (auto& v : sa) v = std::ldexp(1.f + float(rng() % 100) / 100.f, -int(rng() % 8));
      for (auto& v : sb) v = std::ldexp(1.f + float(rng() % 100) / 100.f, -int(rng() % 8));
      // Runs A x B^T on `isa`; `magnitudes`: on |A| and |B| (the sum of |products|).
      const auto run = [&](Isa isa, bool magnitudes) {
        std::vector<uint8_t> ma = qa, mb = qb;
        if (magnitudes) {
          for (auto& v : ma) v &= 0x7f;
          for (auto& v : mb) v &= 0x7f;
        }
        Matrix a, b;
        a.dtype = b.dtype = DType::F8_E4M3;
        a.data = ma.data(), a.rows = m, a.k = k, a.scales = sa.data();
        b.data = mb.data(), b.rows = n, b.k = k, b.scales = sb.data();
        std::vector<float> d(size_t(m * n));
        Output o;
        o.data = d.data();
        gemm_with_isa(isa, Layout::NT, DType::F8_E4M3, a, b, o, {});
        return d;
      };
      const auto got = run(Isa::Avx512, false), want = run(Isa::Scalar, false);
      const auto mag = run(Isa::Scalar, true);
      for (size_t i = 0; i < got.size(); ++i) {
        const double tol = mode == 2 ? std::ldexp(mag[i], -9) : 1e-6 * std::abs(want[i]);
        EXPECT_NEAR(got[i], want[i], tol) << "mode " << mode << " m " << m << " #" << i;
        if (mode < 2) {
          EXPECT_NE(got[i], 0.f) << "mode " << mode << " m " << m << " #" << i;
        }
      }
    }
  }
}

// All four layouts, BF16 and F32 outputs, with and without C, against the NT result.
TEST(Fp8Gemm, LayoutsAndEpilogue) {
  const int64_t m = 37, n = 150, k = 300, kb = cdiv(k, 128);
  const Q a(m, k, 7, false), b(n, k, 8, true);
  // M-major A ([k, m]) and N-major B ([k, n]) copies, same logical values and scales.
  std::vector<uint8_t> at(size_t(k * m)), bt(size_t(k * n));
  std::vector<uint16_t> abt(at.size()), bbt(bt.size());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) {
      at[size_t(j * m + i)] = a.q[size_t(i * k + j)];
      abt[size_t(j * m + i)] = a.bf[size_t(i * k + j)];
    }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      bt[size_t(j * n + i)] = b.q[size_t(i * k + j)];
      bbt[size_t(j * n + i)] = b.bf[size_t(i * k + j)];
    }
  std::vector<float> c = randn(m * n, 9);
  for (DType dt : {DType::F8_E4M3, DType::BF16}) {
    for (Isa isa : backends()) {
      std::vector<float> want(size_t(m * n));
      Output o{DType::F32, want.data(), 0, nullptr, 0};
      const Matrix an = dt == DType::F8_E4M3 ? a.fp8() : a.bf16();
      const Matrix bn = dt == DType::F8_E4M3 ? b.fp8() : b.bf16();
      gemm_with_isa(isa, Layout::NT, dt, an, bn, o, {});
      Matrix am = an, bm = bn;
      am.data = dt == DType::F8_E4M3 ? static_cast<const void*>(at.data()) : abt.data();
      bm.data = dt == DType::F8_E4M3 ? static_cast<const void*>(bt.data()) : bbt.data();
      for (Layout l : {Layout::NN, Layout::TN, Layout::TT}) {
        const bool ak = l == Layout::NN, bk = l == Layout::TT;
        std::vector<float> got(size_t(m * n));
        Output og{DType::F32, got.data(), 0, nullptr, 0};
        gemm_with_isa(isa, l, dt, ak ? an : am, bk ? bn : bm, og, {});
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 1e-3f * (1 + std::fabs(want[i])));
      }
      // D = C + A B^T in bf16, with a padded ld; and in place (c == d) in fp32.
      const int64_t ld = n + 5;
      std::vector<uint16_t> dbf(size_t(m * ld), 0xffff);
      Output ob{DType::BF16, dbf.data(), ld, c.data(), 0};
      gemm_with_isa(isa, Layout::NT, dt, an, bn, ob, {});
      std::vector<float> acc = c;
      Output oa{DType::F32, acc.data(), 0, acc.data(), 0};
      gemm_with_isa(isa, Layout::NT, dt, an, bn, oa, {});
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          const float e = want[size_t(i * n + j)] + c[size_t(i * n + j)];
          ASSERT_EQ(dbf[size_t(i * ld + j)], f32_to_bf16(e)) << i << "," << j;
          ASSERT_NEAR(acc[size_t(i * n + j)], e, 1e-5f * (1 + std::fabs(e)));
        }
        for (int64_t j = n; j < ld; ++j) ASSERT_EQ(dbf[size_t(i * ld + j)], 0xffff);
      }
    }
    (void)kb;
  }
}

TEST(Bf16Gemm, AgainstFloat64) {
  const int64_t shapes[][3] = {
      {1, 2112, 7168}, {17, 576, 7168}, {128, 513, 1000}, {300, 200, 2048}};
  uint32_t seed = 300;
  for (const auto& s : shapes) {
    const Q a(s[0], s[2], seed++, false), b(s[1], s[2], seed++, true);
    const auto cols = sample_cols(b.rows);
    const auto ref = oracle(a, b, cols);
    for (Isa isa : backends()) {
      if (isa == Isa::Scalar && s[0] * s[1] * s[2] > 100'000'000) continue;
      std::vector<float> d(size_t(s[0] * s[1]));
      gemm_with_isa(isa, Layout::NT, DType::BF16, a.bf16(), b.bf16(),
                    Output{DType::F32, d.data(), 0, nullptr, 0}, {});
      EXPECT_LT(diff(pick(d, s[0], s[1], cols), ref), 1e-5) << isa_name(isa);
    }
  }
}

// Contiguous layout: 4 experts, one empty, padding rows at each segment's end.
TEST(Fp8Gemm, GroupedContiguous) {
  const int64_t G = 4, n = 320, k = 640, kb = cdiv(k, 128);
  const int64_t counts[G] = {200, 0, 37, 128};
  std::vector<int32_t> idx;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t r = 0; r < counts[g]; ++r) idx.push_back(int32_t(g));
    while (idx.size() % 128) idx.push_back(-1);
  }
  const int64_t m = int64_t(idx.size());
  const Q a(m, k, 11, false);
  std::vector<Q> bs;
  for (int64_t g = 0; g < G; ++g) bs.emplace_back(n, k, uint32_t(20 + g), true);
  std::vector<uint8_t> bq;
  std::vector<float> bsc;
  std::vector<uint16_t> bbf;
  for (const Q& b : bs) {
    bq.insert(bq.end(), b.q.begin(), b.q.end());
    bsc.insert(bsc.end(), b.s.begin(), b.s.end());
    bbf.insert(bbf.end(), b.bf.begin(), b.bf.end());
  }
  for (DType dt : {DType::F8_E4M3, DType::BF16}) {
    Matrix bm = dt == DType::F8_E4M3 ? bs[0].fp8() : bs[0].bf16();
    bm.data = dt == DType::F8_E4M3 ? static_cast<const void*>(bq.data()) : bbf.data();
    if (dt == DType::F8_E4M3) bm.scales = bsc.data();
    const Matrix am = dt == DType::F8_E4M3 ? a.fp8() : a.bf16();
    std::vector<float> want;
    for (Isa isa : backends()) {
      std::vector<float> d(size_t(m * n), 7.f);
      m_grouped_contiguous_with_isa(isa, dt, am, bm, G, idx.data(),
                                    Output{DType::F32, d.data(), 0, nullptr, 0}, {});
      // Each valid row against the float64 product with its expert; padding rows zero.
      std::vector<double> got, ref;
      for (int64_t i = 0; i < m; ++i) {
        const int32_t e = idx[size_t(i)];
        for (int64_t j = 0; j < n; ++j) {
          const float v = d[size_t(i * n + j)];
          if (e < 0) {
            ASSERT_EQ(v, 0.f);
            continue;
          }
          double acc = 0;
          for (int64_t t = 0; t < k; ++t)
            acc += double(a.src[size_t(i * k + t)]) * bs[size_t(e)].src[size_t(j * k + t)];
          got.push_back(v);
          ref.push_back(acc);
        }
      }
      EXPECT_LT(diff(got, ref), dt == DType::F8_E4M3 ? 1e-3 : 1e-5) << isa_name(isa);
      if (want.empty())
        want = d;
      else
        for (size_t i = 0; i < d.size(); ++i)
          ASSERT_NEAR(d[i], want[i], 1e-4f * (1 + std::fabs(want[i])));
    }
  }
  (void)kb;
}

// Masked layout: 3 groups of max_m = 24 rows, one empty, one full; rows past masked_m untouched.
TEST(Fp8Gemm, GroupedMasked) {
  const int64_t G = 3, max_m = 24, n = 200, k = 384;
  const int32_t masked[G] = {5, 0, 24};
  const Q a(G * max_m, k, 31, false);
  std::vector<Q> bs;
  for (int64_t g = 0; g < G; ++g) bs.emplace_back(n, k, uint32_t(40 + g), true);
  std::vector<uint8_t> bq;
  std::vector<float> bsc;
  for (const Q& b : bs) {
    bq.insert(bq.end(), b.q.begin(), b.q.end());
    bsc.insert(bsc.end(), b.s.begin(), b.s.end());
  }
  Matrix am = a.fp8();
  am.rows = max_m;
  Matrix bm = bs[0].fp8();
  bm.data = bq.data();
  bm.scales = bsc.data();
  for (Isa isa : backends()) {
    std::vector<uint16_t> d(size_t(G * max_m * n), 0x1234);
    m_grouped_masked_with_isa(isa, DType::F8_E4M3, am, bm, G, masked,
                              Output{DType::BF16, d.data(), 0, nullptr, 0}, {});
    std::vector<double> got, ref;
    for (int64_t g = 0; g < G; ++g)
      for (int64_t r = 0; r < max_m; ++r)
        for (int64_t j = 0; j < n; ++j) {
          const uint16_t v = d[size_t(((g * max_m) + r) * n + j)];
          if (r >= masked[g]) {
            ASSERT_EQ(v, 0x1234);
            continue;
          }
          double acc = 0;
          for (int64_t t = 0; t < k; ++t)
            acc += double(a.src[size_t((g * max_m + r) * k + t)]) *
                   bs[size_t(g)].src[size_t(j * k + t)];
          got.push_back(bf16_to_f32(v));
          ref.push_back(acc);
        }
    EXPECT_LT(diff(got, ref), 1e-3) << isa_name(isa);
  }
}

// K-grouped (weight gradient): 3 groups, one with k = 0; accumulation into C in place.
TEST(Fp8Gemm, KGroupedContiguous) {
  const int64_t G = 3, m = 40, n = 70;
  const int64_t ks[G] = {256, 0, 384};
  const int64_t sum_k = 640, kb = sum_k / 128;
  // Sources [sum_k, m] and [sum_k, n]; quantized per (128 k x 1 column) through their
  // transposes (per-token casts of [m, sum_k] / [n, sum_k]).
  const auto make = [&](int64_t cols, uint32_t seed, std::vector<float>& src,
                        std::vector<uint8_t>& q, std::vector<float>& sf) {
    src = randn(sum_k * cols, seed);
    std::vector<float> tr(src.size());
    for (int64_t kk = 0; kk < sum_k; ++kk)
      for (int64_t r = 0; r < cols; ++r) tr[size_t(r * sum_k + kk)] = src[size_t(kk * cols + r)];
    std::vector<uint8_t> qt(src.size());
    std::vector<float> st(size_t(cols * kb));
    quantize_per_token(tr.data(), cols, sum_k, sum_k, qt.data(), st.data());
    q.resize(src.size());
    sf.resize(st.size());
    for (int64_t kk = 0; kk < sum_k; ++kk)
      for (int64_t r = 0; r < cols; ++r) q[size_t(kk * cols + r)] = qt[size_t(r * sum_k + kk)];
    for (int64_t b = 0; b < kb; ++b)
      for (int64_t r = 0; r < cols; ++r) sf[size_t(b * cols + r)] = st[size_t(r * kb + b)];
  };
  std::vector<float> as, bs, sfa, sfb;
  std::vector<uint8_t> aq, bq;
  make(m, 80, as, aq, sfa);
  make(n, 81, bs, bq, sfb);
  const std::vector<float> c = randn(G * m * n, 82);
  std::vector<double> ref(size_t(G * m * n));
  int64_t k0 = 0;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = c[size_t((g * m + i) * n + j)];
        for (int64_t kk = k0; kk < k0 + ks[g]; ++kk)
          acc += double(as[size_t(kk * m + i)]) * bs[size_t(kk * n + j)];
        ref[size_t((g * m + i) * n + j)] = acc;
      }
    k0 += ks[g];
  }
  std::vector<float> want;
  for (Isa isa : backends()) {
    std::vector<float> d = c;  // in place: D = C + ...
    k_grouped_with_isa(isa, DType::F8_E4M3, aq.data(), sfa.data(), m, bq.data(), sfb.data(), n, ks,
                       G, d.data(), d.data());
    EXPECT_LT(diff(std::vector<double>(d.begin(), d.end()), ref), 1e-3) << isa_name(isa);
    // The k = 0 group is exactly C.
    for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(d[size_t(m * n + i)], c[size_t(m * n + i)]);
    if (want.empty())
      want = d;
    else
      for (size_t i = 0; i < d.size(); ++i)
        ASSERT_NEAR(d[i], want[i], 1e-4f * (1 + std::fabs(want[i])));
  }
  const int64_t bad[G] = {256, 100, 384};
  std::vector<float> d(size_t(G * m * n));
  expect_error(
      [&] {
        k_grouped_fp8_gemm_tn_contiguous(aq.data(), sfa.data(), m, bq.data(), sfb.data(), n, bad, G,
                                         d.data(), nullptr);
      },
      "ks[1] = 100 is not a non-negative multiple of 128");
}

// K-grouped over BF16 (no scales; any k per group, here unaligned ones and an empty group):
// every backend against float64 (calc_diff < 1e-5) and against each other; accumulation into C.
TEST(Bf16Gemm, KGroupedContiguous) {
  const int64_t G = 3, m = 33, n = 70;
  const int64_t ks[G] = {200, 0, 77};
  const int64_t sum_k = 277;
  const std::vector<float> as = randn(sum_k * m, 90), bs = randn(sum_k * n, 91);
  std::vector<uint16_t> ab(as.size()), bb(bs.size());
  for (size_t i = 0; i < as.size(); ++i) ab[i] = f32_to_bf16(as[i]);
  for (size_t i = 0; i < bs.size(); ++i) bb[i] = f32_to_bf16(bs[i]);
  const std::vector<float> c = randn(G * m * n, 92);
  std::vector<double> ref(size_t(G * m * n));
  int64_t k0 = 0;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = c[size_t((g * m + i) * n + j)];
        for (int64_t kk = k0; kk < k0 + ks[g]; ++kk)
          acc += double(bf16_to_f32(ab[size_t(kk * m + i)])) * bf16_to_f32(bb[size_t(kk * n + j)]);
        ref[size_t((g * m + i) * n + j)] = acc;
      }
    k0 += ks[g];
  }
  std::vector<float> want;
  for (Isa isa : backends()) {
    std::vector<float> d(c.size(), 0.f);
    k_grouped_with_isa(isa, DType::BF16, ab.data(), nullptr, m, bb.data(), nullptr, n, ks, G,
                       d.data(), c.data());
    EXPECT_LT(diff(std::vector<double>(d.begin(), d.end()), ref), 1e-5) << isa_name(isa);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(d[size_t(m * n + i)], c[size_t(m * n + i)]);
    if (want.empty())
      want = d;
    else
      for (size_t i = 0; i < d.size(); ++i)
        ASSERT_NEAR(d[i], want[i], 1e-4f * (1 + std::fabs(want[i])));
  }
  std::vector<float> d(c.size());
  k_grouped_bf16_gemm_tn_contiguous(ab.data(), m, bb.data(), n, ks, G, d.data(), nullptr);
  const int64_t bad[G] = {200, -1, 77};
  expect_error(
      [&] {
        k_grouped_bf16_gemm_tn_contiguous(ab.data(), m, bb.data(), n, bad, G, d.data(), nullptr);
      },
      "k_grouped_bf16_gemm_tn_contiguous: ks[1] = -1 is negative");
}

TEST(Quant, PerTokenAndPerBlockCasts) {
  const int64_t m = 5, k = 300, kb = cdiv(k, 128);
  std::vector<float> x = randn(m * k, 50);
  x[3] = 1000.f;  // a large outlier in group 0 of row 0
  for (int64_t j = 128; j < 256; ++j) x[size_t(2 * k + j)] = 0.f;  // an all-zero group
  for (bool ue8m0 : {false, true})
    for (bool recip : {false, true}) {
      std::vector<uint8_t> q(size_t(m * k));
      std::vector<float> s(size_t(m * kb));
      quantize_per_token(x.data(), m, k, k, q.data(), s.data(), ue8m0, recip);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t g = 0; g < kb; ++g) {
          float amax = 0;
          for (int64_t j = g * 128; j < std::min(k, g * 128 + 128); ++j)
            amax = std::max(amax, std::fabs(x[size_t(i * k + j)]));
          float want = std::max(amax, 1e-4f) / 448.f;
          if (ue8m0) want = std::exp2(std::ceil(std::log2(want)));
          ASSERT_EQ(s[size_t(i * kb + g)], want);
          for (int64_t j = g * 128; j < std::min(k, g * 128 + 128); ++j) {
            const float v = x[size_t(i * k + j)];
            ASSERT_EQ(q[size_t(i * k + j)], f32_to_e4m3(recip ? v * (1.f / want) : v / want));
          }
        }
      EXPECT_EQ(s[size_t(2 * kb + 1)],
                ue8m0 ? std::exp2(std::ceil(std::log2(1e-4f / 448.f))) : 1e-4f / 448.f);
    }
  // Per block: one scale per 128 x 128 block (partial edge blocks), the same cast.
  const int64_t n = 130;
  std::vector<float> w = randn(n * k, 51);
  std::vector<uint8_t> q(size_t(n * k));
  std::vector<float> s(size_t(cdiv(n, 128) * kb));
  quantize_per_block(w.data(), n, k, k, q.data(), s.data());
  for (int64_t bi = 0; bi < cdiv(n, 128); ++bi)
    for (int64_t g = 0; g < kb; ++g) {
      float amax = 0;
      for (int64_t i = bi * 128; i < std::min(n, bi * 128 + 128); ++i)
        for (int64_t j = g * 128; j < std::min(k, g * 128 + 128); ++j)
          amax = std::max(amax, std::fabs(w[size_t(i * k + j)]));
      const float sc = std::max(amax, 1e-4f) / 448.f;
      ASSERT_EQ(s[size_t(bi * kb + g)], sc);
      for (int64_t i = bi * 128; i < std::min(n, bi * 128 + 128); ++i)
        for (int64_t j = g * 128; j < std::min(k, g * 128 + 128); ++j)
          ASSERT_EQ(q[size_t(i * k + j)], f32_to_e4m3(w[size_t(i * k + j)] / sc));
    }
}

TEST(Fp8Gemm, Ue8m0Scales) {
  const Q a(17, 512, 60, false, true), b(300, 512, 61, true, true);
  const auto ref = oracle(a, b, all_cols(300));
  std::vector<float> d(size_t(17 * 300));
  GemmOptions opt;
  opt.ue8m0 = true;
  fp8_gemm_nt(a.fp8(), b.fp8(), Output{DType::F32, d.data(), 0, nullptr, 0}, opt);
  EXPECT_LT(diff(pick(d, 17, 300, all_cols(300)), ref), 1e-3);
  // Non-power-of-two scales are refused under ue8m0.
  const Q a2(17, 512, 62, false);
  try {
    fp8_gemm_nt(a2.fp8(), b.fp8(), Output{DType::F32, d.data(), 0, nullptr, 0}, opt);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
  }
}

TEST(Fp8Gemm, InvalidLayouts) {
  const Q a(4, 256, 70, false), b(130, 256, 71, true);
  std::vector<float> d(4 * 130);
  const Output o{DType::F32, d.data(), 0, nullptr, 0};
  // Scales for k = 256 (2 groups) given for a k of 384: the scales need 3 groups.
  Matrix ak = a.fp8(), bk = b.fp8();
  ak.scale_rows = 4;
  ak.scale_cols = 2;
  bk.scale_rows = 2;
  bk.scale_cols = 2;
  fp8_gemm_nt(ak, bk, o);  // consistent: fine
  Matrix a3 = ak, b3 = bk;
  a3.k = b3.k = 384;
  // (the data is never read: validation fails first)
  Matrix a3u = a.fp8();  // no scale shape given: only k is compared
  a3u.k = 384;
  expect_error([&] { fp8_gemm_nt(a3u, b.fp8(), o); }, "k differs");
  expect_error([&] { fp8_gemm_nt(a3, b3, o); }, "scales have shape [4, 2]");
  Matrix bw = bk;
  bw.scale_rows = 1;  // 130 rows need 2 row blocks
  expect_error([&] { fp8_gemm_nt(ak, bw, o); }, "needs [2, 2]");
  Matrix an = ak;
  an.scales = nullptr;
  expect_error([&] { fp8_gemm_nt(an, bk, o); }, "has no scales");
  expect_error([&] { bf16_gemm_nt(ak, bk, o); }, "expected BF16");
  expect_error(
      [&] {
        fp8_gemm_nt(ak, bk, Output{DType::F16, d.data(), 0, nullptr, 0});
      },
      "F32 or BF16");
  expect_error(
      [&] {
        fp8_gemm_nt(ak, bk, Output{DType::F32, d.data(), 100, nullptr, 0});
      },
      "leading dimension 100 < n 130");
  Matrix al = ak;
  al.ld = 100;
  expect_error([&] { fp8_gemm_nt(al, bk, o); }, "leading dimension 100 < 256");

  // Grouped: expert id out of range, mixed experts in one 128-row block, unaligned m_sum.
  const Q ag(256, 256, 72, false);
  std::vector<float> dg(256 * 130);
  const Output og{DType::F32, dg.data(), 0, nullptr, 0};
  std::vector<int32_t> idx(256, 0);
  idx[200] = 2;
  expect_error([&] { m_grouped_fp8_gemm_nt_contiguous(ag.fp8(), b.fp8(), 2, idx.data(), og); },
               "m_indices[200] = 2 is out of range [-1, 2)");
  idx[200] = -2;
  expect_error([&] { m_grouped_fp8_gemm_nt_contiguous(ag.fp8(), b.fp8(), 2, idx.data(), og); },
               "out of range");
  idx[200] = 1;
  expect_error([&] { m_grouped_fp8_gemm_nt_contiguous(ag.fp8(), b.fp8(), 2, idx.data(), og); },
               "mix experts 0 and 1");
  Matrix a200 = ag.fp8();
  a200.rows = 200;
  expect_error([&] { m_grouped_fp8_gemm_nt_contiguous(a200, b.fp8(), 2, idx.data(), og); },
               "not a multiple");
  const int32_t masked[2] = {3, 5};
  expect_error([&] { m_grouped_fp8_gemm_nt_masked(a.fp8(), b.fp8(), 2, masked, 4, og); },
               "masked_m[1] = 5 is outside [0, max_m = 4]");
}

}  // namespace
}  // namespace ff::gemm
