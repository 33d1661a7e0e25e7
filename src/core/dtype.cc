#include "core/dtype.h"

#include "core/cpu.h"

namespace ff {

namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4},       {DType::F64, "F64", 8},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},     {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::UE8M0, "F8_E8M0", 1}, {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
    {DType::I16, "I16", 2},       {DType::I32, "I32", 4},         {DType::I64, "I64", 8},
    {DType::BOOL, "BOOL", 1},
};

// Encodes a finite float (sign stripped: abs_bits <= 0x7f7fffff) into a small float with
// `kExp` exponent bits and `kMan` mantissa bits (IEEE-style bias, subnormals), rounding to nearest
// even, in integer arithmetic (no dependence on the FP rounding mode). Returns the magnitude code
// before any format-specific overflow handling; a result past the largest finite code means
// "overflowed". Branch-free (both candidates computed, one selected) so that loops over it
// vectorise. An f32 subnormal (e32 == 0) gets a wrong implicit bit below, harmlessly: s is then
// >= 25 for every target format, so it rounds to 0, as it must.
template <int kExp, int kMan>
[[gnu::always_inline]] inline uint32_t encode_small_float(uint32_t abs_bits) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr int kShift = 23 - kMan;
  const uint32_t e32 = abs_bits >> 23;  // biased f32 exponent
  // Normal in the target: round the mantissa at bit kShift (a carry bumps the exponent: right).
  const uint32_t normal =
      ((abs_bits + ((1u << (kShift - 1)) - 1) + ((abs_bits >> kShift) & 1u)) >> kShift) -
      (uint32_t(127 - kBias) << kMan);
  // Subnormal (or zero) in the target: the value in units of the smallest subnormal
  // 2^(1-bias-man) is m * 2^(e32-150) / 2^(1-bias-man) = m / 2^s, rounded half-even. Rounding up
  // to 1 << kMan gives the smallest normal code, which is still correct. s >= 25 gives 0.
  const uint32_t m = (abs_bits & 0x7fffffu) | 0x800000u;
  int32_t s = 151 - kBias - kMan - int32_t(e32);
  s = s < 1 ? 1 : (s > 31 ? 31 : s);
  const uint32_t t = uint32_t(s - 1);
  const uint32_t q = m >> t;                        // m / 2^(s-1): the result and its round bit
  const uint32_t sticky = uint32_t((q << t) != m);  // anything below the round bit
  uint32_t sub = q >> 1;
  sub += q & (sticky | sub) & 1u;  // round up: above half, or a tie to odd
  return e32 < uint32_t(128 - kBias) ? sub : normal;
}

}  // namespace

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

const char* dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

