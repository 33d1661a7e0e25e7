#include "core/dtype.h"


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

// Round-to-nearest-even of m / 2^s, for s >= 1 and m < 2^24.
inline uint32_t shift_rne(uint32_t m, uint32_t s) {
  if (s > 25) return 0;  // m < 2^24 < half
  const uint32_t half = 1u << (s - 1);
  const uint32_t rem = m & ((half << 1) - 1);
  const uint32_t r = m >> s;
  return r + uint32_t(rem > half || (rem == half && (r & 1u)));
}

// Encodes a finite float (sign stripped: abs_bits <= 0x7f7fffff) into a small float with
// `exp_bits` exponent bits and `man_bits` mantissa bits (IEEE-style bias, subnormals), rounding to
// nearest even, in integer arithmetic (no dependence on the FP rounding mode). Returns the
// magnitude code before any format-specific overflow handling; a result past the largest finite
// code means "overflowed".
inline uint32_t encode_small_float(uint32_t abs_bits, int exp_bits, int man_bits) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int e32 = int(abs_bits >> 23);  // biased f32 exponent
  if (e32 < 127 + 1 - bias) {
    // Subnormal (or zero) in the target: the value in units of the target's smallest subnormal
    // 2^(1-bias-man_bits) is m * 2^(E-150) / 2^(1-bias-man_bits). Rounding up to 1 << man_bits
    // gives the smallest normal code, which is still correct.
    const uint32_t m = (abs_bits & 0x7fffffu) | (e32 ? 0x800000u : 0u);
    const int e = e32 ? e32 : 1;
    return shift_rne(m, uint32_t(151 - bias - man_bits - e));
  }
  const int shift = 23 - man_bits;
  uint32_t r = abs_bits + ((1u << (shift - 1)) - 1) + ((abs_bits >> shift) & 1u);
  r >>= shift;
  return r - (uint32_t(127 - bias) << man_bits);
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
  const uint32_t a = h & 0x7fffu;
  if (a >= 0x7c00u) {  // inf, or NaN made quiet with its payload kept
    const uint32_t m = (a & 0x3ffu) << 13;
    return f32_from_bits(sign | 0x7f800000u | m | (m ? 0x400000u : 0u));
  }
  if (a >= 0x400u) return f32_from_bits(sign | ((a << 13) + (uint32_t(127 - 15) << 23)));
  return f32_from_bits(sign | f32_bits(float(a) * 0x1p-24f));  // subnormal or zero: exact
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf (incl. inf)
  return uint16_t(sign | encode_small_float(a, 5, 10));
}

float e4m3_to_f32(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80u) << 24;
  const uint32_t mag = v & 0x7fu;
  if (mag == 0x7fu) return f32_from_bits(sign | 0x7ff00000u);  // NaN, as PyTorch decodes it
  if (mag >= 0x08u) return f32_from_bits(sign | ((mag << 20) + (uint32_t(127 - 7) << 23)));
  return f32_from_bits(sign | f32_bits(float(mag) * 0x1p-9f));  // subnormal or zero
}

uint8_t f32_to_e4m3(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7fu;   // NaN -> NaN
  if (a >= 0x43f00000u) return sign | 0x7eu;  // >= 480 and inf saturate to 448 (no inf)
  const uint32_t code = encode_small_float(a, 4, 3);
  return uint8_t(sign | (code == 0x7fu ? 0x7eu : code));  // (464, 480) rounds up: saturate
}

// e5m2 is the top byte of an f16.
float e5m2_to_f32(uint8_t v) { return f16_to_f32(uint16_t(uint16_t(v) << 8)); }

uint8_t f32_to_e5m2(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7fu;   // NaN
  if (a >= 0x47700000u) return sign | 0x7cu;  // >= 61440 rounds to inf (incl. inf)
  return uint8_t(sign | encode_small_float(a, 5, 2));
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
  if ((u & 0x7fffffu) != 0) ++e;  // not a power of two: round the exponent up
  return uint8_t(e > 0xfe ? 0xfe : e);
}

// The loops below are written so that the compiler can vectorise them (no calls, no early exits).
void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

void convert_f32_to_f16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

void convert_f16_to_f32(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

void convert_f32_to_e4m3(const float* in, uint8_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_e4m3(in[i]);
}

void convert_e4m3_to_f32(const uint8_t* in, float* out, size_t n) {
  const float* table = e4m3_table();
  for (size_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

void convert_f32_to_e5m2(const float* in, uint8_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_e5m2(in[i]);
}

void convert_e5m2_to_f32(const uint8_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = e5m2_to_f32(in[i]);
}

}  // namespace ff
