// The FP8 GEMM's few-row path on AVX512-FP16 (see fp8_gemm_kernels.h): both operands stay e4m3,
// widened to f16 (exact), multiplied and summed in f16 within a 128-wide k block, promoted to
// fp32 with the two scales at the block's end (DeepGEMM's two-level accumulation, with f16 in
// place of the tensor cores' limited-precision accumulator).
//
// Why: at one row, widening e4m3 to fp32 (F16C: ~8 uops for 32 weights) is what limits the fp32
// kernels (~19 GB/s a core with the weights in cache, about the DRAM rate a core pulls, so
// streaming from DRAM stalls); widening to f16 is 3 uops for 32 weights and one FMA covers 32
// products. f16 range: see kW8A8AScale (every product exact; a lane sums 4 products of a block,
// the two halves of a vector are added once more in f16, then the fp32 promotion).
//
// (The warnings are off as in linear_avx512.cc: GCC 12's AVX-512 intrinsics, GCC PR 105593.)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "gemm/fp8_gemm_kernels.h"
#include "gemm/linear_simd.h"

namespace ff::gemm {
namespace {

constexpr int kF16Lanes = 32;

// 32 e4m3 bytes (the first `t`, the rest zero) as f16 value / 2^8: sign-extend, shift the 7
// magnitude bits under the f16 exponent / mantissa, clear the copy of the sign in bit 14.
__attribute__((always_inline)) inline __m512h widen_e4m3_f16(const uint8_t* p, int t) {
  const __m256i bytes = t == kF16Lanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                       : _mm256_maskz_loadu_epi8(__mmask32((1ull << t) - 1), p);
  const __m512i h = _mm512_slli_epi16(_mm512_cvtepi8_epi16(bytes), 7);
  return _mm512_castsi512_ph(_mm512_and_si512(h, _mm512_set1_epi16(int16_t(0xbfff))));
}

// Adds 32 k (the first t) of every (row r, column c) product into the f16 block sums part[r][c].
template <int M, int N>
__attribute__((always_inline)) inline void w8a8_step(const W8A8Rows& p, const uint8_t* const* rows,
                                                     const RowPrefetch& pf, int64_t j, int t,
                                                     __m512h (&part)[M][N]) {
  __m512h wv[N];
#pragma GCC unroll 4
  for (int c = 0; c < N; ++c) {
    prefetch_ahead<DType::F8_E4M3>(rows[c], j, pf);
    wv[c] = widen_e4m3_f16(rows[c] + j, t);
  }
#pragma GCC unroll 4
  for (int r = 0; r < M; ++r) {
    // A rows are zero past k up to a multiple of 32, so a full load is safe and adds 0.
    const __m512h av = _mm512_loadu_ph(p.a + r * p.lda + j);
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) part[r][c] = _mm512_fmadd_ph(av, wv[c], part[r][c]);
  }
}

// Y[r, col + c] = sum over k blocks of (f16 block sum of A[r] . W[col + c]) * sa * sb, for r < M,
// c < N.
template <int M, int N>
void w8a8_tile(const W8A8Rows& p, int64_t col) {
  const Weight& w = *p.w;
  const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
  const uint8_t* rows[N];
  const float* srow[N];
  for (int c = 0; c < N; ++c) {
    rows[c] = static_cast<const uint8_t*>(weight_row<DType::F8_E4M3>(w, col + c));
    srow[c] = w.scale_inv + ((col + c) / kFp8Block) * kb;
  }
  const RowPrefetch pf = row_prefetch<DType::F8_E4M3>(w, N, 0, w.k);
  __m512 acc[M][N];
#pragma GCC unroll 4
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < kb; ++b) {
    const int64_t j0 = b * kFp8Block, j1 = std::min(w.k, j0 + kFp8Block);
    __m512h part[M][N];
#pragma GCC unroll 4
    for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) part[r][c] = _mm512_setzero_ph();
    if (j1 - j0 == kFp8Block) {
      w8a8_step<M, N>(p, rows, pf, j0, kF16Lanes, part);
      w8a8_step<M, N>(p, rows, pf, j0 + kF16Lanes, kF16Lanes, part);
      w8a8_step<M, N>(p, rows, pf, j0 + 2 * kF16Lanes, kF16Lanes, part);
      w8a8_step<M, N>(p, rows, pf, j0 + 3 * kF16Lanes, kF16Lanes, part);
    } else {
      for (int64_t j = j0; j < j1; j += kF16Lanes)
        w8a8_step<M, N>(p, rows, pf, j, int(std::min<int64_t>(kF16Lanes, j1 - j)), part);
    }
    // Promotion: the two f16 halves added, widened to fp32, times A's and B's block scales.
    float s[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) s[c] = srow[c][b] * (kE4m3ViaF16Scale / kW8A8AScale);
#pragma GCC unroll 4
    for (int r = 0; r < M; ++r) {
      const float sa = p.sa[r * kb + b];
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) {
        const __m512i h = _mm512_castph_si512(part[r][c]);
        const __m256h sum = _mm256_add_ph(_mm256_castsi256_ph(_mm512_castsi512_si256(h)),
                                          _mm256_castsi256_ph(_mm512_extracti64x4_epi64(h, 1)));
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_castph_si256(sum)),
                                    _mm512_set1_ps(sa * s[c]), acc[r][c]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) p.y[r * p.ldy + col + c] = _mm512_reduce_add_ps(acc[r][c]);
}

// Weight rows in flight per tile: 4 (as the fp32 streaming tiles), 2 past 2 rows of A so that
// the f16 partial sums and the fp32 accumulators fit in the 32 registers.
template <int M>
void w8a8_cols(const W8A8Rows& p, int64_t n0, int64_t n1) {
  constexpr int N = M <= 2 ? 4 : 2;
  int64_t c = n0;
  for (; c + N <= n1; c += N) w8a8_tile<M, N>(p, c);
  for (; c < n1; ++c) w8a8_tile<M, 1>(p, c);
}

}  // namespace

void w8a8_f16_rows(const W8A8Rows& p, int64_t n0, int64_t n1) {
  static_assert(kW8A8MaxRows == 4);
  switch (p.m) {
    case 1:
      return w8a8_cols<1>(p, n0, n1);
    case 2:
      return w8a8_cols<2>(p, n0, n1);
    case 3:
      return w8a8_cols<3>(p, n0, n1);
    case 4:
      return w8a8_cols<4>(p, n0, n1);
    default:
      fail("w8a8_f16_rows: {} rows (1..{})", p.m, kW8A8MaxRows);
  }
}

}  // namespace ff::gemm
