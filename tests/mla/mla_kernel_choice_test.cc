// Which AVX-512 kernel BF16 q runs on: a pure function of CPUID and FF_MLA_BF16_KERNEL. The two
// kernels round differently, so a choice by timing would make a model's output depend on noise.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>

#include "../child_process.h"
#include "mla/cpu/kernels.h"
#include "mla_test_util.h"

namespace ff::mla::test {
namespace {

CpuFeatures cpu(CpuVendor vendor, int family, bool bf16) {
  CpuFeatures c;
  c.avx2_fma = c.avx512 = true;
  c.avx512_bf16 = bf16;
  c.avx512_fp16 = bf16 && vendor == CpuVendor::Intel;
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
    resolve_bf16_kernel(c, env);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MlaKernelChoice, DotKernelOnlyWhereVdpbf16psIsKnownFullRate) {
  EXPECT_EQ(resolve_bf16_kernel(kZen4, nullptr), KernelId::Avx512Bf16);
  EXPECT_EQ(resolve_bf16_kernel(kZen5, nullptr), KernelId::Avx512Bf16);
  EXPECT_EQ(resolve_bf16_kernel(kSapphireRapids, nullptr), KernelId::Avx512F32);
  EXPECT_EQ(resolve_bf16_kernel(cpu(CpuVendor::Intel, 0x13, true), nullptr), KernelId::Avx512F32);
  EXPECT_EQ(resolve_bf16_kernel(cpu(CpuVendor::Other, 0x19, true), nullptr), KernelId::Avx512F32);
  EXPECT_EQ(resolve_bf16_kernel(cpu(CpuVendor::Amd, 0x17, true), nullptr), KernelId::Avx512F32);
  EXPECT_EQ(resolve_bf16_kernel(kZen3, nullptr), KernelId::Avx512F32);
  EXPECT_EQ(resolve_bf16_kernel(CpuFeatures{}, nullptr), KernelId::Avx512F32);
  // An empty variable is no override.
  EXPECT_EQ(resolve_bf16_kernel(kZen4, ""), KernelId::Avx512Bf16);
  EXPECT_EQ(resolve_bf16_kernel(kSapphireRapids, ""), KernelId::Avx512F32);
}

TEST(MlaKernelChoice, OverrideIsHonoured) {
  for (const CpuFeatures& c : {kSapphireRapids, kZen4, kZen5}) {
    EXPECT_EQ(resolve_bf16_kernel(c, "dot"), KernelId::Avx512Bf16);
    EXPECT_EQ(resolve_bf16_kernel(c, "fma"), KernelId::Avx512F32);
  }
  EXPECT_EQ(resolve_bf16_kernel(kZen3, "fma"), KernelId::Avx512F32);
}

TEST(MlaKernelChoice, BadOverrideNamesTheVariable) {
  for (const char* bad : {"DOT", "fast", " dot", "fma ", "avx512-dpbf16", "1"}) {
    const std::string msg = error_of(kZen4, bad);
    EXPECT_NE(msg.find(std::string("FF_MLA_BF16_KERNEL=") + bad + ": expected dot or fma"),
              std::string::npos)
        << bad << ": " << msg;
  }
  const std::string msg = error_of(kZen3, "dot");
  EXPECT_NE(msg.find("FF_MLA_BF16_KERNEL=dot"), std::string::npos) << msg;
  EXPECT_NE(msg.find("AVX512-BF16"), std::string::npos) << msg;
}

TEST(MlaKernelChoice, ThisProcessChoosesOnceAndByTheRule) {
  const CpuFeatures& here = cpu_features();
  if (!here.avx512 || !here.avx512_bf16) GTEST_SKIP() << "no AVX512-BF16: only one BF16 kernel";
  const char* env = std::getenv("FF_MLA_BF16_KERNEL");
  const KernelId first = default_kernel(Isa::Avx512, DType::BF16, 576, 512);
  EXPECT_EQ(default_kernel(Isa::Avx512, DType::BF16, 576, 512), first);
  EXPECT_EQ(resolve_bf16_kernel(here, env), first);
  EXPECT_EQ(resolve_bf16_kernel(here, env), first);
  // Dims and dtypes the dot kernel cannot take keep the FMA kernel whatever the choice.
  EXPECT_EQ(default_kernel(Isa::Avx512, DType::BF16, 41, 17), KernelId::Avx512F32);
  EXPECT_EQ(default_kernel(Isa::Avx512, DType::F16, 576, 512), KernelId::Avx512F32);
  std::printf("cpu vendor %d family 0x%x: BF16 kernel %s\n", int(here.vendor), here.family,
              kernel_name(first));
}

// Runs by itself only in the child process started below.
TEST(MlaKernelChoice, DISABLED_PrintDefaultBf16Kernel) {
  try {
    std::printf("BF16_KERNEL=%s\n",
                kernel_name(default_kernel(Isa::Avx512, DType::BF16, 576, 512)));
  } catch (const Error& e) {
    std::printf("BF16_KERNEL_ERROR=%s\n", e.what());
  }
}

std::string run_child(const std::string& value) {
  return ff::testing::run_self_with_env("FF_MLA_BF16_KERNEL", value,
                                        "MlaKernelChoice.DISABLED_PrintDefaultBf16Kernel");
}

TEST(MlaKernelChoice, FfMlaBf16KernelForcesTheKernelInANewProcess) {
  if (!cpu_features().avx512 || !cpu_features().avx512_bf16)
    GTEST_SKIP() << "no AVX512-BF16: only one BF16 kernel";
  std::string out = run_child("dot");
  EXPECT_NE(out.find("BF16_KERNEL=avx512-dpbf16"), std::string::npos) << out;
  out = run_child("fma");
  EXPECT_NE(out.find("BF16_KERNEL=avx512-fma"), std::string::npos) << out;
  out = run_child("");
  const std::string by_rule = kernel_name(resolve_bf16_kernel(cpu_features(), nullptr));
  EXPECT_NE(out.find("BF16_KERNEL=" + by_rule), std::string::npos) << out;
  out = run_child("bogus");
  EXPECT_NE(out.find("BF16_KERNEL_ERROR=FF_MLA_BF16_KERNEL=bogus: expected dot or fma"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace ff::mla::test
