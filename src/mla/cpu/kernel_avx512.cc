// AVX-512 backends: the f32 SIMD kernel (kernel_simd.h) with 16 lanes and 16 accumulators, and
// the BF16 kernel built on vdpbf16ps (_mm512_dpbf16_ps: 32 bf16 products per instruction, fp32
// accumulation), used for BF16 and FP8 caches with BF16 queries.
//
// BF16 layouts (each 32-bit word holds a bf16 pair, low half first):
//   q_packed [d/2][row_pad]   (Q[2i][r], Q[2i+1][r])       -- a row vector per pair of dims
//   K rows   the cache rows themselves: (K[t][2i], K[t][2i+1]) broadcast as one 32-bit word
//   p_packed [n_pad/2][row_pad] (P[2u][r], P[2u+1][r])    -- probabilities rounded to bf16
//   v_packed [n_pad/2][dv]      (V[2u][j], V[2u+1][j])    -- two token rows interleaved
// so both products are dpbf16(acc, row-vector of pairs, broadcast pair). P is rounded to bf16
// as FlashMLA's tensor-core kernel does.
//
// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized once inlined (GCC PR 105593); off here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "mla/cpu/kernel_simd.h"

namespace ff::mla {
namespace {

using simd::softmax_step;

struct Avx512 {
  using vec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kAcc = 16;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec set1(float f) { return _mm512_set1_ps(f); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static vec round(vec x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static vec pow2i(vec n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static vec mask_past_limit(vec x, const int32_t* limit, int32_t pos, vec fill) {
    const __mmask16 visible =
        _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(limit), _mm512_set1_epi32(pos));
    return _mm512_mask_blend_ps(visible, fill, x);
  }
  static vec zero_where_neg_inf(vec x) {
    const __mmask16 ninf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(ninf, x, _mm512_setzero_ps());
  }
};

inline __m512bh as_bh(__m512i v) {
  return (__m512bh)v;
}
inline __m512i bcast_pair(const void* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  return _mm512_set1_epi32(w);
}

// ---- BF16 kernel ----

void begin_bf16(const RequestArgs& a) {
  PartBuffers& b = *a.buf;
  uint32_t* qp = reinterpret_cast<uint32_t*>(b.q_packed.data());
  for (int64_t i = 0; i < a.d / 2; ++i)
    for (int64_t r = 0; r < a.row_pad; ++r) {
      uint32_t w = 0;
      if (r < a.rows) {
        const float* q = b.q_rows.data() + r * a.d + 2 * i;
        w = uint32_t(f32_to_bf16(q[0])) | uint32_t(f32_to_bf16(q[1])) << 16;
      }
      qp[i * a.row_pad + r] = w;
    }
}

template <int RB, int T>
inline void qk_tile_bf16(const uint32_t* q, int64_t rp, const uint16_t* const* k, int64_t pairs,
                         float* s, float scale) {
  __m512 acc[RB][T];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t x = 0; x < pairs; ++x) {
    __m512i qv[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) qv[i] = _mm512_loadu_si512(q + x * rp + i * 16);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m512i kb = bcast_pair(k[t] + 2 * x);
#pragma GCC unroll 16
      for (int i = 0; i < RB; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], as_bh(qv[i]), as_bh(kb));
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i)
      _mm512_storeu_ps(s + t * rp + i * 16, _mm512_mul_ps(acc[i][t], sc));
}

template <int RB, int J>
inline void pv_tile_bf16(const uint32_t* p, int64_t rp, const uint32_t* v, int64_t dv,
                         int64_t pairs, int64_t j, float* o, const float* alpha) {
  __m512 acc[J][RB], al[RB];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i) al[i] = _mm512_loadu_ps(alpha + i * 16);
#pragma GCC unroll 16
  for (int c = 0; c < J; ++c)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i)
      acc[c][i] = _mm512_mul_ps(_mm512_loadu_ps(o + (j + c) * rp + i * 16), al[i]);
  for (int64_t u = 0; u < pairs; ++u) {
    __m512i pv[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) pv[i] = _mm512_loadu_si512(p + u * rp + i * 16);
    const uint32_t* vr = v + u * dv + j;
#pragma GCC unroll 16
    for (int c = 0; c < J; ++c) {
      const __m512i vb = _mm512_set1_epi32(int32_t(vr[c]));
#pragma GCC unroll 16
      for (int i = 0; i < RB; ++i) acc[c][i] = _mm512_dpbf16_ps(acc[c][i], as_bh(pv[i]), as_bh(vb));
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < J; ++c)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) _mm512_storeu_ps(o + (j + c) * rp + i * 16, acc[c][i]);
}

