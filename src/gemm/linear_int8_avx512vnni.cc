// The int8 kernel of gemm::linear for GGUF block weights on AVX512-VNNI (see linear_kernels.h):
// X quantized once per call, the weights' quants fed to the integer dot products as stored.
//
// Per vector of 64 quants vpmaddubsw (unsigned quants as
//   stored: Q4_K nibbles 0..15, Q5_K 0..31, Q6_K 0..63 before its -32; signed X) gives int16 sums
//   of pairs, and vpdpwssd multiplies pairs of those by the int16 scale of their sub-block (6-bit
//   Q4_K sc, int8 Q6_K scales) into int32 lanes: the whole super-block sums in int32, then one FMA
//   by d_w * d_x. Q4_K's (Q5_K's) one 64-byte load of qs holds sub-blocks 4h, 4h + 2 (low nibbles)
//   and 4h + 1, 4h + 3 (high nibbles) of half h, which is why X is stored in that order. Its mins
//   enter once per super-block: -dmin * d_x * sum_j m_j * (sum of X's quants in sub-block j), and
//   Q6_K's -32: -32 * sum_i scale_i * (sum of X's quants in group i), in the int32 sums.
// Rows of X (m <= 8) share each decoded weight vector; each thread streams its columns' weight
// rows one after the other, prefetched 2 KiB ahead as the fp32 streaming kernels do. (Tiles of
// several weight rows, interleaved streams a row apart, read DRAM 1.4-1.8x slower: Zen 4, 2
// threads, Q4_K 129280 x 2048, alternated runs, m = 1: 4 rows 18-20 GB/s, one row 26-36 GB/s
// against a 30-33 GB/s plain read; all they save is one load of X per vector and row.)
//
// (The warnings are off as in linear_avx512.cc: GCC 12's AVX-512 intrinsics, GCC PR 105593.)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "gemm/linear_int8_blocks.h"  // super_scales, super_quants, kQ4kSlot
#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

inline float hsum512(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The int16 scale of each pair of int16 products of vector v (vpdpwssd's second operand): the
// scale of the 4 quants that int32 lane covers.
template <Block B, int v>
__attribute__((always_inline)) inline __m512i super_lane_scales(const SuperScales& s) {
  __m512i idx;
  if constexpr (B == Block::Q4_K || B == Block::Q5_K) {
    // int32 lanes 0..7 sub-block 4 (v / 2) + v % 2, lanes 8..15 that + 2.
    constexpr int sb = 4 * (v / 2) + v % 2;
    idx = _mm512_inserti64x4(_mm512_set1_epi16(sb), _mm256_set1_epi16(sb + 2), 1);
  } else {
    // int32 lane l covers k 64v + 4l .. +3: scale 4v + l / 4, i.e. int16 lane j: 4v + j / 8.
    idx = _mm512_add_epi16(
        _mm512_set1_epi16(4 * v),
        _mm512_inserti64x4(_mm512_castsi256_si512(
                               _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)),
                           _mm256_setr_epi16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), 1));
  }
  return _mm512_permutexvar_epi16(idx, s.sc);
}

