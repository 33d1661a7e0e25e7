// AVX2 backend of gemm::linear: 8 fp32 lanes, 16 registers. AVX2 has no byte/word masked
// loads, so weight tails are copied into a zeroed stack vector first (once per row).
#include <immintrin.h>

#include <cstring>

#include "gemm/linear_block_simd.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr Isa kIsa = Isa::Avx2;
  static constexpr int kLanes = 8;
  static constexpr int kAccRegs = 8;    // of 16
  static constexpr int kPanelRows = 6;  // 6 x 2 accumulators + 2 panel vectors + 1 broadcast

  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static vec zero() { return _mm256_setzero_ps(); }
  static vec set1(float f) { return _mm256_set1_ps(f); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, vec v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static float hsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // dst[j * ld + i] = rows[i][j] for i, j < 8 and j < cols: the classic 8 x 8 transpose.
  static void transpose_store(vec (&r)[8], float* dst, int64_t ld, int cols) {
    vec a[8], b[8];
    for (int p = 0; p < 4; ++p) {
      a[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
      a[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for (int q = 0; q < 2; ++q) {
      b[4 * q + 0] = _mm256_shuffle_ps(a[4 * q], a[4 * q + 2], 0x44);
      b[4 * q + 1] = _mm256_shuffle_ps(a[4 * q], a[4 * q + 2], 0xee);
      b[4 * q + 2] = _mm256_shuffle_ps(a[4 * q + 1], a[4 * q + 3], 0x44);
      b[4 * q + 3] = _mm256_shuffle_ps(a[4 * q + 1], a[4 * q + 3], 0xee);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x20);
      r[4 + c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x31);
    }
    for (int j = 0; j < cols; ++j) _mm256_store_ps(dst + j * ld, r[j]);
  }

  static vec widen_e4m3(__m128i bytes8) {
    // See linear_simd.h: s eeee mmm -> f16 bits s 0eeee mmm0000000 = value / 2^8.
    const __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(bytes8), 7);
    return _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(int16_t(0xbfff))));
  }

  // Integer lanes for the GGUF block decoders (linear_block_simd.h).
  using ivec = __m256i;
  static ivec load_u8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static ivec load_i8(const uint8_t* p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static ivec and_i(ivec a, int b) { return _mm256_and_si256(a, _mm256_set1_epi32(b)); }
  static ivec or_i(ivec a, ivec b) { return _mm256_or_si256(a, b); }
  static ivec srl_i(ivec a, int n) { return _mm256_srli_epi32(a, n); }
  static ivec sll_i(ivec a, int n) { return _mm256_slli_epi32(a, n); }
  static ivec sub_i(ivec a, int b) { return _mm256_sub_epi32(a, _mm256_set1_epi32(b)); }
  static vec to_float(ivec a) { return _mm256_cvtepi32_ps(a); }
  static constexpr bool kLut = false;  // 8 lanes: no single-permute 16-entry table
  static vec iota(float) { return zero(); }
  static vec lut16(vec table, ivec) { return table; }
  static vec lut32(vec t0, vec, ivec) { return t0; }

  template <DType D>
  static void load_w2(const void* row, int64_t j, vec& lo, vec& hi) {
    lo = load_w<D>(row, j);
    hi = load_w<D>(row, j + kLanes);
  }

  template <DType D>
  static vec load_w(const void* row, int64_t j) {
    if constexpr (D == DType::F32) {
      return _mm256_loadu_ps(static_cast<const float*>(row) + j);
    } else if constexpr (D == DType::BF16) {
      const __m128i h =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + j));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else if constexpr (D == DType::F16) {
      return _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + j)));
    } else {
      return widen_e4m3(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(row) + j)));
    }
  }

  template <DType D>
  static vec load_w_n(const void* row, int64_t j, int n) {
    if constexpr (D == DType::F32) {
      return load_n(static_cast<const float*>(row) + j, n);
    } else {
      constexpr size_t kBytes = D == DType::F8_E4M3 ? 1 : 2;
      alignas(32) uint8_t buf[8 * kBytes] = {};
      std::memcpy(buf, static_cast<const uint8_t*>(row) + j * int64_t(kBytes), size_t(n) * kBytes);
      return load_w<D>(buf, 0);
    }
  }
};

}  // namespace

void linear_avx2_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  linear_rows_any<Avx2>(x, m, ldx, w, y, ldy, n0, n1);
}

}  // namespace ff::gemm
