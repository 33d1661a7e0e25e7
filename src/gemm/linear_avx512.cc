// AVX-512 backend of gemm::linear: 16 fp32 lanes, 32 registers, native lane masks for tails.
// Weight widening: BF16 by a 16-bit shift, F16 by F16C, E4M3 by re-biasing into f16 bits and
// F16C (see linear_simd.h).
//
// GCC 12's AVX-512 intrinsics start their pass-through operand as `__Y = __Y`, which the
// uninitialized-use warnings report once inlined (GCC PR 105593); the warnings are off for this
// file only, and the AVX2 build of the same kernels (linear_avx2.cc) keeps them.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "gemm/linear_block_simd.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

struct Avx512 {
  using vec = __m512;
  static constexpr Isa kIsa = Isa::Avx512;
  static constexpr int kLanes = 16;
  static constexpr int kAccRegs = 16;    // of 32; the rest hold weights, X and temporaries
  static constexpr int kPanelRows = 12;  // 12 x 2 accumulators + 2 panel vectors + 1 broadcast

  static __mmask16 mask(int n) { return __mmask16((1u << n) - 1u); }
  static vec zero() { return _mm512_setzero_ps(); }
  static vec set1(float f) { return _mm512_set1_ps(f); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, vec v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  // (Not _mm512_reduce_add_ps: GCC 12 flags its internals with -Wmaybe-uninitialized.)
  static float hsum(vec v) {
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m256 h = _mm512_castps512_ps256(v);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // dst[j * ld + i] = rows[i][j] for i, j < 16 and j < cols (linear_simd.h's 16 x 16 transpose).
  static void transpose_store(vec (&r)[16], float* dst, int64_t ld, int cols) {
    __m512i t[16];
    for (int i = 0; i < 16; ++i) t[i] = _mm512_castps_si512(r[i]);
    transpose16_epi32(t);
    for (int j = 0; j < cols; ++j) _mm512_store_ps(dst + j * ld, _mm512_castsi512_ps(t[j]));
  }

  static vec widen_e4m3(__m128i bytes) {
    // Sign-extend to 16 bits, shift the 7 magnitude bits under the f16 exponent/mantissa and
    // clear bit 14 (a copy of the sign): s eeee mmm -> s 0eeee mmm0000000 = value / 2^8.
    const __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7);
    return _mm512_cvtph_ps(_mm256_and_si256(h, _mm256_set1_epi16(int16_t(0xbfff))));
  }

  // Integer lanes for the GGUF block decoders (linear_block_simd.h).
  using ivec = __m512i;
  static ivec load_u8(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ivec load_i8(const uint8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ivec and_i(ivec a, int b) { return _mm512_and_si512(a, _mm512_set1_epi32(b)); }
  static ivec or_i(ivec a, ivec b) { return _mm512_or_si512(a, b); }
  static ivec srl_i(ivec a, int n) { return _mm512_srli_epi32(a, unsigned(n)); }
  static ivec sll_i(ivec a, int n) { return _mm512_slli_epi32(a, unsigned(n)); }
  static ivec sub_i(ivec a, int b) { return _mm512_sub_epi32(a, _mm512_set1_epi32(b)); }
  static vec to_float(ivec a) { return _mm512_cvtepi32_ps(a); }
  // 16 lanes hold a whole 4-bit (two vectors: 5-bit) table, so a quant's value is one permute
  // (only the index's low 4, resp. 5, bits count).
  static constexpr bool kLut = true;
  static vec iota(float base) {
    return _mm512_add_ps(_mm512_set1_ps(base),
                         _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
  static vec lut16(vec table, ivec idx) { return _mm512_permutexvar_ps(idx, table); }
  static vec lut32(vec t0, vec t1, ivec idx) { return _mm512_permutex2var_ps(t0, idx, t1); }

  // Two consecutive vectors (2 x 16 weights). For E4M3 one 512-bit widening of 32 bytes saves
  // a third of the integer work, which is what bounds single-row FP8 decode.
  template <DType D>
  static void load_w2(const void* row, int64_t j, vec& lo, vec& hi) {
    if constexpr (D == DType::F8_E4M3) {
      const __m512i b = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint8_t*>(row) + j)));
      const __m512i h =
          _mm512_and_si512(_mm512_slli_epi16(b, 7), _mm512_set1_epi16(int16_t(0xbfff)));
      lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
      hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    } else {
      lo = load_w<D>(row, j);
      hi = load_w<D>(row, j + kLanes);
    }
  }

  template <DType D>
  static vec load_w(const void* row, int64_t j) {
    if constexpr (D == DType::F32) {
      return _mm512_loadu_ps(static_cast<const float*>(row) + j);
    } else if constexpr (D == DType::BF16) {
      const __m256i h = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + j));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else if constexpr (D == DType::F16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + j)));
    } else {
      return widen_e4m3(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(row) + j)));
    }
  }

  template <DType D>
  static vec load_w_n(const void* row, int64_t j, int n) {
    const __mmask16 k = mask(n);
    if constexpr (D == DType::F32) {
      return _mm512_maskz_loadu_ps(k, static_cast<const float*>(row) + j);
    } else if constexpr (D == DType::BF16) {
      const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(row) + j);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else if constexpr (D == DType::F16) {
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(row) + j));
    } else {
      return widen_e4m3(_mm_maskz_loadu_epi8(k, static_cast<const uint8_t*>(row) + j));
    }
  }
};

}  // namespace

void linear_avx512_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                        int64_t ldy, int64_t n0, int64_t n1) {
  linear_rows_any<Avx512>(x, m, ldx, w, y, ldy, n0, n1);
}

}  // namespace ff::gemm
