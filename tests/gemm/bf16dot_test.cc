// gemm::linear's BF16 dot kernel (vdpbf16ps, X rounded to bf16) against a float64 oracle over
// bf16-rounded X and the exact weights; its dispatch and the per-CPU choice of kernel.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../child_process.h"
#include "core/core.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"
#include "gemm_test_util.h"

namespace ff::gemm {
namespace {

using testing::random_floats;
using testing::TestWeight;

bool have_dot() {
  return int(best_isa()) >= int(Isa::Avx512) && cpu_features().avx512_bf16;
}

double round_bf16(float v) {
  return double(bf16_to_f32(f32_to_bf16(v)));
}

constexpr float kSentinel = 12345.f;

// Runs the dot kernel (through linear_with_isa, which splits n across the pool) on one case and
// checks every output against the float64 oracle of bf16(X) W^T, and that Y's padding is kept.
// Products of bf16 values are exact in fp32, so only the fp32 additions err: at most 2^-24 of
// the running magnitude each, adding up like a random walk over the lanes' and blocks' orders:
// |err| <~ 2^-24 sqrt(k) sum|x w|; 1e-6 sqrt(k) (about 16 ulp) leaves room for the constant.
void check_case(int64_t m, int64_t n, int64_t k, int64_t pad) {
  const int64_t ld = k + pad, ldx = k + 2 * pad + 1, ldy = n + pad;
  TestWeight tw(DType::BF16, n, k, ld, uint32_t(n * 131 + k * 7));
  const auto x = random_floats(size_t(m * ldx), uint32_t(m * 17 + k));
  std::vector<float> y(size_t(m * ldy), kSentinel);
  linear_with_isa(Isa::Avx512, Bf16Kernel::Dot, x.data(), m, ldx, tw.w, y.data(), ldy);
  const auto* wb = static_cast<const uint16_t*>(tw.w.data);
  const std::string where = "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                            " k=" + std::to_string(k) + " pad=" + std::to_string(pad);
  int bad = 0;
  for (int64_t r = 0; r < m && bad < 5; ++r) {
    for (int64_t i = 0; i < n && bad < 5; ++i) {
      double want = 0.0, mag = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const double p = round_bf16(x[size_t(r * ldx + j)]) * double(bf16_to_f32(wb[i * ld + j]));
        want += p;
        mag += std::fabs(p);
      }
      const double got = y[size_t(r * ldy + i)];
      const double tol = 1e-6 * std::sqrt(double(k)) * mag + 1e-30;
      if (!(std::fabs(got - want) <= tol)) {
        ADD_FAILURE() << where << " at [" << r << ", " << i << "]: got " << got << ", want " << want
                      << " (tol " << tol << ")";
        ++bad;
      }
    }
    for (int64_t i = n; i < ldy; ++i)
      ASSERT_EQ(y[size_t(r * ldy + i)], kSentinel) << where << ": wrote padding of row " << r;
  }
}

// Rows: one and two tiles of uneven height, past one 144-row block of X; n: partial panels of
// 1..31 columns, one panel, past one 256-column block; k: one element, an odd partner padded
// with zero, partial 32-element steps, several 256-deep blocks.
TEST(LinearBf16Dot, MatchesFloat64OracleOfBf16RoundedX) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  for (int64_t m : {17, 31, 64, 130, 300})
    for (int64_t n : {1, 15, 16, 33, 100, 257})
      for (int64_t k : {1, 2, 3, 31, 64, 255, 1000}) check_case(m, n, k, /*pad=*/0);
}

TEST(LinearBf16Dot, PaddedStridesMatchOracle) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  for (int64_t pad : {1, 3, 16})
    for (int64_t k : {3, 64, 255, 1000}) check_case(40, 70, k, pad);
  check_case(150, 300, 7168, 0);  // a DeepSeek-V3 depth: 28 k blocks
}