// Y[r, 0] for r < M (rows r0.. of X) against one weight row; the rows are row_stride bytes apart,
// so the prefetch runs on into the next one.
template <Block B, int M>
void super_row(const Int8Rows& x, int64_t r0, const uint8_t* row, int64_t row_stride, float* y,
               int64_t ldy) {
  constexpr int SB = kSuperBytes<B>;
  const int64_t units = x.k() / 256, row_bytes = units * SB;
  __m512 acc[M];
  __m128 accm[M];  // Q4_K / Q5_K: the mins' part
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) {
    acc[r] = _mm512_setzero_ps();
    accm[r] = _mm_setzero_ps();
  }
  for (int64_t u = 0; u < units; ++u) {
    int64_t ahead = u * SB + kBlockPrefetchBytes;
    if (ahead >= row_bytes) ahead += row_stride - row_bytes;
    for (int o = 0; o < SB; o += 64) __builtin_prefetch(row + ahead + o, 0, 3);
    const uint8_t* blk = row + u * SB;
    SuperScales ss;
    super_scales<B>(blk, ss);
    __m512i iacc[M];
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) iacc[r] = _mm512_setzero_si512();
    // Per vector: u8 x s8 pairs into int16 (no saturation: |sum| <= 2 * 63 * 127), then pairs of
    // those times the lane's scale into int32.
    const auto step = [&]<int v>(std::integral_constant<int, v>) {
      const __m512i wq = super_quants<B, v>(blk), ws = super_lane_scales<B, v>(ss);
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r) {
        const __m512i xq = _mm512_loadu_si512(x.q(r0 + r) + 256 * u + 64 * v);
        iacc[r] = _mm512_dpwssd_epi32(iacc[r], _mm512_maddubs_epi16(wq, xq), ws);
      }
    };
    [&]<int... v>(std::integer_sequence<int, v...>) {
      (step(std::integral_constant<int, v>{}), ...);
    }
    (std::make_integer_sequence<int, 4>{});
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const float dx = x.dx(r0 + r)[u];
      const int16_t* bs = x.bsums(r0 + r);
      __m512i is = iacc[r];
      if constexpr (B == Block::Q6_K) {
        // The stored quants are q + 32: subtract 32 * sum_i scale_i * (sum of X's quants i).
        const __m256i b16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs + 16 * u));
        const __m256i corr = _mm256_madd_epi16(_mm512_castsi512_si256(ss.sc), b16);
        is = _mm512_sub_epi32(is, _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
      } else {  // Q4_K, Q5_K
        const __m128i b8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs + 8 * u));
        accm[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(ss.mins, b8)),
                               _mm_set1_ps(ss.neg_dmin * dx), accm[r]);
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(ss.d * dx), acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) {
    float v = hsum512(acc[r]);
    if constexpr (B != Block::Q6_K) {
      __m128 m = accm[r];
      m = _mm_add_ps(m, _mm_movehl_ps(m, m));
      m = _mm_add_ss(m, _mm_movehdup_ps(m));
      v += _mm_cvtss_f32(m);
    }
    y[r * ldy] = v;
  }
}

template <Block B, int M>
void int8_cols_range(const Int8Rows& x, int64_t r0, const Weight& w, int64_t rb, float* y,
                     int64_t ldy, int64_t c0, int64_t c1) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t c = c0; c < c1; ++c) super_row<B, M>(x, r0, base + c * rb, rb, y + c, ldy);
}

template <Block B>
void int8_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  using Fn =
      void (*)(const Int8Rows&, int64_t, const Weight&, int64_t, float*, int64_t, int64_t, int64_t);
  static constexpr Fn kByRows[] = {
      nullptr,
      int8_cols_range<B, 1>,
      int8_cols_range<B, 2>,
      int8_cols_range<B, 3>,
      int8_cols_range<B, 4>,
      int8_cols_range<B, 5>,
      int8_cols_range<B, 6>,
      int8_cols_range<B, 7>,
      int8_cols_range<B, 8>,
  };
  const int64_t rb = row_bytes(block_gguf_type(B), w.ld);
  for (int64_t r0 = 0; r0 < x.m(); r0 += 8) {
    const int64_t rows = std::min<int64_t>(8, x.m() - r0);
    kByRows[rows](x, r0, w, rb, y + r0 * ldy, ldy, n0, n1);
  }
}

// max |v| over n floats (n a multiple of 16), or -1 when one is a NaN or an infinity.
float abs_max(const float* v, int64_t n) {
  __m512 mx = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 a = _mm512_loadu_ps(v + i);
    bad |= _mm512_fpclass_ps_mask(a, 0x99);  // QNaN, SNaN, +inf, -inf
    mx = _mm512_max_ps(mx, _mm512_abs_ps(a));
  }
  if (bad) return -1.f;
  const __m256 m8 =
      _mm256_max_ps(_mm512_castps512_ps256(mx),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(mx), 1)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  return _mm_cvtss_f32(m4);
}

// X's scale for one group of n: d = amax / qmax and its inverse (0 where d is); false for a NaN
// or an infinity in the group.
bool group_scale(const float* v, int64_t n, float qmax, float& d, float& id) {
  const float amax = abs_max(v, n);
  if (amax < 0.f) return false;
  d = amax / qmax;
  id = d != 0.f ? 1.f / d : 0.f;
  return true;
}

// q[0..15] = round-half-even(v[0..15] * id) as int8, returning the 16 values as int32 lanes.
__attribute__((always_inline)) inline __m512i quantize16(const float* v, float id, int8_t* q) {
  // vcvtps2dq rounds half to even (the default MXCSR mode); |v * id| <= 127 up to rounding.
  const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v), _mm512_set1_ps(id)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(qi));
  return qi;
}

}  // namespace

