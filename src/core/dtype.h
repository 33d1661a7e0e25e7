// Scalar number formats and their conversions.
//
// Every conversion is bit-exact with PyTorch's on the CPU (c10/util/{BFloat16,Half,Float8_e4m3fn,
// Float8_e5m2}.h, `.to(dtype)`): round-to-nearest-even, and the same NaN / overflow behaviour.
// tests/core/dtype_golden_test.cc checks this against tests/fixtures/dtype/goldens.bin (made by
// tools/make_dtype_goldens.py) for every f16 / bf16 / fp8 value, every tie and 100k random floats.
//   bf16  <- f32: RNE; NaN -> quiet NaN, sign and top payload bits kept ((bits >> 16) | 0x40).
//                 (PyTorch's own NaN bits differ between its CPU code paths: 0x7fc0 or 0xffff.)
//   f16   <- f32: RNE; |x| >= 65520 (incl. inf) -> inf; NaN -> sign | 0x7e00 | top payload bits
//                 (what F16C's vcvtps2ph and PyTorch give).
//   e4m3fn <- f32: RNE, saturating: |x| > 448 that rounds past 448 (464 ties down to it) and
//                  +-inf -> +-448 (0x7e | sign); NaN -> 0x7f | sign. No infinities in the format.
//                  (PyTorch's CPU cast since pytorch/pytorch#178817; before it, and in
//                  ml_dtypes, |x| > 464 and inf gave NaN.)
//   e5m2  <- f32: RNE; |x| >= 61440 (incl. inf) -> inf (0x7c | sign); NaN -> 0x7f | sign.
//   f32 <- f16 / bf16 / e5m2: exact; NaNs keep sign and payload; f16 / e5m2 NaNs come out quiet
//                 (as vcvtph2ps does), bf16 NaNs are a plain shift (as PyTorch).
//   f32 <- e4m3fn: exact; the NaN codes give 0x7ff00000 | sign (as PyTorch).
//   ue8m0: unsigned 8-bit exponent, value 2^(e-127); 0xff is NaN (DeepGEMM's scale format).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ff {

enum class DType : uint8_t {
  F32,
  F64,
  F16,
  BF16,
  F8_E4M3,
  F8_E5M2,
  UE8M0,
  I8,
  U8,
  I16,
  I32,
  I64,
  BOOL
};

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
inline float bf16_to_f32(uint16_t h) {
  return f32_from_bits(uint32_t(h) << 16);
}
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
// Smallest power of two >= |f| (DeepGEMM's ceil_to_ue8m0 on positive scales), as a ue8m0 code:
// |f| <= 2^-127 (incl. 0) gives 0 (2^-127), finite |f| > 2^127 saturates to 0xfe (2^127), inf and
// NaN give 0xff (NaN).
uint8_t f32_to_ue8m0_ceil(float f);

// ---- bulk conversions (n elements; the same results as the scalar functions above) ----
void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n);
void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_f16(const float* in, uint16_t* out, size_t n);
void convert_f16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_e4m3(const float* in, uint8_t* out, size_t n);
void convert_e4m3_to_f32(const uint8_t* in, float* out, size_t n);
void convert_f32_to_e5m2(const float* in, uint8_t* out, size_t n);
void convert_e5m2_to_f32(const uint8_t* in, float* out, size_t n);

}  // namespace ff
