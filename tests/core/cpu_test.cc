// CPU feature detection and the backend choice (FF_ISA).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "../child_process.h"
#include "core/core.h"

namespace ff {
namespace {

// The value of the first "key<tabs>: value" line of /proc/cpuinfo, or "" without one.
std::string proc_cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.compare(0, key.size(), key) != 0) continue;
    if (line.find_first_not_of(" \t", key.size()) != colon) continue;
    const size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream ss(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      std::string f;
      while (ss >> f) flags.insert(f);
      return flags;
    }
  }
  return {};
}

TEST(Cpu, IsaNames) {
  EXPECT_STREQ(isa_name(Isa::Scalar), "scalar");
  EXPECT_STREQ(isa_name(Isa::Avx2), "avx2");
  EXPECT_STREQ(isa_name(Isa::Avx512), "avx512");
}

TEST(Cpu, FeaturesAreConsistent) {
  const CpuFeatures& f = cpu_features();
  EXPECT_EQ(&f, &cpu_features());
  if (f.avx512) {
    EXPECT_TRUE(f.avx2_fma);
  }
  if (f.avx512_bf16) {
    EXPECT_TRUE(f.avx512);
  }
  switch (best_isa()) {
    case Isa::Avx512:
      EXPECT_TRUE(f.avx512 && f.avx512_bf16);
      break;
    case Isa::Avx2:
      EXPECT_TRUE(f.avx2_fma);
      EXPECT_FALSE(f.avx512 && f.avx512_bf16);
      break;
    case Isa::Scalar:
      EXPECT_FALSE(f.avx2_fma);
      break;
  }
  // Against the kernel's view (the OS may hide a feature the CPU has, never the reverse).
  const auto flags = proc_cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags";
  if (f.avx2_fma) {
    EXPECT_TRUE(flags.count("avx2") && flags.count("fma") && flags.count("f16c"));
  }
  if (f.avx512) {
    for (const char* x : {"avx512f", "avx512bw", "avx512dq", "avx512vl"})
      EXPECT_TRUE(flags.count(x)) << x;
  }
  if (f.avx512_bf16) {
    EXPECT_TRUE(flags.count("avx512_bf16"));
  }
  const bool has_avx2 = flags.count("avx2") && flags.count("fma") && flags.count("f16c");
  EXPECT_EQ(f.avx2_fma, has_avx2);
  const bool has_512 = has_avx2 && flags.count("avx512f") && flags.count("avx512bw") &&
                       flags.count("avx512dq") && flags.count("avx512vl");
  EXPECT_EQ(f.avx512, has_512);
  EXPECT_EQ(f.avx512_bf16, has_512 && flags.count("avx512_bf16") > 0);
}

TEST(Cpu, VendorAndFamilyMatchTheKernelsView) {
  const CpuFeatures& f = cpu_features();
  const std::string vendor = proc_cpuinfo_field("vendor_id");
  const std::string family = proc_cpuinfo_field("cpu family");
  if (vendor.empty() || family.empty())
    GTEST_SKIP() << "no vendor_id / cpu family in /proc/cpuinfo";
  const CpuVendor want = vendor == "GenuineIntel"   ? CpuVendor::Intel
                         : vendor == "AuthenticAMD" ? CpuVendor::Amd
                                                    : CpuVendor::Other;
  EXPECT_EQ(f.vendor, want) << vendor;
  EXPECT_EQ(f.family, std::stoi(family)) << family;
  std::printf("vendor %s, family 0x%x\n", vendor.c_str(), f.family);
}

TEST(Cpu, ActiveIsaFollowsFfIsa) {
  const char* env = std::getenv("FF_ISA");
  EXPECT_LE(int(active_isa()), int(best_isa()));
  EXPECT_EQ(active_isa(), resolve_isa(env));
  if (!env || !*env) {
    EXPECT_EQ(active_isa(), best_isa());
  }
  std::printf("best isa %s, active isa %s\n", isa_name(best_isa()), isa_name(active_isa()));
}

TEST(Cpu, ResolveIsa) {
  EXPECT_EQ(resolve_isa(nullptr), best_isa());
  EXPECT_EQ(resolve_isa(""), best_isa());
  EXPECT_EQ(resolve_isa("scalar"), Isa::Scalar);
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (int(isa) <= int(best_isa())) {
      EXPECT_EQ(resolve_isa(isa_name(isa)), isa);
    } else {
      try {
        resolve_isa(isa_name(isa));
        ADD_FAILURE() << "asking for " << isa_name(isa) << " on a CPU without it";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(std::string("FF_ISA=") + isa_name(isa)),
                  std::string::npos)
            << e.what();
      }
    }
  }
  for (const char* bad : {"AVX2", "sse", "avx-512", " scalar"}) {
    try {
      resolve_isa(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("FF_ISA=") + bad), std::string::npos);
      EXPECT_NE(std::string(e.what()).find("unknown backend"), std::string::npos);
    }
  }
}

// Runs by itself only in the child process started below.
TEST(Cpu, DISABLED_PrintActiveIsa) {
  try {
    std::printf("ACTIVE_ISA=%s\n", isa_name(active_isa()));
  } catch (const Error& e) {
    std::printf("ACTIVE_ISA_ERROR=%s\n", e.what());
  }
}

std::string run_child(const std::string& ff_isa) {
  return ff::testing::run_self_with_env("FF_ISA", ff_isa, "Cpu.DISABLED_PrintActiveIsa");
}

TEST(Cpu, FfIsaForcesTheBackendInANewProcess) {
  if (std::getenv("FF_ISA_CHILD_TEST_OFF")) GTEST_SKIP();
  std::string out = run_child("scalar");
  EXPECT_NE(out.find("ACTIVE_ISA=scalar"), std::string::npos) << out;
  out = run_child("");
  EXPECT_NE(out.find(std::string("ACTIVE_ISA=") + isa_name(best_isa())), std::string::npos) << out;
  out = run_child("bogus");
  EXPECT_NE(out.find("ACTIVE_ISA_ERROR=FF_ISA=bogus: unknown backend"), std::string::npos) << out;
}

}  // namespace
}  // namespace ff
