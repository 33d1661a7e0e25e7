#include "core/cpu.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace ff {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
    __builtin_cpu_init();
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    c.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    c.avx512 = c.avx2_fma && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl");
    c.avx512_bf16 = c.avx512 && __builtin_cpu_supports("avx512bf16");
    c.avx512_vnni = c.avx512 && __builtin_cpu_supports("avx512vnni");
    c.avx512_fp16 = c.avx512_bf16 && __builtin_cpu_supports("avx512fp16");
    unsigned max_leaf = 0, v[3] = {0, 0, 0};
    if (__get_cpuid(0, &max_leaf, &v[0], &v[2], &v[1])) {  // the name is in EBX, EDX, ECX
      char name[13] = {};
      std::memcpy(name, v, 12);
      if (!std::strcmp(name, "GenuineIntel")) c.vendor = CpuVendor::Intel;
      if (!std::strcmp(name, "AuthenticAMD")) c.vendor = CpuVendor::Amd;
    }
    if (max_leaf >= 1 && __get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
      const int base = int((eax >> 8) & 0xf), extended = int((eax >> 20) & 0xff);
      c.family = base == 0xf ? base + extended : base;
    }
    return c;
  }();
  return f;
}

Isa best_isa() {
  const auto& f = cpu_features();
  // The AVX-512 backend uses the BF16 dot-product instructions.
  if (f.avx512 && f.avx512_bf16) return Isa::Avx512;
  if (f.avx2_fma) return Isa::Avx2;
  return Isa::Scalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "scalar";
  }
}

Isa resolve_isa(const char* env) {
  if (!env || !*env) return best_isa();
  Isa want;
  if (!std::strcmp(env, "scalar"))
    want = Isa::Scalar;
  else if (!std::strcmp(env, "avx2"))
    want = Isa::Avx2;
  else if (!std::strcmp(env, "avx512"))
    want = Isa::Avx512;
  else
    fail("FF_ISA={}: unknown backend (expected scalar, avx2 or avx512)", env);
  FF_CHECK(int(want) <= int(best_isa()), "FF_ISA={}: this CPU supports at most {}", env,
           isa_name(best_isa()));
  return want;
}

Isa active_isa() {
  static const Isa isa = resolve_isa(std::getenv("FF_ISA"));
  return isa;
}

}  // namespace ff