bool parse_dtype(std::string_view s, DType* out) {
  for (const auto& d : kDTypes) {
    if (s == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

namespace {

// The f32 -> small-float conversions are written without early returns (selects instead) so
// that the bulk loops below vectorise.

// Two forms of f16 -> f32, both exact: branches and an FP multiply for scalar code, pure integer
// selects for the vector loops.
[[gnu::always_inline]] inline float f16_to_f32_impl(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t a = h & 0x7fffu;
  if (a >= 0x7c00u) {  // inf, or NaN made quiet with its payload kept
    const uint32_t payload = (a & 0x3ffu) << 13;
    return f32_from_bits(sign | 0x7f800000u | payload | (payload ? 0x400000u : 0u));
  }
  if (a >= 0x400u) return f32_from_bits(sign | ((a << 13) + (uint32_t(127 - 15) << 23)));
  return f32_from_bits(sign | f32_bits(float(a) * 0x1p-24f));  // subnormal or zero: exact
}

[[gnu::always_inline]] inline float f16_to_f32_vec(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t a = h & 0x7fffu;
  const uint32_t payload = (a & 0x3ffu) << 13;
  const uint32_t inf_nan = 0x7f800000u | payload | (payload ? 0x400000u : 0u);  // NaN: quiet
  const uint32_t normal = (a << 13) + (uint32_t(127 - 15) << 23);
  // Subnormal: a * 2^-24 (a < 1024), normalised in integer arithmetic (no FP op for the
  // vectoriser to refuse to speculate): lg = floor(log2 a), branch-free.
  uint32_t n = a, lg = 0, k;
  k = uint32_t(n > 0xffu) << 3, n >>= k, lg += k;
  k = uint32_t(n > 0xfu) << 2, n >>= k, lg += k;
  k = uint32_t(n > 0x3u) << 1, n >>= k, lg += k;
  lg += uint32_t(n > 0x1u);
  const uint32_t sub = a ? ((lg + 127 - 24) << 23) | ((a << (23 - lg)) & 0x7fffffu) : 0u;
  return f32_from_bits(sign | (a >= 0x7c00u ? inf_nan : (a >= 0x400u ? normal : sub)));
}

[[gnu::always_inline]] inline uint16_t f32_to_f16_impl(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  uint32_t r = encode_small_float<5, 10>(a);
  r = a >= 0x477ff000u ? 0x7c00u : r;                        // >= 65520 rounds to inf (and inf)
  r = a > 0x7f800000u ? 0x7e00u | ((a >> 13) & 0x3ffu) : r;  // NaN: quiet, top payload bits
  return uint16_t(sign | r);
}

[[gnu::always_inline]] inline float e4m3_to_f32_impl(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80u) << 24;
  const uint32_t mag = v & 0x7fu;
  const uint32_t normal = (mag << 20) + (uint32_t(127 - 7) << 23);
  const uint32_t sub = f32_bits(float(mag) * 0x1p-9f);  // subnormal or zero: exact
  // The NaN codes decode to 0x7ff00000, as PyTorch's.
  return f32_from_bits(sign | (mag == 0x7fu ? 0x7ff00000u : (mag >= 0x08u ? normal : sub)));
}

[[gnu::always_inline]] inline uint8_t f32_to_e4m3_impl(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  uint32_t r = encode_small_float<4, 3>(a);
  r = r == 0x7fu ? 0x7eu : r;        // (464, 480) rounds up past 448: saturate
  r = a >= 0x43f00000u ? 0x7eu : r;  // >= 480 and inf saturate to 448 (no inf in e4m3fn)
  r = a > 0x7f800000u ? 0x7fu : r;   // NaN -> NaN
  return uint8_t(sign | r);
}

// e5m2 is the top byte of an f16.
[[gnu::always_inline]] inline float e5m2_to_f32_impl(uint8_t v) {
  return f16_to_f32_impl(uint16_t(uint16_t(v) << 8));
}
[[gnu::always_inline]] inline float e5m2_to_f32_vec(uint8_t v) {
  return f16_to_f32_vec(uint16_t(uint16_t(v) << 8));
}

[[gnu::always_inline]] inline uint8_t f32_to_e5m2_impl(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  uint32_t r = encode_small_float<5, 2>(a);
  r = a >= 0x47700000u ? 0x7cu : r;  // >= 61440 rounds to inf (and inf)
  r = a > 0x7f800000u ? 0x7fu : r;   // NaN
  return uint8_t(sign | r);
}

}  // namespace

float f16_to_f32(uint16_t h) {
  return f16_to_f32_impl(h);
}
uint16_t f32_to_f16(float f) {
  return f32_to_f16_impl(f);
}
float e4m3_to_f32(uint8_t v) {
  return e4m3_to_f32_impl(v);
}
uint8_t f32_to_e4m3(float f) {
  return f32_to_e4m3_impl(f);
}
float e5m2_to_f32(uint8_t v) {
  return e5m2_to_f32_impl(v);
}
uint8_t f32_to_e5m2(float f) {
  return f32_to_e5m2_impl(f);
}

const float* e4m3_table() {
  static const auto table = [] {
    struct T {
      float v[256];
    } t;
    for (int i = 0; i < 256; ++i) t.v[i] = e4m3_to_f32(uint8_t(i));
    return t;
  }();
  return table.v;
}

uint8_t f32_to_ue8m0_ceil(float f) {
  const uint32_t u = f32_bits(f) & 0x7fffffffu;
  if (u >= 0x7f800000u) return 0xff;  // inf, NaN
  uint32_t e = u >> 23;
  if (e == 0) return u > 0x00400000u ? 1 : 0;  // f32 subnormal: 2^-126 or 2^-127
  if ((u & 0x7fffffu) != 0) ++e;               // not a power of two: round the exponent up
  return uint8_t(e > 0xfe ? 0xfe : e);
}

// Bulk conversions: the scalar code above in plain loops, compiled three times (baseline x86-64;
// AVX2 and AVX-512 with the vectoriser on) and picked by active_isa() (so FF_ISA forces one). The
// vector code is integer arithmetic computing the same bits (the goldens check every path).
#define FF_BULK_VARIANTS(name, In, Out, expr, vec_expr)                                           \
  void name##_base(const In* __restrict in, Out* __restrict out, size_t n) {                      \
    for (size_t i = 0; i < n; ++i) out[i] = expr;                                                 \
  }                                                                                               \
  __attribute__((target("avx2,fma,f16c"), optimize("tree-vectorize"))) void name##_avx2(          \
      const In* __restrict in, Out* __restrict out, size_t n) {                                   \
    for (size_t i = 0; i < n; ++i) out[i] = vec_expr;                                             \
  }                                                                                               \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"),                      \
                 optimize("tree-vectorize"))) void name##_avx512(const In* __restrict in,         \
                                                                 Out* __restrict out, size_t n) { \
    for (size_t i = 0; i < n; ++i) out[i] = vec_expr;                                             \
  }

