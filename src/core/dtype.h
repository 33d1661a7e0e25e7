// Scalar number formats and their conversions.
//
// Every conversion is bit-exact with PyTorch's (c10/util/{BFloat16,Half,Float8_e4m3fn,
// Float8_e5m2}.h): round-to-nearest-even, and the same NaN / overflow behaviour:
//   bf16  <- f32: RNE; NaN -> quiet NaN 0x7fc0 (sign kept).
//   f16   <- f32: RNE; overflow -> inf; NaN -> quiet NaN.
//   e4m3fn <- f32: RNE; |x| >= 480 (after which RNE would exceed 448) and inf -> NaN (0x7f | sign);
//                  no infinities in the format; max finite 448.
//   e5m2  <- f32: RNE; |x| >= 65536 (incl. inf) -> inf; NaN -> 0x7f | sign.
//   ue8m0: unsigned 8-bit exponent, value 2^(e-127); 0xff is NaN (DeepGEMM's scale format).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ff {

enum class DType : uint8_t { F32, F64, F16, BF16, F8_E4M3, F8_E5M2, UE8M0, I8, U8, I16, I32, I64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", "F8_E4M3", ...
// Parses a safetensors dtype string; returns false for an unknown one.
bool parse_dtype(std::string_view s, DType* out);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bfloat16 ----
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + rounding_bias) >> 16);
}

// ---- float16 (IEEE binary16) ----
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// ---- float8 ----
float e4m3_to_f32(uint8_t v);
uint8_t f32_to_e4m3(float f);
float e5m2_to_f32(uint8_t v);
uint8_t f32_to_e5m2(float f);

// Table of all 256 e4m3 values as float (index = byte), for kernels.
const float* e4m3_table();

// ---- ue8m0 (power-of-two scale) ----
inline float ue8m0_to_f32(uint8_t e) {
  if (e == 0xff) return f32_from_bits(0x7fc00000u);
  if (e == 0) return f32_from_bits(0x00400000u);  // 2^-127 is subnormal in f32
  return f32_from_bits(uint32_t(e) << 23);
}
// Smallest power of two >= |f| (DeepGEMM's ceil_to_ue8m0 on positive scales); f must be > 0.
uint8_t f32_to_ue8m0_ceil(float f);

}  // namespace ff