// Products the oracle computes exactly in fp32 (small integers): every kernel agrees bitwise.
TEST(LinearBf16Dot, ExactOnSmallIntegers) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  const int64_t m = 20, n = 40, k = 301;
  std::vector<uint16_t> w(size_t(n * k));
  std::vector<float> x(size_t(m * k));
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(float(int(i * 7 % 9) - 4));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 5 % 7) - 3);
  const Weight wt{DType::BF16, Block::None, w.data(), n, k, k, nullptr};
  std::vector<float> dot(size_t(m * n)), fma(size_t(m * n));
  linear_with_isa(Isa::Avx512, Bf16Kernel::Dot, x.data(), m, k, wt, dot.data(), n);
  linear_with_isa(Isa::Avx512, Bf16Kernel::Fma, x.data(), m, k, wt, fma.data(), n);
  EXPECT_EQ(dot, fma);
}

// The kernel's rows function over all of n at once, and linear_batch's split, give the same bits
// as linear_with_isa's split over the pool.
TEST(LinearBf16Dot, ResultDoesNotDependOnTheColumnSplit) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  for (int64_t m : {17, 40, 150}) {
    TestWeight tw(DType::BF16, 1000, 300, 300, 99);
    const auto x = random_floats(size_t(m * 300), 5);
    std::vector<float> split(size_t(m * 1000)), whole(split.size()), batch(split.size());
    linear_with_isa(Isa::Avx512, Bf16Kernel::Dot, x.data(), m, 300, tw.w, split.data(), 1000);
    linear_bf16dot_rows(x.data(), m, 300, tw.w, whole.data(), 1000, 0, 1000);
    // Two problems over the same weight: the batch split cuts n elsewhere.
    std::vector<float> other(split.size());
    const LinearProblem problems[] = {{x.data(), 3, 300, &tw.w, other.data(), 1000},
                                      {x.data(), m, 300, &tw.w, batch.data(), 1000}};
    linear_batch_with_isa(Isa::Avx512, Bf16Kernel::Dot, problems);
    EXPECT_EQ(0, std::memcmp(split.data(), whole.data(), split.size() * sizeof(float))) << m;
    EXPECT_EQ(0, std::memcmp(batch.data(), whole.data(), split.size() * sizeof(float))) << m;
  }
}

// Dot applies to BF16 weights on the AVX-512 backend only: everything else runs the fp32
// kernels bit for bit. At 16 rows and fewer (decode) the Dot choice still rounds X to bf16, and
// the fp32 kernels run on it: their result is bitwise the Fma choice's on bf16-rounded X, so a
// row's value does not depend on how many rows share the call beyond fp32 summation order.
TEST(LinearBf16Dot, AppliesOnlyToBf16OnAvx512) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  const auto same = [](Isa isa, DType dt, int64_t m, bool round_x_for_fma) {
    TestWeight tw(dt, 70, 90, 90, 3);
    const auto x = random_floats(size_t(m * 90), 4);
    std::vector<float> xr = x;
    if (round_x_for_fma)
      for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
    std::vector<float> a(size_t(m * 70)), b(size_t(m * 70));
    linear_with_isa(isa, Bf16Kernel::Dot, x.data(), m, 90, tw.w, a.data(), 70);
    linear_with_isa(isa, Bf16Kernel::Fma, xr.data(), m, 90, tw.w, b.data(), 70);
    return a == b;
  };
  EXPECT_TRUE(same(Isa::Avx512, DType::BF16, 16, true));
  EXPECT_TRUE(same(Isa::Avx512, DType::BF16, 1, true));
  EXPECT_FALSE(same(Isa::Avx512, DType::BF16, 16, false));
  EXPECT_FALSE(same(Isa::Avx512, DType::BF16, 17, true));  // the dot kernel itself
  EXPECT_TRUE(same(Isa::Avx2, DType::BF16, 40, false));
  EXPECT_TRUE(same(Isa::Scalar, DType::BF16, 40, false));
  for (DType dt : {DType::F32, DType::F16, DType::F8_E4M3})
    EXPECT_TRUE(same(Isa::Avx512, dt, 40, false)) << dtype_name(dt);
}

// A BF16 weight with exact_x multiplies X as it is under Dot: bitwise the Fma kernel's result.
TEST(LinearBf16Dot, ExactXWeightsKeepFp32Products) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16";
  for (int64_t m : {1, 16, 17, 40}) {
    TestWeight tw(DType::BF16, 70, 90, 90, 3);
    tw.w.exact_x = true;
    const auto x = random_floats(size_t(m * 90), 4);
    std::vector<float> a(size_t(m * 70)), b(size_t(m * 70));
    linear_with_isa(Isa::Avx512, Bf16Kernel::Dot, x.data(), m, 90, tw.w, a.data(), 70);
    linear_with_isa(Isa::Avx512, Bf16Kernel::Fma, x.data(), m, 90, tw.w, b.data(), 70);
    EXPECT_EQ(a, b) << "m=" << m;
  }
}