namespace {
FF_BULK_VARIANTS(f32_to_bf16_loop, float, uint16_t, f32_to_bf16(in[i]), f32_to_bf16(in[i]))
FF_BULK_VARIANTS(bf16_to_f32_loop, uint16_t, float, bf16_to_f32(in[i]), bf16_to_f32(in[i]))
FF_BULK_VARIANTS(f32_to_f16_loop, float, uint16_t, f32_to_f16_impl(in[i]), f32_to_f16_impl(in[i]))
FF_BULK_VARIANTS(f16_to_f32_loop, uint16_t, float, f16_to_f32_impl(in[i]), f16_to_f32_vec(in[i]))
FF_BULK_VARIANTS(f32_to_e4m3_loop, float, uint8_t, f32_to_e4m3_impl(in[i]), f32_to_e4m3_impl(in[i]))
FF_BULK_VARIANTS(f32_to_e5m2_loop, float, uint8_t, f32_to_e5m2_impl(in[i]), f32_to_e5m2_impl(in[i]))
FF_BULK_VARIANTS(e5m2_to_f32_loop, uint8_t, float, e5m2_to_f32_impl(in[i]), e5m2_to_f32_vec(in[i]))
}  // namespace
#undef FF_BULK_VARIANTS

#define FF_BULK_DISPATCH(name, In, Out)                   \
  void convert_##name(const In* in, Out* out, size_t n) { \
    switch (active_isa()) {                               \
      case Isa::Avx512:                                   \
        return name##_loop_avx512(in, out, n);            \
      case Isa::Avx2:                                     \
        return name##_loop_avx2(in, out, n);              \
      default:                                            \
        return name##_loop_base(in, out, n);              \
    }                                                     \
  }

FF_BULK_DISPATCH(f32_to_bf16, float, uint16_t)
FF_BULK_DISPATCH(bf16_to_f32, uint16_t, float)
FF_BULK_DISPATCH(f32_to_f16, float, uint16_t)
FF_BULK_DISPATCH(f16_to_f32, uint16_t, float)
FF_BULK_DISPATCH(f32_to_e4m3, float, uint8_t)
FF_BULK_DISPATCH(f32_to_e5m2, float, uint8_t)
FF_BULK_DISPATCH(e5m2_to_f32, uint8_t, float)
#undef FF_BULK_DISPATCH

// A table lookup; the compiler does this about as well as a gather.
void convert_e4m3_to_f32(const uint8_t* in, float* out, size_t n) {
  const float* table = e4m3_table();
  for (size_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

}  // namespace ff
