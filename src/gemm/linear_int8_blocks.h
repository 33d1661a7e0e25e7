// Private: the decoding of GGUF K-quant super-blocks into the integer quants and scales the int8
// kernels multiply (linear_int8_avx512vnni.cc for few rows, linear_int8_gemm_avx512vnni.cc for
// more), and the order in which quantize_rows_int8 stores X's quants. Included only by sources
// compiled with AVX512-VNNI (the _avx512vnni.cc suffix).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "gemm/linear_block_simd.h"  // block_f16

namespace ff::gemm {
namespace {

// ---- K types: X in 256-element blocks (llama.cpp's Q8_K), int32 sums per super-block ------

template <Block B>
constexpr int kSuperBytes = B == Block::Q4_K   ? 144
                            : B == Block::Q5_K ? 176
                                               : 210;

// One super-block's scales for one row of W: Q4_K / Q5_K the 8 sub-block scales and mins as int16
// (lanes 0..7 of `sc`, of `mins`), d and -dmin; Q6_K the 16 int8 scales as int16 and d.
struct SuperScales {
  __m512i sc;    // int16 scales in the low lanes (what the per-vector permutes read)
  __m128i mins;  // Q4_K / Q5_K
  float d, neg_dmin;
};

template <Block B>
__attribute__((always_inline)) inline void super_scales(const uint8_t* b, SuperScales& s) {
  if constexpr (B == Block::Q4_K || B == Block::Q5_K) {
    // scales[12] (gguf_quant.h) as three little-endian words a, m, c: sc_j, m_j for j < 4 are the
    // low 6 bits of the bytes of a, m; for j >= 4 the low, high nibble of c's byte j - 4 with bits
    // 4..5 from the top 2 bits of a's, m's byte j - 4.
    uint32_t w[3];
    std::memcpy(w, b + 4, 12);
    const uint64_t sc = uint64_t(w[0] & 0x3f3f3f3fu) |
                        uint64_t((w[2] & 0x0f0f0f0fu) | ((w[0] >> 2) & 0x30303030u)) << 32;
    const uint64_t mn = uint64_t(w[1] & 0x3f3f3f3fu) |
                        uint64_t(((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 2) & 0x30303030u)) << 32;
    s.sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(sc))));
    s.mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(mn)));
    s.d = block_f16(b);
    s.neg_dmin = -block_f16(b + 2);
  } else {
    s.sc = _mm512_castsi256_si512(
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192))));
    s.d = block_f16(b + 208);
  }
}

// Vector v of a super-block: 64 quants (unsigned: Q4_K 0..15, Q5_K 0..31, Q6_K 0..63) in the order
// X's quants are stored.
template <Block B, int v>
__attribute__((always_inline)) inline __m512i super_quants(const uint8_t* b) {
  if constexpr (B == Block::Q4_K || B == Block::Q5_K) {
    // One 64-byte load of qs holds sub-blocks 4h, 4h + 2 (low nibbles, v = 2h) and 4h + 1, 4h + 3
    // (high nibbles) of half h = v / 2.
    constexpr int kQs = B == Block::Q4_K ? 16 : 48;
    const __m512i q = _mm512_loadu_si512(b + kQs + 64 * (v / 2));
    const __m512i nib = _mm512_and_si512(v % 2 ? _mm512_srli_epi16(q, 4) : q, _mm512_set1_epi8(15));
    if constexpr (B == Block::Q4_K) return nib;
    // Q5_K's fifth bit of element l of sub-block s is bit s of qh[l]: the 32 bytes of qh in both
    // halves, shifted right by the halves' sub-blocks (16-bit shifts: a byte's bit 0 is its own
    // bit s), masked to bit 0 and moved to bit 4.
    constexpr int s0 = 4 * (v / 2) + v % 2;
    const __m512i qh =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)));
    const __m512i bit = _mm512_and_si512(
        _mm512_srlv_epi16(qh,
                          _mm512_inserti64x4(_mm512_set1_epi16(s0), _mm256_set1_epi16(s0 + 2), 1)),
        _mm512_set1_epi8(1));
    return _mm512_or_si512(nib, _mm512_slli_epi16(bit, 4));
  } else {
    // ql[64h .. 64h + 63]: low nibbles k 128h + 0..63 (v = 2h), high nibbles 128h + 64..127; the
    // two high bits of k 128h + 32g + l sit at bits 2g..2g+1 of qh[32h + l].
    constexpr int h = v / 2;
    const __m512i ql = _mm512_loadu_si512(b + 64 * h);
    const __m512i qh = _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)));
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    if constexpr (v % 2 == 0) {
      const __m512i hb =
          _mm512_sllv_epi16(qh, _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1));
      return _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(hb, m30));
    } else {
      const __m512i hb = _mm512_srlv_epi16(
          qh, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1));
      return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                             _mm512_and_si512(hb, m30));
    }
  }
}

// Q4_K / Q5_K: where natural 32-block t of each 128 elements goes in X's stored order.
constexpr int kQ4kSlot[4] = {0, 2, 1, 3};

}  // namespace
}  // namespace ff::gemm
