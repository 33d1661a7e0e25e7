// CPU feature detection and the backend choice for kernels. FF_ISA=scalar|avx2|avx512 forces a
// backend (for tests and benchmarks); asking for one the CPU lacks is an error.
#pragma once

namespace ff {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

enum class CpuVendor { Other = 0, Intel = 1, Amd = 2 };

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 + FMA + F16C
  bool avx512 = false;    // F, BW, DQ, VL
  bool avx512_bf16 = false;
  // AVX512-VNNI (vpdpbusd, int8 dot products into int32): the GGUF block weights' int8 path.
  bool avx512_vnni = false;
  // AVX512-FP16 arithmetic (Sapphire Rapids on): the FP8 GEMM's W8A8 path.
  bool avx512_fp16 = false;
  // Where an instruction's speed differs between CPUs with the same flags (vdpbf16ps is half-rate
  // on Intel, full-rate on AMD Zen 4 / Zen 5), kernels choose by these rather than by timing, so
  // that results never depend on noise at start-up.
  CpuVendor vendor = CpuVendor::Other;
  int family = 0;  // CPUID display family: 6 for Intel Core / Xeon, 0x19 Zen 3 / 4, 0x1A Zen 5
};

const CpuFeatures& cpu_features();
Isa best_isa();    // best the CPU supports
Isa active_isa();  // FF_ISA if set, else best_isa(); read once
const char* isa_name(Isa isa);
// The backend an FF_ISA value asks for: nullptr or "" -> best_isa(); throws ff::Error naming the
// value for an unknown name or a backend this CPU lacks. active_isa() is this of getenv("FF_ISA").
Isa resolve_isa(const char* ff_isa);

}  // namespace ff
