// The int8 kernel of gemm::linear for GGUF K-quant weights at more than kInt8MaxRows rows
// (prefill) on AVX512-VNNI: X quantized as for few rows (linear_kernels.h), the weights' quants
// repacked per tile of 32 columns so that one vpdpbusd multiplies 4 quants of 16 columns by 4 of
// X's and sums them into each column's int32 lane (64 multiply-adds an instruction, 4x an fp32
// FMA's).
//
// Per tile of 32 columns the whole depth is packed once into a per-thread panel (k = 7168: 280
// KiB, L2) and then multiplied by every row of X, 4 rows at a time. A super-block's panel: the
// quants as [64 quads][32 columns][4] u8 in X's stored order (the few-rows kernel's
// super_quants, transposed), each scale group's int32 scales per column, the mins' (Q4_K / Q5_K)
// or the scales' (Q6_K) int16 pairs per column, d and -dmin per column. Per scale group (Q4_K /
// Q5_K: 32 quants, Q6_K: 16) the int32 sums are multiplied by the group's scales and added into
// the super-block's int32 sum, exact; per super-block one FMA by d * d_x, with the mins (Q6_K's
// -32) from X's quant sums as in the few-rows kernel. So a column's value is the same exact
// integers scaled the same way as there; only the fp32 summation order differs.
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

constexpr int kTileCols = 32;  // two vectors of int32 lanes
constexpr int kVecs = kTileCols / 16;
// Rows of X a tile: 4 rows x 2 vectors measured best (one thread, 1024 x 7168 Q4_K, m = 128:
// 257 GOP/s; 8 x 1 230, 6 x 1 224, 4 x 1 221, 3 x 2 200).
constexpr int kTileRows = 4;

// One super-block's part of a tile's panel (byte offsets; every part a multiple of 64 bytes).
template <Block B>
struct Panel {
  static constexpr int kGroups = B == Block::Q6_K ? 16 : 8;  // scale groups per super-block
  static constexpr int kGroupQuads = 64 / kGroups;           // 4-quant units per group
  static constexpr int kPairs = kGroups / 2;                 // int16 pairs: mins / scales
  static constexpr int kScales = 64 * kTileCols * 4;         // after the quants
  static constexpr int kPairsAt = kScales + kGroups * kTileCols * 4;
  static constexpr int kD = kPairsAt + kPairs * kTileCols * 4;
  static constexpr int kNegDmin = kD + kTileCols * 4;
  static constexpr int kBytes = kNegDmin + kTileCols * 4;
};