// ---- the choice of kernel ----------------------------------------------------------------

CpuFeatures cpu(CpuVendor vendor, int family, bool bf16) {
  CpuFeatures c;
  c.avx2_fma = c.avx512 = true;
  c.avx512_bf16 = bf16;
  c.vendor = vendor;
  c.family = family;
  return c;
}

const CpuFeatures kSapphireRapids = cpu(CpuVendor::Intel, 6, true);
const CpuFeatures kZen3 = cpu(CpuVendor::Amd, 0x19, false);
const CpuFeatures kZen4 = cpu(CpuVendor::Amd, 0x19, true);
const CpuFeatures kZen5 = cpu(CpuVendor::Amd, 0x1a, true);

std::string error_of(const CpuFeatures& c, const char* env) {
  try {
    resolve_bf16_gemm_kernel(c, env);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Bf16GemmKernelChoice, DotOnlyWhereVdpbf16psIsKnownFullRate) {
  // The default is "auto": by CPU identity, dot where vdpbf16ps runs at twice the FMA rate.
  for (const char* v : {static_cast<const char*>(nullptr), "", "auto"}) {
    EXPECT_EQ(resolve_bf16_gemm_kernel(kZen4, v), Bf16Kernel::Dot);
    EXPECT_EQ(resolve_bf16_gemm_kernel(kZen5, v), Bf16Kernel::Dot);
    EXPECT_EQ(resolve_bf16_gemm_kernel(kSapphireRapids, v), Bf16Kernel::Fma);
    EXPECT_EQ(resolve_bf16_gemm_kernel(cpu(CpuVendor::Other, 0x19, true), v), Bf16Kernel::Fma);
    EXPECT_EQ(resolve_bf16_gemm_kernel(cpu(CpuVendor::Amd, 0x17, true), v), Bf16Kernel::Fma);
    EXPECT_EQ(resolve_bf16_gemm_kernel(kZen3, v), Bf16Kernel::Fma);
    EXPECT_EQ(resolve_bf16_gemm_kernel(CpuFeatures{}, v), Bf16Kernel::Fma);
  }
  EXPECT_EQ(resolve_bf16_gemm_kernel(kSapphireRapids, "dot"), Bf16Kernel::Dot);
  EXPECT_EQ(resolve_bf16_gemm_kernel(kZen4, "fma"), Bf16Kernel::Fma);
}

TEST(Bf16GemmKernelChoice, OverrideIsHonoured) {
  for (const CpuFeatures& c : {kSapphireRapids, kZen4, kZen5}) {
    EXPECT_EQ(resolve_bf16_gemm_kernel(c, "dot"), Bf16Kernel::Dot);
    EXPECT_EQ(resolve_bf16_gemm_kernel(c, "fma"), Bf16Kernel::Fma);
  }
  EXPECT_EQ(resolve_bf16_gemm_kernel(kZen3, "fma"), Bf16Kernel::Fma);
}

TEST(Bf16GemmKernelChoice, BadOverrideNamesTheValue) {
  for (const char* bad : {"DOT", "fast", " dot", "fma ", "1"}) {
    const std::string msg = error_of(kZen4, bad);
    EXPECT_NE(msg.find(std::string("FF_GEMM_BF16_KERNEL=") + bad + ": expected dot, fma or auto"),
              std::string::npos)
        << bad << ": " << msg;
  }
  const std::string msg = error_of(kZen3, "dot");
  EXPECT_NE(msg.find("FF_GEMM_BF16_KERNEL=dot"), std::string::npos) << msg;
  EXPECT_NE(msg.find("AVX512-BF16"), std::string::npos) << msg;
}

TEST(Bf16GemmKernelChoice, DotWithoutTheInstructionIsRefused) {
  if (cpu_features().avx512_bf16) GTEST_SKIP() << "this CPU has AVX512-BF16";
  const TestWeight tw(DType::BF16, 4, 4, 4, 1);
  std::vector<float> x(20 * 4), y(20 * 4);
  testing::expect_error(
      [&] { linear_with_isa(Isa::Scalar, Bf16Kernel::Dot, x.data(), 20, 4, tw.w, y.data(), 4); },
      "AVX512-BF16");
  testing::expect_error([] { ScopedBf16GemmKernel dot(Bf16Kernel::Dot); }, "AVX512-BF16");
}

// A scoped choice reaches the public entry and is undone afterwards.
TEST(Bf16GemmKernelChoice, ScopedChoiceReachesLinearAndIsRestored) {
  const Bf16Kernel before = bf16_gemm_kernel();
  const uint16_t one = f32_to_bf16(1.f);
  const Weight w{DType::BF16, Block::None, &one, 1, 1, 1, nullptr};
  const std::vector<float> x(20, 1.f + 1.f / 1024.f);  // 1 once rounded to bf16
  std::vector<float> y(20);
  {
    const ScopedBf16GemmKernel fma(Bf16Kernel::Fma);
    EXPECT_EQ(bf16_gemm_kernel(), Bf16Kernel::Fma);
    linear(x.data(), 20, 1, w, y.data(), 1);
    EXPECT_EQ(y[0], x[0]);
  }
  EXPECT_EQ(bf16_gemm_kernel(), before);
  if (!have_dot() || active_isa() != Isa::Avx512) return;
  {
    const ScopedBf16GemmKernel dot(Bf16Kernel::Dot);
    linear(x.data(), 20, 1, w, y.data(), 1);
    EXPECT_EQ(y[0], 1.f);
  }
  EXPECT_EQ(bf16_gemm_kernel(), before);
}

// Runs by itself only in the child processes started below: the kernel the public entry used,
// told apart by a product whose bf16 rounding of X shows.
TEST(Bf16GemmKernelChoice, DISABLED_PrintDefaultKernel) {
  try {
    std::printf("BF16_GEMM_KERNEL=%s\n", bf16_gemm_kernel() == Bf16Kernel::Dot ? "dot" : "fma");
    const uint16_t one = f32_to_bf16(1.f);
    const Weight w{DType::BF16, Block::None, &one, 1, 1, 1, nullptr};
    std::vector<float> x(20, 1.f + 1.f / 1024.f), y(20);  // rounds to 1 in bf16
    if (int(active_isa()) >= int(Isa::Avx512)) {
      linear(x.data(), 20, 1, w, y.data(), 1);
      std::printf("LINEAR_ROUNDS_X=%d\n", int(y[0] == 1.f));
    }
  } catch (const Error& e) {
    std::printf("BF16_GEMM_KERNEL_ERROR=%s\n", e.what());
  }
}

std::string run_child(const std::string& value) {
  return ff::testing::run_self_with_env("FF_GEMM_BF16_KERNEL", value,
                                        "Bf16GemmKernelChoice.DISABLED_PrintDefaultKernel");
}

TEST(Bf16GemmKernelChoice, EnvironmentForcesTheKernelInANewProcess) {
  if (!have_dot()) GTEST_SKIP() << "no AVX512-BF16: only one BF16 kernel";
  std::string out = run_child("dot");
  EXPECT_NE(out.find("BF16_GEMM_KERNEL=dot"), std::string::npos) << out;
  if (active_isa() == Isa::Avx512) {
    EXPECT_NE(out.find("LINEAR_ROUNDS_X=1"), std::string::npos) << out;
  }
  out = run_child("fma");
  EXPECT_NE(out.find("BF16_GEMM_KERNEL=fma"), std::string::npos) << out;
  EXPECT_EQ(out.find("LINEAR_ROUNDS_X=1"), std::string::npos) << out;
  out = run_child("");
  const bool dot = resolve_bf16_gemm_kernel(cpu_features(), nullptr) == Bf16Kernel::Dot;
  EXPECT_NE(out.find(std::string("BF16_GEMM_KERNEL=") + (dot ? "dot" : "fma")), std::string::npos)
      << out;
  out = run_child("bogus");
  EXPECT_NE(out.find("BF16_GEMM_KERNEL_ERROR=FF_GEMM_BF16_KERNEL=bogus: expected dot, fma or auto"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace ff::gemm
