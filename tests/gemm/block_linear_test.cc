// gemm::linear over GGUF block weights (Q8_0, Q4_K, Q5_K, Q6_K) on every backend the CPU has,
// against a float64 oracle over dequantize_gguf's values; then linear_batch, the MoE layouts and
// the validation errors.
#include <gtest/gtest.h>

#include <algorithm>
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

constexpr Block kBlocks[] = {Block::Q8_0, Block::Q4_K, Block::Q5_K, Block::Q6_K};

std::vector<float> random_floats(size_t count, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-scale, scale);
  std::vector<float> v(count);
  for (float& f : v) f = uni(rng);
  return v;
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// A block weight [n, k] with rows of ld elements, stored one byte past an aligned address.
// Q8_0 / Q4_K rows come from our quantizers over random floats; Q5_K / Q6_K rows are random
// bytes with finite f16 scales of either sign.
struct BlockWeight {
  Weight w;
  std::vector<uint8_t> storage;

  BlockWeight(Block b, int64_t n, int64_t k, int64_t ld, uint32_t seed) {
    const GgufType t = block_gguf_type(b);
    const int64_t rb = row_bytes(t, ld), bs = gguf_block_size(t), ts = gguf_type_size(t);
    storage.assign(size_t(n * rb + 1), 0);
    uint8_t* data = storage.data() + 1;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (int64_t i = 0; i < n; ++i) {
      uint8_t* row = data + i * rb;
      if (b == Block::Q8_0 || b == Block::Q4_K) {
        const auto x = random_floats(size_t(ld), seed * 7 + uint32_t(i));
        if (b == Block::Q8_0) {
          quantize_q8_0(x.data(), ld, row);
          row[2 + i % 32] = 0x80;  // -128, which files may hold (our quantizer never writes it)
          row[3 + i % 31] = 0x7f;
        } else
          quantize_q4_k(x.data(), ld, row);
        continue;
      }
      for (int64_t j = 0; j < rb; ++j) row[j] = uint8_t(rng());
      for (int64_t blk = 0; blk < ld / bs; ++blk) {
        uint8_t* p = row + blk * ts;
        if (b == Block::Q6_K) {
          put_f16(p + 208, scale(rng));
        } else {
          put_f16(p, scale(rng));
          put_f16(p + 2, scale(rng));
        }
      }
    }
    w.block = b;
    w.dtype = DType::I32;  // ignored for block weights
    w.data = data;
    w.n = n;
    w.k = k;
    w.ld = ld;
  }
};