// The panel of columns [c, c + cols) (cols <= 32; the rest of the tile packs as zeros).
template <Block B>
void pack_panel(const uint8_t* base, int64_t rb, int64_t c, int cols, int64_t units,
                uint8_t* panel) {
  using P = Panel<B>;
  constexpr int SB = kSuperBytes<B>;
  for (int64_t u = 0; u < units; ++u) {
    uint8_t* p = panel + u * P::kBytes;
    int32_t* sc = reinterpret_cast<int32_t*>(p + P::kScales);
    int32_t* pairs = reinterpret_cast<int32_t*>(p + P::kPairsAt);
    float* d = reinterpret_cast<float*>(p + P::kD);
    float* neg_dmin = reinterpret_cast<float*>(p + P::kNegDmin);
    for (int col = 0; col < kTileCols; ++col) {
      if (col >= cols) {
        for (int g = 0; g < P::kGroups; ++g) sc[g * kTileCols + col] = 0;
        for (int q = 0; q < P::kPairs; ++q) pairs[q * kTileCols + col] = 0;
        d[col] = neg_dmin[col] = 0.f;
        continue;
      }
      // The column's super-block two ahead (32 rows a tile apart are too many streams for the
      // hardware prefetchers).
      if (u + 2 < units)
        for (int o = 0; o < SB; o += 64)
          __builtin_prefetch(base + (c + col) * rb + (u + 2) * SB + o, 0, 3);
      SuperScales ss;
      super_scales<B>(base + (c + col) * rb + u * SB, ss);
      alignas(64) int16_t s16[32];
      _mm512_store_si512(s16, ss.sc);
      const auto pair = [](int16_t lo, int16_t hi) {
        return int32_t(uint32_t(uint16_t(lo)) | uint32_t(uint16_t(hi)) << 16);
      };
      if constexpr (B == Block::Q6_K) {
        for (int g = 0; g < 16; ++g) sc[g * kTileCols + col] = s16[g];
        for (int q = 0; q < 8; ++q) pairs[q * kTileCols + col] = pair(s16[2 * q], s16[2 * q + 1]);
        neg_dmin[col] = 0.f;
      } else {
        alignas(16) int16_t m16[8];
        _mm_store_si128(reinterpret_cast<__m128i*>(m16), ss.mins);
        // Stored chunk g of 32 quants is natural sub-block 4 (g / 4) + kQ4kSlot[g % 4].
        for (int g = 0; g < 8; ++g) sc[g * kTileCols + col] = s16[4 * (g / 4) + kQ4kSlot[g % 4]];
        for (int q = 0; q < 4; ++q) pairs[q * kTileCols + col] = pair(m16[2 * q], m16[2 * q + 1]);
        neg_dmin[col] = ss.neg_dmin;
      }
      d[col] = ss.d;
    }
    // The quants, per vector v of 64 (16 quads) and half h of the tile: transposed so that quad
    // 16 v + j of the half's 16 columns is one vector.
    const auto quants = [&]<int v>(std::integral_constant<int, v>) {
      for (int h = 0; h < 2; ++h) {
        __m512i a[16];
        for (int i = 0; i < 16; ++i) {
          const int col = 16 * h + i;
          a[i] = col < cols ? super_quants<B, v>(base + (c + col) * rb + u * SB)
                            : _mm512_setzero_si512();
        }
        transpose16_epi32(a);
        for (int j = 0; j < 16; ++j)
          _mm512_store_si512(p + ((16 * v + j) * kTileCols + 16 * h) * 4, a[j]);
      }
    };
    [&]<int... v>(std::integer_sequence<int, v...>) {
      (quants(std::integral_constant<int, v>{}), ...);
    }
    (std::make_integer_sequence<int, 4>{});
  }
}