bool quantize_rows_int8(Block b, const float* x, int64_t m, int64_t ldx, int64_t k, Int8Rows& out) {
  FF_CHECK(int8_block(b), "quantize_rows_int8: no int8 kernel for block format {}", int(b));
  const int64_t group = int8_group(b);
  FF_CHECK(k > 0 && k % group == 0, "quantize_rows_int8: k = {} is not a positive multiple of {}",
           k, group);
  out.block_ = b;
  out.m_ = m;
  out.k_ = k;
  // Row layout, 3k bytes: q [k] (Q8_0: int16 [k]), dx [k / group], bsums [k / 16] (K types);
  // every byte read is written below.
  out.data_.resize(size_t(m * 3 * k));
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    uint8_t* row = out.data_.data() + r * 3 * k;
    if (b == Block::Q8_0) {
      int16_t* q = reinterpret_cast<int16_t*>(row);
      float* dx = reinterpret_cast<float*>(row + 2 * k);
      for (int64_t g0 = 0; g0 < k; g0 += 32) {
        float d, id;
        if (!group_scale(xr + g0, 32, 32767.f, d, id)) return false;
        dx[g0 / 32] = d;
        for (int64_t j = 0; j < 32; j += 16) {
          const __m512i qi =
              _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + g0 + j), _mm512_set1_ps(id)));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g0 + j), _mm512_cvtsepi32_epi16(qi));
        }
      }
      continue;
    }
    int8_t* q = reinterpret_cast<int8_t*>(row);
    float* dx = reinterpret_cast<float*>(row + k);
    int16_t* bsums = out.bsums_mut(r);
    for (int64_t g0 = 0; g0 < k; g0 += group) {
      float d, id;
      if (!group_scale(xr + g0, group, 127.f, d, id)) return false;
      dx[g0 / group] = d;
      for (int64_t j = 0; j < group; j += 32) {
        const int64_t pos =
            b == Block::Q6_K ? g0 + j : g0 + 128 * (j / 128) + 32 * kQ4kSlot[j % 128 / 32];
        const int s0 = _mm512_reduce_add_epi32(quantize16(xr + g0 + j, id, q + pos));
        const int s1 = _mm512_reduce_add_epi32(quantize16(xr + g0 + j + 16, id, q + pos + 16));
        if (b != Block::Q6_K) {
          bsums[(g0 + j) / 32] = int16_t(s0 + s1);
        } else {
          bsums[(g0 + j) / 16] = int16_t(s0);
          bsums[(g0 + j) / 16 + 1] = int16_t(s1);
        }
      }
    }
  }
  return true;
}

bool round_rows_int8(Block b, const float* x, int64_t m, int64_t ldx, int64_t k, float* out) {
  const int64_t group = int8_group(b);
  FF_CHECK(int8_block(b) && k > 0 && k % group == 0,
           "round_rows_int8: k = {} is not a positive multiple of {}", k, group);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g0 = 0; g0 < k; g0 += group) {
      const float* v = x + r * ldx + g0;
      float d, id;
      if (!group_scale(v, group, float(int8_qmax(b)), d, id)) return false;
      for (int64_t i = 0; i < group; i += 16) {
        const __m512i q =
            _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + i), _mm512_set1_ps(id)));
        _mm512_storeu_ps(out + r * k + g0 + i,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d)));
      }
    }
  return true;
}

void linear_int8_avx512_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy, int64_t n0,
                             int64_t n1) {
  if (x.m() > kInt8MaxRows || x.block() == Block::Q8_0)
    return linear_int8_gemm_avx512_rows(x, w, y, ldy, n0, n1);
  switch (x.block()) {
    case Block::Q4_K:
      return int8_rows<Block::Q4_K>(x, w, y, ldy, n0, n1);
    case Block::Q5_K:
      return int8_rows<Block::Q5_K>(x, w, y, ldy, n0, n1);
    case Block::Q6_K:
      return int8_rows<Block::Q6_K>(x, w, y, ldy, n0, n1);
    default:
      fail("linear: no int8 kernel for block format {}", int(x.block()));
  }
}

}  // namespace ff::gemm