// Y[r, i] = sum_j X[r, j] * W[i, j] in float64, and sum_j |X[r, j] * W[i, j]| for the tolerance.
void oracle(const float* x, int64_t m, int64_t ldx, const Weight& w, std::vector<double>* y,
            std::vector<double>* mag) {
  y->assign(size_t(m * w.n), 0.0);
  mag->assign(size_t(m * w.n), 0.0);
  std::vector<float> row(size_t(w.k));
  for (int64_t i = 0; i < w.n; ++i) {
    dequantize_gguf(
        block_gguf_type(w.block),
        static_cast<const uint8_t*>(w.data) + i * row_bytes(block_gguf_type(w.block), w.ld), w.k,
        row.data());
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

// The weights are exact; only the fp32 sums round (see linear_test.cc's tolerance).
double tolerance(int64_t k, double magnitude) {
  return 1e-6 * std::sqrt(double(k)) * magnitude + 1e-30;
}

// X as the int8 kernels see it (linear_kernels.h), written out independently: per row and group
// of g elements (256 for the K types, 32 for Q8_0) d = amax / qmax in fp32 (qmax 127, Q8_0
// 32767), q = round-half-even(x * (1 / d)), the value q * d (rounded to fp32, as the fp32 kernels
// see it where Q8_0 runs them).
std::vector<float> int8_rounded(const std::vector<float>& x, int64_t m, int64_t ldx, int64_t k,
                                int64_t g, float qmax) {
  std::vector<float> out = x;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j0 = 0; j0 < k; j0 += g) {
      const float* b = x.data() + r * ldx + j0;
      float amax = 0.f;
      for (int64_t i = 0; i < g; ++i) amax = std::max(amax, std::fabs(b[i]));
      const float d = amax / qmax;
      const volatile float id = d != 0.f ? 1.f / d : 0.f;  // as rounded to fp32
      for (int64_t i = 0; i < g; ++i) {
        const volatile float p = b[i] * id;
        out[size_t(r * ldx + j0 + i)] = float(std::nearbyint(p)) * d;
      }
    }
  return out;
}

// The backends and, on AVX-512 with VNNI, the int8 kernel for few rows.
struct Backend {
  Isa isa;
  BlockKernel kernel;
};
std::vector<Backend> block_backends() {
  std::vector<Backend> out;
  for (Isa isa : backends()) out.push_back({isa, BlockKernel::Float});
  if (best_isa() == Isa::Avx512 && cpu_features().avx512_vnni)
    out.push_back({Isa::Avx512, BlockKernel::Int8});
  return out;
}

constexpr float kSentinel = 12345.f;

void check_case(Block b, int64_t m, int64_t n, int64_t k, int64_t ld) {
  const int64_t ldx = k + 3, ldy = n + 2;
  BlockWeight bw(b, n, k, ld, uint32_t(n * 131 + k * 7 + int(b)));
  const auto x = random_floats(size_t(m * ldx), uint32_t(m * 17 + k));
  for (const Backend& be : block_backends()) {
    // With the int8 kernel chosen, the oracle is the product over X as it quantizes it, at
    // every m (Q8_0 at few rows: the fp32 kernels on those same rounded values).
    const bool int8 = be.isa == Isa::Avx512 && be.kernel == BlockKernel::Int8 && int8_block(b);
    std::vector<double> want, mag;
    oracle(int8 ? int8_rounded(x, m, ldx, k, int8_group(b), float(int8_qmax(b))).data() : x.data(),
           m, ldx, bw.w, &want, &mag);
    std::vector<float> y(size_t(m * ldy), kSentinel);
    linear_with_kernels(be.isa, bf16_gemm_kernel(), be.kernel, x.data(), m, ldx, bw.w, y.data(),
                        ldy);
    const std::string where = std::string(isa_name(be.isa)) + (int8 ? " int8 " : " ") +
                              gguf_type_name(block_gguf_type(b)) + " m=" + std::to_string(m) +
                              " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                              " ld=" + std::to_string(ld);
    int bad = 0;
    for (int64_t r = 0; r < m && bad < 5; ++r) {
      for (int64_t i = 0; i < n && bad < 5; ++i) {
        const double got = y[size_t(r * ldy + i)], ref = want[size_t(r * n + i)];
        if (!(std::fabs(got - ref) <= tolerance(k, mag[size_t(r * n + i)]))) {
          ADD_FAILURE() << where << ": y[" << r << "," << i << "] = " << got << ", want " << ref;
          ++bad;
        }
      }
      for (int64_t i = n; i < ldy; ++i)
        if (y[size_t(r * ldy + i)] != kSentinel) {
          ADD_FAILURE() << where << ": padding of row " << r << " written";
          ++bad;
        }
    }
  }
}

class BlockLinear : public ::testing::TestWithParam<Block> {};

TEST_P(BlockLinear, GridOfRowsAndColumns) {
  const Block b = GetParam();
  const int64_t bs = gguf_block_size(block_gguf_type(b));
  const int64_t k = b == Block::Q8_0 ? 3 * bs : 2 * bs;
  for (int64_t m : {1, 2, 3, 7, 8, 12, 13, 16, 17, 33, 128, 130})
    for (int64_t n : {1, 31, 32, 33, 257}) check_case(b, m, n, k, (m + n) % 2 ? k + bs : k);
}

TEST_P(BlockLinear, Depths) {
  const Block b = GetParam();
  const int64_t bs = gguf_block_size(block_gguf_type(b));
  for (int64_t blocks : {1, 3, 5, 9})
    for (int64_t m : {1, 4, 9, 16, 20}) check_case(b, m, 33, blocks * bs, blocks * bs + 2 * bs);
}

INSTANTIATE_TEST_SUITE_P(Gemm, BlockLinear, ::testing::ValuesIn(kBlocks),
                         [](const ::testing::TestParamInfo<Block>& info) {
                           return gguf_type_name(block_gguf_type(info.param));
                         });

// linear_batch and the two MoE layouts give, column for column, linear()'s result.
TEST(BlockLinearBatch, BatchAndGroupedMatchLinear) {
  const int64_t n = 40, k = 512;
  std::vector<BlockWeight> owned;
  for (int e = 0; e < 4; ++e) owned.emplace_back(kBlocks[e], n, k, k, uint32_t(100 + e));
  std::vector<Weight> experts;
  for (const BlockWeight& bw : owned) experts.push_back(bw.w);
  for (Isa isa : backends()) {
    // linear_batch: expert e gets e + 1 rows (the last: 20 rows, the panel path).
    std::vector<std::vector<float>> xs, ys, want;
    std::vector<LinearProblem> problems;
    for (int e = 0; e < 4; ++e) {
      const int64_t m = e == 3 ? 20 : e + 1;
      xs.push_back(random_floats(size_t(m * k), uint32_t(e + 7)));
      ys.emplace_back(size_t(m * n), 0.f);
      want.emplace_back(size_t(m * n), 0.f);
      linear_with_isa(isa, xs[e].data(), m, k, experts[size_t(e)], want[e].data(), n);
      problems.push_back({xs[e].data(), m, k, &experts[size_t(e)], ys[e].data(), n});
    }
    linear_batch_with_isa(isa, problems);
    for (int e = 0; e < 4; ++e) EXPECT_EQ(ys[e], want[e]) << isa_name(isa) << " expert " << e;
  }

  // Masked: max_m = 5, expert g uses masked[g] rows.
  const int64_t max_m = 5;
  const int32_t masked[4] = {5, 0, 2, 1};
  const auto x = random_floats(size_t(4 * max_m * k), 3);
  std::vector<float> y(size_t(4 * max_m * n), kSentinel), ref(size_t(4 * max_m * n), kSentinel);
  m_grouped_linear_masked(x.data(), max_m, k, experts, masked, y.data(), n);
  for (int g = 0; g < 4; ++g)
    linear(x.data() + g * max_m * k, masked[g], k, experts[size_t(g)], ref.data() + g * max_m * n,
           n);
  EXPECT_EQ(y, ref);

  // Contiguous: rows of experts 2, 0, padding, 3.
  const int32_t ids[] = {2, 2, 0, -1, 3, 3, 3};
  const int64_t m_sum = 7;
  const auto xc = random_floats(size_t(m_sum * k), 4);
  std::vector<float> yc(size_t(m_sum * n), kSentinel), rc(size_t(m_sum * n), 0.f);
  m_grouped_linear_contiguous(xc.data(), m_sum, k, ids, experts, yc.data(), n);
  linear(xc.data(), 2, k, experts[2], rc.data(), n);
  linear(xc.data() + 2 * k, 1, k, experts[0], rc.data() + 2 * n, n);
  linear(xc.data() + 4 * k, 3, k, experts[3], rc.data() + 4 * n, n);
  EXPECT_EQ(yc, rc);
}

TEST(BlockLinearValidate, Errors) {
  std::vector<uint8_t> data(4096, 0);
  const auto make = [&](Block b, int64_t k, int64_t ld, const void* p) {
    Weight w;
    w.block = b;
    w.data = p;
    w.n = 2;
    w.k = k;
    w.ld = ld;
    return w;
  };
  expect_error([&] { validate(make(Block::Q4_K, 100, 256, data.data()), "wq"); },
               "wq: Q4_K weight k = 100 is not a multiple of its block size 256");
  expect_error([&] { validate(make(Block::Q8_0, 32, 48, data.data()), "wk"); },
               "wk: Q8_0 weight ld = 48 is not a multiple of its block size 32");
  expect_error([&] { validate(make(Block::Q6_K, 256, 256, nullptr), "wv"); },
               "wv: weight has no data");
  expect_error([&] { validate(make(Block::Q5_K, 512, 256, data.data()), "wo"); },
               "bad weight shape");
  expect_error([&] { validate(make(Block(9), 256, 256, data.data()), "w9"); },
               "unknown weight block format 9");
  EXPECT_NO_THROW(validate(make(Block::Q5_K, 256, 512, data.data()), "ok"));
  float x[256] = {}, y[2];
  for (Isa isa : backends())
    expect_error(
        [&] { linear_with_isa(isa, x, 1, 256, make(Block::Q8_0, 40, 64, data.data()), y, 2); },
        "not a multiple");
}

// dequantize_row reads row i at data + i * row_bytes(type, ld).
TEST(BlockLinearValidate, DequantizeRow) {
  BlockWeight bw(Block::Q6_K, 3, 256, 512, 1);
  std::vector<float> got(256), want(256);
  dequantize_row(bw.w, 2, got.data());
  dequantize_gguf(GgufType::Q6_K, static_cast<const uint8_t*>(bw.w.data) + 2 * 2 * 210, 256,
                  want.data());
  EXPECT_EQ(got, want);
}

// The block kernel's choice: the CPU's default, the forcing variable's values and its errors.
TEST(BlockLinearInt8, KernelChoice) {
  CpuFeatures vnni;
  vnni.avx512 = vnni.avx512_vnni = true;
  CpuFeatures plain;
  plain.avx512 = true;
  EXPECT_EQ(resolve_block_kernel(vnni, nullptr), BlockKernel::Int8);
  EXPECT_EQ(resolve_block_kernel(vnni, ""), BlockKernel::Int8);
  EXPECT_EQ(resolve_block_kernel(plain, nullptr), BlockKernel::Float);
  EXPECT_EQ(resolve_block_kernel(vnni, "float"), BlockKernel::Float);
  EXPECT_EQ(resolve_block_kernel(vnni, "int8"), BlockKernel::Int8);
  expect_error([&] { resolve_block_kernel(plain, "int8"); }, "lacks AVX512-VNNI");
  expect_error([&] { resolve_block_kernel(vnni, "int4"); }, "FF_GEMM_BLOCK_KERNEL=int4");
  // Where the kernels apply: AVX-512 only, the K types at every m, Q8_0 past 8 rows.
  Weight w;
  w.block = Block::Q4_K;
  EXPECT_TRUE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 1));
  EXPECT_TRUE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 8));
  EXPECT_TRUE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 9));
  EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 0));
  EXPECT_FALSE(int8_block_path(Isa::Avx2, BlockKernel::Int8, w, 1));
  EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Float, w, 1));
  for (Block b : {Block::Q5_K, Block::Q6_K}) {
    w.block = b;
    EXPECT_TRUE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 1));
  }
  w.block = Block::Q8_0;
  EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 8));
  EXPECT_TRUE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 9));
  EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Float, w, 9));
  w.block = Block::None;
  EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 9));
  // exact_x keeps X as it is: the fp32 kernels.
  w.exact_x = true;
  for (Block b : kBlocks) {
    w.block = b;
    EXPECT_FALSE(int8_block_path(Isa::Avx512, BlockKernel::Int8, w, 12)) << int(b);
  }
}