template <int RB>
inline void pv_rows_bf16(const RequestArgs& a, const ChunkArgs& c, int64_t r, const float* alpha) {
  constexpr int J = 16 / RB;
  PartBuffers& b = *a.buf;
  const uint32_t* p = reinterpret_cast<const uint32_t*>(b.p_packed.data()) + r;
  const uint32_t* v = reinterpret_cast<const uint32_t*>(b.v_packed.data());
  float* o = b.o_acc.data() + r;
  const int64_t pairs = c.n_pad / 2;
  int64_t j = 0;
  for (; j + J <= a.dv; j += J) pv_tile_bf16<RB, J>(p, a.row_pad, v, a.dv, pairs, j, o, alpha + r);
  for (; j < a.dv; ++j) pv_tile_bf16<RB, 1>(p, a.row_pad, v, a.dv, pairs, j, o, alpha + r);
}

// Two token rows' first dv values interleaved into bf16 pairs.
void pack_v_pair(const uint16_t* v0, const uint16_t* v1, int64_t dv, uint32_t* dst) {
  int64_t j = 0;
  for (; j + 16 <= dv; j += 16) {
    const __m512i a =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0 + j)));
    const __m512i b =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1 + j)));
    _mm512_storeu_si512(dst + j, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
  }
  for (; j < dv; ++j) dst[j] = uint32_t(v0[j]) | uint32_t(v1[j]) << 16;
}

void chunk_bf16(const RequestArgs& a, const ChunkArgs& c) {
  PartBuffers& b = *a.buf;
  const int64_t rp = a.row_pad, pairs_d = a.d / 2;
  const uint16_t* const* k = reinterpret_cast<const uint16_t* const*>(c.rows);
  const uint32_t* qp = reinterpret_cast<const uint32_t*>(b.q_packed.data());
  const int64_t nvec = rp / 16;
  for (int64_t rv = 0; rv < nvec;) {
    const int64_t r = rv * 16;
    if (rv + 2 <= nvec) {
      for (int64_t t = 0; t < c.n_pad; t += 8)
        qk_tile_bf16<2, 8>(qp + r, rp, k + t, pairs_d, b.scores.data() + t * rp + r, a.scale_log2);
      rv += 2;
    } else {
      for (int64_t t = 0; t < c.n_pad; t += 16)
        qk_tile_bf16<1, 16>(qp + r, rp, k + t, pairs_d, b.scores.data() + t * rp + r, a.scale_log2);
      rv += 1;
    }
  }
  softmax_step<Avx512>(a, c, b.alpha.data());
  // Only pairs holding a real token need P, V and the PV products (P is 0 past n anyway).
  const int64_t pairs = (c.n + 1) / 2;
  uint32_t* pp = reinterpret_cast<uint32_t*>(b.p_packed.data());
  const float* s = b.scores.data();
  for (int64_t u = 0; u < pairs; ++u)
    for (int64_t r = 0; r < rp; r += 16) {
      const __m512i lo =
          _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + 2 * u * rp + r)));
      const __m512i hi = _mm512_cvtepu16_epi32(
          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + (2 * u + 1) * rp + r)));
      _mm512_storeu_si512(pp + u * rp + r, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  uint32_t* vp = reinterpret_cast<uint32_t*>(b.v_packed.data());
  for (int64_t u = 0; u < pairs; ++u) pack_v_pair(k[2 * u], k[2 * u + 1], a.dv, vp + u * a.dv);
  ChunkArgs cp = c;
  cp.n_pad = 2 * pairs;
  for (int64_t rv = 0; rv < nvec;) {
    if (rv + 2 <= nvec) {
      pv_rows_bf16<2>(a, cp, rv * 16, b.alpha.data());
      rv += 2;
    } else {
      pv_rows_bf16<1>(a, cp, rv * 16, b.alpha.data());
      rv += 1;
    }
  }
}

