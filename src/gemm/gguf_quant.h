// GGUF (llama.cpp) tensor types and their block formats: sizes, names and dequantisation.
//
// A GGUF tensor of type T holds n / block_size(T) blocks of type_size(T) bytes each, back to back
// (a row of n elements is row_bytes(T, n) bytes). The numeric ids are those GGUF files store
// (ggml's enum ggml_type, gguf-py's GGMLQuantizationType). Multi-byte fields are little-endian;
// "f16" is an IEEE binary16 scale. Block layouts of the dequantisable types, QK_K = 256:
//
//   F32, F16, BF16  one element per "block" (4, 2, 2 bytes).
//   Q8_0   (32 elements, 34 bytes)   f16 d | int8 q[32];            x[i] = q[i] * d
//   Q4_K   (256, 144)   f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//   Q5_K   (256, 176)   f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128]
//          8 sub-blocks j of 32 elements, each with a 6-bit scale sc[j] and min m[j] packed in
//          scales[12]: for j < 4 sc[j] = scales[j] & 63, m[j] = scales[j + 4] & 63; for j >= 4
//          sc[j] = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,
//          m[j] = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.
//          Element l of sub-block j: q = (qs[32 * (j / 2) + l] >> 4 * (j % 2)) & 15, and for Q5_K
//          plus ((qh[l] >> j) & 1) << 4; x = (d * sc[j]) * q - dmin * m[j].
//   Q6_K   (256, 210)   u8 ql[128] | u8 qh[64] | int8 scales[16] | f16 d
//          element e = 128 * h + r (h in 0..1, r in 0..127):
//          lo = (ql[64 * h + r % 64] >> 4 * (r / 64)) & 15,
//          hi = (qh[32 * h + r % 32] >> 2 * (r / 32)) & 3,
//          x = (d * scales[e / 16]) * ((lo | hi << 4) - 32).
//   Q4_0   (32, 18)   f16 d | u8 qs[16]                         x[i] = d * (q[i] - 8)
//   Q4_1   (32, 20)   f16 d | f16 m | u8 qs[16]                 x[i] = d * q[i] + m
//   Q5_0   (32, 22)   f16 d | u32 qh | u8 qs[16]                x[i] = d * (q[i] - 16)
//   Q5_1   (32, 24)   f16 d | f16 m | u32 qh | u8 qs[16]        x[i] = d * q[i] + m
//          q[i] = (qs[i % 16] >> 4 * (i / 16)) & 15, and for Q5_* plus ((qh >> i) & 1) << 4.
//   Q2_K   (256, 84)  u8 scales[16] | u8 qs[64] | f16 d | f16 dmin
//          element e = 128 * h + 32 * s + l: q = (qs[32 * h + l] >> 2 * s) & 3,
//          x = (d * (scales[e / 16] & 15)) * q - dmin * (scales[e / 16] >> 4).
//   Q3_K   (256, 110) u8 hmask[32] | u8 qs[64] | u8 scales[12] | f16 d
//          16 6-bit scales, sc[i] = ((scales[i % 8] >> 4 * (i / 8)) & 15
//          | ((scales[8 + i % 4] >> 2 * (i / 4)) & 3) << 4) - 32; element e as Q2_K:
//          q = ((qs[32 * h + l] >> 2 * s) & 3) - (bit e / 32 of hmask[l] ? 0 : 4),
//          x = (d * sc[e / 16]) * q.
//
// Numerics: exactly gguf-py's reference dequantisers (gguf.quants, numpy float32), bit for bit;
// tests/gemm/gguf_quant_test.cc checks this against tests/fixtures/gguf_quant/ (made by
// tools/make_gguf_goldens.py). The f16 fields widen exactly (11 significant bits), so every
// product above is exact in float32 (at most 11 + 7 + 5 = 23 bits); the one rounding is the final
// addition or subtraction of Q4_1, Q5_1, Q2_K, Q4_K and Q5_K. The results therefore do not depend
// on the order of the products or on fused multiply-add. NaN bits are the one exception: an f16 NaN
// comes out quiet (as ggml's F16C path and ff::f16_to_f32), where numpy keeps a signalling NaN's
// bits.
#pragma once
#include <cstdint>
#include <string>

namespace ff::gemm {

enum class GgufType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

// True for an id listed above (a GGUF file may hold any uint32).
bool gguf_type_known(uint32_t id);
// "Q4_K", "BF16", ...; "unknown(<id>)" for an id that is not known.
std::string gguf_type_name(GgufType t);
// Elements per block and bytes per block; ff::Error for an unknown id.
int64_t gguf_block_size(GgufType t);
int64_t gguf_type_size(GgufType t);
// True when dequantize_gguf implements the type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K).
bool gguf_dequantize_supported(GgufType t);

// Bytes of n elements of type t: n / block_size * type_size. ff::Error (naming the type) when n
// is negative or not a multiple of the block size, or the id is unknown.
int64_t row_bytes(GgufType t, int64_t n);

// Dequantizes n elements (row_bytes(t, n) bytes at src, any alignment) into out[n] as float32,
// bit-exact with the reference (above). ff::Error: "GGUF type <name> is not supported" for a known
// type without a dequantizer here (Q8_1, Q8_K, IQ*, ...), a clear message for an unknown id or a
// bad n (as row_bytes).
void dequantize_gguf(GgufType t, const void* src, int64_t n, float* out);

}  // namespace ff::gemm