// A weight with exact_x multiplies X as it is under the int8 kernel choice too: bitwise the
// exact kernel's result, at few rows and many.
TEST(BlockLinearInt8, ExactXWeightsTakeTheExactKernel) {
  if (!(best_isa() == Isa::Avx512 && cpu_features().avx512_vnni)) GTEST_SKIP() << "no AVX512-VNNI";
  for (Block b : kBlocks)
    for (int64_t m : {1, 12}) {
      const int64_t n = 40, k = 512;
      BlockWeight bw(b, n, k, k, 3);
      bw.w.exact_x = true;
      const auto x = random_floats(size_t(m * k), 8);
      std::vector<float> got(size_t(m * n)), want(size_t(m * n));
      linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Int8, x.data(), m, k, bw.w,
                          got.data(), n);
      linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Float, x.data(), m, k, bw.w,
                          want.data(), n);
      EXPECT_EQ(got, want) << gguf_type_name(block_gguf_type(b)) << " m=" << m;
    }
}

// A NaN or infinity in X has no int8 scale: linear falls back to the fp32 kernel for the call,
// so the result is the fp32 kernel's (non-finite where the input is), never a silent number.
// Columns are also the same whatever the split of n (one call on all, one per column), for the
// streaming (2 rows) and the panel kernels (12 rows).
TEST(BlockLinearInt8, NonFiniteInputAndColumnSplit) {
  if (!(best_isa() == Isa::Avx512 && cpu_features().avx512_vnni)) GTEST_SKIP() << "no AVX512-VNNI";
  for (Block b : kBlocks)
    for (int64_t m : {2, 12}) {
      const int64_t n = 70, k = 512;
      const std::string where =
          std::string(gguf_type_name(block_gguf_type(b))) + " m=" + std::to_string(m);
      BlockWeight bw(b, n, k, k, 9);
      auto x = random_floats(size_t(m * k), 5);
      std::vector<float> whole(size_t(m * n)), part(size_t(m * n));
      linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Int8, x.data(), m, k, bw.w,
                          whole.data(), n);
      for (int64_t c = 0; c < n; ++c) {
        Weight one = bw.w;
        one.n = 1;
        one.data = static_cast<const uint8_t*>(bw.w.data) + c * row_bytes(block_gguf_type(b), k);
        std::vector<float> y1(static_cast<size_t>(m));
        linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Int8, x.data(), m, k, one,
                            y1.data(), 1);
        for (int64_t r = 0; r < m; ++r) part[size_t(r * n + c)] = y1[size_t(r)];
      }
      EXPECT_EQ(whole, part) << where;
      for (float bad : {std::nanf(""), INFINITY}) {
        x[size_t(k + 7)] = bad;
        std::vector<float> got(size_t(m * n)), want(size_t(m * n));
        linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Int8, x.data(), m, k,
                            bw.w, got.data(), n);
        linear_with_kernels(Isa::Avx512, bf16_gemm_kernel(), BlockKernel::Float, x.data(), m, k,
                            bw.w, want.data(), n);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_TRUE(got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))
              << where << " " << i;
        EXPECT_FALSE(std::isfinite(got[size_t(n)])) << where;
      }
    }
}

}  // namespace
}  // namespace ff::gemm