// 16 e4m3 values times `scale`: the e4m3 exponent and mantissa bits moved to the top of an f32's
// exponent / mantissa fields (<< 20) read as the value times 2^-120 (normals and subnormals
// alike), so a multiply by 2^120 and then by the power-of-two scale dequantizes them exactly.
inline __m512 e4m3x16_scaled(const uint8_t* src, float scale) {
  const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  const __m512i mag = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x7f)), 20);
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
  const __m512 e4m3 =
      _mm512_mul_ps(_mm512_castsi512_ps(_mm512_or_si512(mag, sign)), _mm512_set1_ps(0x1p120f));
  return _mm512_mul_ps(e4m3, _mm512_set1_ps(scale));
}

// FP8 token (see mla.h) to 576 bf16 (the dequantized values fit bf16 exactly).
void fp8_row_bf16(const uint8_t* src, void* dst) {
  uint16_t* out = static_cast<uint16_t*>(dst);
  float scales[4];
  std::memcpy(scales, src + kFp8NopeDim, sizeof scales);
  for (int64_t i = 0; i < kFp8NopeDim; i += 16) {
    const __m512 v = e4m3x16_scaled(src + i, scales[i / kFp8TileSize]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(v));
  }
  std::memcpy(out + kFp8NopeDim, src + kFp8NopeDim + 16, size_t(kFp8RopeDim) * 2);
}

void fp8_row_f32(const uint8_t* src, void* dst) {
  float* out = static_cast<float*>(dst);
  float scales[4];
  std::memcpy(scales, src + kFp8NopeDim, sizeof scales);
  for (int64_t i = 0; i < kFp8NopeDim; i += 16)
    _mm512_storeu_ps(out + i, e4m3x16_scaled(src + i, scales[i / kFp8TileSize]));
  const __m512i rope = _mm512_cvtepu16_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kFp8NopeDim + 16)));
  const __m512i rope_hi = _mm512_cvtepu16_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kFp8NopeDim + 48)));
  _mm512_storeu_si512(out + kFp8NopeDim, _mm512_slli_epi32(rope, 16));
  _mm512_storeu_si512(out + kFp8NopeDim + 16, _mm512_slli_epi32(rope_hi, 16));
  const __m512i rope2 = _mm512_cvtepu16_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kFp8NopeDim + 80)));
  const __m512i rope3 = _mm512_cvtepu16_epi32(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + kFp8NopeDim + 112)));
  _mm512_storeu_si512(out + kFp8NopeDim + 32, _mm512_slli_epi32(rope2, 16));
  _mm512_storeu_si512(out + kFp8NopeDim + 48, _mm512_slli_epi32(rope3, 16));
}

}  // namespace

Kernel kernel_avx512_f32() {
  Kernel k;
  k.kv_dtype = DType::F32;
  k.begin = simd::begin_f32<Avx512>;
  k.chunk = simd::chunk_f32<Avx512>;
  k.fp8_row = fp8_row_f32;
  return k;
}

Kernel kernel_avx512_bf16() {
  Kernel k;
  k.kv_dtype = DType::BF16;
  k.begin = begin_bf16;
  k.chunk = chunk_bf16;
  k.fp8_row = fp8_row_bf16;
  return k;
}

}  // namespace ff::mla
