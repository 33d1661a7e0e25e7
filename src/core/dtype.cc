#include "core/dtype.h"

#include <cmath>

namespace ff {

namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4},         {DType::F64, "F64", 8},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},       {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::UE8M0, "F8_E8M0", 1},   {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
    {DType::I16, "I16", 2},         {DType::I32, "I32", 4},         {DType::I64, "I64", 8},
    {DType::BOOL, "BOOL", 1},
};

// Encodes a finite-or-not float into a small float with `exp_bits` exponent bits and `man_bits`
// mantissa bits (IEEE-style bias, subnormals), rounding to nearest even. Returns the magnitude
// code (no sign) before any format-specific overflow handling; a result past the largest finite
// code means "overflowed".
uint32_t encode_small_float(uint32_t abs_bits, int exp_bits, int man_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int min_normal_exp = 1 - bias;
  const int exp = int(abs_bits >> 23) - 127;
  if (exp < min_normal_exp) {
    // Subnormal in the target: the value in units of the smallest subnormal, rounded half-even.
    const float units = std::ldexp(f32_from_bits(abs_bits), man_bits - min_normal_exp);
    return uint32_t(std::nearbyint(units));  // may round up to the smallest normal: still correct
  }
  const int shift = 23 - man_bits;
  uint32_t r = abs_bits + ((1u << (shift - 1)) - 1) + ((abs_bits >> shift) & 1u);
  r >>= shift;
  return r - (uint32_t(127 - bias) << man_bits);
}

float decode_small_float(uint32_t code, int exp_bits, int man_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const uint32_t e = code >> man_bits;
  const uint32_t m = code & ((1u << man_bits) - 1);
  if (e == 0) return std::ldexp(float(m), 1 - bias - man_bits);
  return std::ldexp(float((1u << man_bits) | m), int(e) - bias - man_bits);
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

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1f;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  float mag = decode_small_float(h & 0x7fffu, 5, 10);
  return sign ? -mag : mag;
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf (incl. inf)
  return sign | uint16_t(encode_small_float(a, 5, 10));
}

float e4m3_to_f32(uint8_t v) {
  const uint32_t mag = v & 0x7fu;
  if (mag == 0x7f) return f32_from_bits((uint32_t(v & 0x80u) << 24) | 0x7fc00000u);
  const float x = decode_small_float(mag, 4, 3);
  return (v & 0x80u) ? -x : x;
}

uint8_t f32_to_e4m3(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x43f00000u) return sign | 0x7fu;  // >= 480, inf, NaN -> NaN (e4m3fn has no inf)
  const uint32_t code = encode_small_float(a, 4, 3);
  return sign | uint8_t(code > 0x7eu ? 0x7fu : code);
}

float e5m2_to_f32(uint8_t v) {
  const uint32_t mag = v & 0x7fu;
  const uint32_t sign = uint32_t(v & 0x80u) << 24;
  if (mag >= 0x7c) return f32_from_bits(sign | 0x7f800000u | (mag == 0x7c ? 0u : 0x400000u));
  const float x = decode_small_float(mag, 5, 2);
  return sign ? -x : x;
}

uint8_t f32_to_e5m2(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7fu;     // NaN
  if (a >= 0x47800000u) return sign | 0x7cu;    // >= 65536 and inf -> inf
  const uint32_t code = encode_small_float(a, 5, 2);
  return sign | uint8_t(code > 0x7cu ? 0x7cu : code);
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
  if (u > 0x7f800000u) return 0xff;
  uint32_t e = u >> 23;
  if (e == 0) return 0;  // subnormal scales clamp to 2^-127 (never used in practice)
  if ((u & 0x7fffffu) != 0) ++e;  // not a power of two: round the exponent up
  return uint8_t(e > 0xfe ? 0xfe : e);
}

}  // namespace ff