// Y[r0 + r, c ..] for r < M over the tile's columns (masks per vector of 16).
template <Block B, int M>
void panel_rows(const Int8Rows& x, int64_t r0, const uint8_t* panel, int64_t units, float* y,
                int64_t ldy, const __mmask16* masks) {
  constexpr int NV = kVecs;
  using P = Panel<B>;
  __m512 acc[M][NV];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t u = 0; u < units; ++u) {
    const uint8_t* p = panel + u * P::kBytes;
    const int32_t* wq = reinterpret_cast<const int32_t*>(p);
    const int32_t* sc = reinterpret_cast<const int32_t*>(p + P::kScales);
    const int8_t* xq[M];
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) xq[r] = x.q(r0 + r) + 256 * u;
    __m512i isb[M][NV];
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < NV; ++v) isb[r][v] = _mm512_setzero_si512();
    for (int g = 0; g < P::kGroups; ++g) {
      __m512i sub[M][NV];
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r)
        for (int v = 0; v < NV; ++v) sub[r][v] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int j = 0; j < P::kGroupQuads; ++j) {
        const int quad = g * P::kGroupQuads + j;
        __m512i w[NV];
        for (int v = 0; v < NV; ++v) w[v] = _mm512_load_si512(wq + quad * kTileCols + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < M; ++r) {
          int32_t xv;
          std::memcpy(&xv, xq[r] + 4 * quad, 4);
          const __m512i xb = _mm512_set1_epi32(xv);
          for (int v = 0; v < NV; ++v) sub[r][v] = _mm512_dpbusd_epi32(sub[r][v], w[v], xb);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r)
        for (int v = 0; v < NV; ++v)
          isb[r][v] = _mm512_add_epi32(
              isb[r][v],
              _mm512_mullo_epi32(sub[r][v], _mm512_load_si512(sc + g * kTileCols + 16 * v)));
    }
    const int32_t* pairs = reinterpret_cast<const int32_t*>(p + P::kPairsAt);
    const float* d = reinterpret_cast<const float*>(p + P::kD);
    const float* neg_dmin = reinterpret_cast<const float*>(p + P::kNegDmin);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      // Q4_K / Q5_K: sum_j m_j * (X's quant sum of sub-block j); Q6_K: sum_i scale_i * (that of
      // group i), for the stored quants' +32.
      const int16_t* bs = x.bsums(r0 + r) + P::kGroups * u;
      __m512i mn[NV];
      for (int v = 0; v < NV; ++v) mn[v] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int q = 0; q < P::kPairs; ++q) {
        int32_t b;
        std::memcpy(&b, bs + 2 * q, 4);
        const __m512i bb = _mm512_set1_epi32(b);
        for (int v = 0; v < NV; ++v)
          mn[v] = _mm512_dpwssd_epi32(mn[v], _mm512_load_si512(pairs + q * kTileCols + 16 * v), bb);
      }
      const __m512 dx = _mm512_set1_ps(x.dx(r0 + r)[u]);
      for (int v = 0; v < NV; ++v) {
        const __m512 dd = _mm512_mul_ps(_mm512_load_ps(d + 16 * v), dx);
        if constexpr (B == Block::Q6_K) {
          acc[r][v] = _mm512_fmadd_ps(
              _mm512_cvtepi32_ps(_mm512_sub_epi32(isb[r][v], _mm512_slli_epi32(mn[v], 5))), dd,
              acc[r][v]);
        } else {
          acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isb[r][v]), dd, acc[r][v]);
          acc[r][v] =
              _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn[v]),
                              _mm512_mul_ps(_mm512_load_ps(neg_dmin + 16 * v), dx), acc[r][v]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(y + r * ldy + 16 * v, masks[v], acc[r][v]);
}

// ---- Q8_0: blocks of 32 signed quants and an f16 scale -----------------------------------
//
// X is quantized to int16 per 32 for Q8_0 (linear_kernels.h), so vpdpwssd multiplies pairs of
// the weights' quants, sign-extended to int16, by pairs of X's: 32 multiply-adds an instruction,
// exact in int32 per block (|sum| <= 32 * 128 * 32767); then one FMA per block by d * d_x. A
// block's panel: [16 pairs][32 columns] of two int16, then d per column.
constexpr int kQ8Bytes = 16 * kTileCols * 4 + kTileCols * 4;

void pack_panel_q8(const uint8_t* base, int64_t rb, int64_t c, int cols, int64_t blocks,
                   uint8_t* panel) {
  constexpr int kB = 34;  // f16 d, 32 quants
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* p = panel + b * kQ8Bytes;
    if (b + 4 < blocks)
      for (int col = 0; col < cols; ++col)
        __builtin_prefetch(base + (c + col) * rb + (b + 4) * kB, 0, 3);
    for (int h = 0; h < 2; ++h) {
      // Column i's 16 pairs of the block.
      __m512i a[16];
      for (int i = 0; i < 16; ++i) {
        const int col = 16 * h + i;
        a[i] = col < cols
                   ? _mm512_cvtepi8_epi16(_mm256_loadu_si256(
                         reinterpret_cast<const __m256i*>(base + (c + col) * rb + b * kB + 2)))
                   : _mm512_setzero_si512();
      }
      transpose16_epi32(a);
      for (int j = 0; j < 16; ++j) _mm512_store_si512(p + (j * kTileCols + 16 * h) * 4, a[j]);
    }
    float* d = reinterpret_cast<float*>(p + 16 * kTileCols * 4);
    for (int col = 0; col < kTileCols; ++col)
      d[col] = col < cols ? block_f16(base + (c + col) * rb + b * kB) : 0.f;
  }
}

template <int M>
void panel_rows_q8(const Int8Rows& x, int64_t r0, const uint8_t* panel, int64_t blocks, float* y,
                   int64_t ldy, const __mmask16* masks) {
  constexpr int NV = kVecs;
  __m512 acc[M][NV];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = panel + b * kQ8Bytes;
    const int32_t* wq = reinterpret_cast<const int32_t*>(p);
    __m512i sum[M][NV];
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < NV; ++v) sum[r][v] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      __m512i w[NV];
      for (int v = 0; v < NV; ++v) w[v] = _mm512_load_si512(wq + j * kTileCols + 16 * v);
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r) {
        int32_t xv;
        std::memcpy(&xv, x.q16(r0 + r) + 32 * b + 2 * j, 4);
        const __m512i xb = _mm512_set1_epi32(xv);
        for (int v = 0; v < NV; ++v) sum[r][v] = _mm512_dpwssd_epi32(sum[r][v], w[v], xb);
      }
    }
    const float* d = reinterpret_cast<const float*>(p + 16 * kTileCols * 4);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const __m512 dx = _mm512_set1_ps(x.dx(r0 + r)[b]);
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][v]),
                                    _mm512_mul_ps(_mm512_load_ps(d + 16 * v), dx), acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(y + r * ldy + 16 * v, masks[v], acc[r][v]);
}

template <Block B>
void gemm_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  using Fn = void (*)(const Int8Rows&, int64_t, const uint8_t*, int64_t, float*, int64_t,
                      const __mmask16*);
  constexpr bool kQ8 = B == Block::Q8_0;
  const auto rows_fn = []<int M>(std::integral_constant<int, M>) -> Fn {
    if constexpr (kQ8)
      return panel_rows_q8<M>;
    else
      return panel_rows<B, M>;
  };
  static_assert(kTileRows == 4);
  static const Fn kByRows[] = {
      nullptr, rows_fn(std::integral_constant<int, 1>{}), rows_fn(std::integral_constant<int, 2>{}),
      rows_fn(std::integral_constant<int, 3>{}), rows_fn(std::integral_constant<int, 4>{})};
  const int64_t rb = row_bytes(block_gguf_type(B), w.ld);
  // Super-blocks of 256 (K types) or blocks of 32 (Q8_0) and their panel bytes.
  const int64_t units = x.k() / int8_group(B);
  size_t unit_bytes;
  if constexpr (kQ8)
    unit_bytes = kQ8Bytes;
  else
    unit_bytes = Panel<B>::kBytes;
  uint8_t* panel =
      reinterpret_cast<uint8_t*>(thread_scratch(0, size_t(units) * unit_bytes / sizeof(float)));
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t c = n0; c < n1; c += kTileCols) {
    const int cols = int(std::min<int64_t>(kTileCols, n1 - c));
    if constexpr (kQ8)
      pack_panel_q8(base, rb, c, cols, units, panel);
    else
      pack_panel<B>(base, rb, c, cols, units, panel);
    const __mmask16 masks[2] = {cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1),
                                cols >= 32   ? __mmask16(0xffff)
                                : cols <= 16 ? __mmask16(0)
                                             : __mmask16((1u << (cols - 16)) - 1)};
    for (int64_t r0 = 0; r0 < x.m(); r0 += kTileRows) {
      const int64_t rows = std::min<int64_t>(kTileRows, x.m() - r0);
      kByRows[rows](x, r0, panel, units, y + r0 * ldy + c, ldy, masks);
    }
  }
}

}  // namespace

void linear_int8_gemm_avx512_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy,
                                  int64_t n0, int64_t n1) {
  switch (x.block()) {
    case Block::Q4_K:
      return gemm_rows<Block::Q4_K>(x, w, y, ldy, n0, n1);
    case Block::Q5_K:
      return gemm_rows<Block::Q5_K>(x, w, y, ldy, n0, n1);
    case Block::Q6_K:
      return gemm_rows<Block::Q6_K>(x, w, y, ldy, n0, n1);
    case Block::Q8_0:
      return gemm_rows<Block::Q8_0>(x, w, y, ldy, n0, n1);
    default:
      fail("linear: no int8 kernel for block format {}", int(x.block()));
  }
}

}  // namespace ff::gemm
