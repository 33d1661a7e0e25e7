// Private: gemm::linear over GGUF block weights (Q8_0, Q4_K, Q5_K, Q6_K; layouts in
// gguf_quant.h), written once over the vector traits of linear_simd.h and compiled by
// linear_avx2.cc and linear_avx512.cc. V additionally provides integer lanes: ivec, load_u8 /
// load_i8 (kLanes bytes, zero- / sign-extended to 32 bits), and_i, or_i, srl_i, sll_i, sub_i
// and to_float; and kLut (true on AVX-512) with iota(base) (base + lane), lut16(table, idx)
// (table[idx & 15] per lane) and lut32(t0, t1, idx) (the 32-entry table t0 | t1, idx & 31).
//
// Decoding: decode_vec<V, B>(block, consts, i) is vector i (elements i * L .. i * L + L - 1) of
// a block, exactly the fp32 values of dequantize_gguf: the quant is widened to an exact fp32
// integer and combined with per-sub-block factors that block_consts precomputes once per block
// as dequantize_gguf does (d * sc and dmin * m, resp. d * scales[i]). Q8_0 and Q6_K are then
// one exact product; Q4_K / Q5_K are q * (d * sc) - dmin * m, where the product is exact, so one
// FMA rounds exactly as the reference's product-then-subtract.
//
// Streaming (m <= 16; decode). A tile is M <= 8 rows of X x N weight rows; per block, the N rows'
// factors are read once, then each weight vector is decoded in registers and feeds M FMAs (one
// load of X per row and vector, kept in a register across the N columns). 9..16 rows run as two
// tiles over the same weight rows, which are in cache for the second. Each weight row is read
// from memory once; the next blocks are prefetched in software.
//
// Prefill (m > 16): W is dequantized into the fp32 tiles of the paths BF16 uses, as often as
// those widen BF16. AVX-512: linear_simd.h's broadcast rows (once per 64 rows of X), each row's
// 256-wide k chunk decoded into its L1 tile. AVX2: the packed panels (once per 144 rows), each
// row's k block decoded into an fp32 scratch row and transposed into the panel.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "gemm/linear_simd.h"

namespace ff::gemm {
namespace {

template <Block B>
struct BlockFormat;
template <>
struct BlockFormat<Block::Q8_0> {
  static constexpr int kElems = 32, kBytes = 34;
};
template <>
struct BlockFormat<Block::Q4_K> {
  static constexpr int kElems = 256, kBytes = 144;
};
template <>
struct BlockFormat<Block::Q5_K> {
  static constexpr int kElems = 256, kBytes = 176;
};
template <>
struct BlockFormat<Block::Q6_K> {
  static constexpr int kElems = 256, kBytes = 210;
};

// Per-block factors: Q8_0 uses f[0] = d; Q4_K / Q5_K f[j] = d * sc[j], f[8 + j] = -(dmin *
// m[j]); Q6_K f[i] = d * scales[i], i < 16. block_consts uses AVX2 + F16C, which both backends
// are compiled with.
struct BlockConsts {
  float f[16];
};

// F16C (both backends have it): exact, and inline, unlike ff::f16_to_f32.
__attribute__((always_inline)) inline float block_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

template <Block B>
__attribute__((always_inline)) inline void block_consts(const uint8_t* b, BlockConsts& c) {
  if constexpr (B == Block::Q8_0) {
    c.f[0] = block_f16(b);
  } else if constexpr (B == Block::Q6_K) {
    const __m256 d = _mm256_set1_ps(block_f16(b + 208));
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    _mm256_storeu_ps(c.f, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s))));
    _mm256_storeu_ps(
        c.f + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s, 8)))));
  } else {
    // The 6-bit fields of scales[12] (gguf_quant.h) in 8 lanes at once: lanes 0..3 hold sub-blocks
    // 0..3 (sc in the low half, m in the high half of `lo`), `hi` the same for sub-blocks 4..7.
    const float d = block_f16(b), dmin = block_f16(b + 2);
    uint32_t s8;
    std::memcpy(&s8, b + 12, 4);
    const __m256i a =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 4)));
    const __m256i t = _mm256_cvtepu8_epi32(_mm_set1_epi32(int(s8)));  // s[8..11] twice
    const __m256i lo = _mm256_and_si256(a, _mm256_set1_epi32(63));
    const __m256i hi = _mm256_or_si256(
        _mm256_and_si256(_mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                         _mm256_set1_epi32(15)),
        _mm256_slli_epi32(_mm256_srli_epi32(a, 6), 4));
    // f[j] = d * sc[j], f[8 + j] = (-dmin) * m[j] (= -(dmin * m[j]), both exact products).
    const __m256 f = _mm256_setr_ps(d, d, d, d, -dmin, -dmin, -dmin, -dmin);
    const __m256 flo = _mm256_mul_ps(f, _mm256_cvtepi32_ps(lo));
    const __m256 fhi = _mm256_mul_ps(f, _mm256_cvtepi32_ps(hi));
    _mm_storeu_ps(c.f, _mm256_castps256_ps128(flo));
    _mm_storeu_ps(c.f + 4, _mm256_castps256_ps128(fhi));
    _mm_storeu_ps(c.f + 8, _mm256_extractf128_ps(flo, 1));
    _mm_storeu_ps(c.f + 12, _mm256_extractf128_ps(fhi, 1));
  }
}

template <class V, Block B>
__attribute__((always_inline)) inline typename V::vec decode_vec(const uint8_t* b,
                                                                 const BlockConsts& c, int i) {
  constexpr int L = V::kLanes;
  const int e = i * L;
  if constexpr (B == Block::Q8_0) {
    return V::mul(V::to_float(V::load_i8(b + 2 + e)), V::set1(c.f[0]));
  } else if constexpr (B == Block::Q6_K) {
    const int h = e / 128, r = e % 128;
    const auto lo = V::and_i(V::srl_i(V::load_u8(b + 64 * h + r % 64), 4 * (r / 64)), 15);
    const auto hi = V::and_i(V::srl_i(V::load_u8(b + 128 + 32 * h + r % 32), 2 * (r / 32)), 3);
    const auto q = V::sub_i(V::or_i(lo, V::sll_i(hi, 4)), 32);
    return V::mul(V::to_float(q), V::set1(c.f[e / 16]));
  } else {
    constexpr int kQs = B == Block::Q4_K ? 16 : 48;
    const int j = e / 32, l = e % 32;
    const auto bytes = V::load_u8(b + kQs + 32 * (j / 2) + l);
    if constexpr (V::kLut) {
      // The sub-block's 16 (Q5_K: 32) values, by the same FMA, then one permute per vector
      // (the table is the same for the sub-block's vectors, and the compiler computes it once).
      const auto sc = V::set1(c.f[j]), mn = V::set1(c.f[8 + j]);
      const auto t0 = V::fma(V::iota(0.f), sc, mn);
      const auto nib = j % 2 ? V::srl_i(bytes, 4) : bytes;  // the permute reads the low bits
      if constexpr (B == Block::Q4_K) return V::lut16(t0, nib);
      const auto hbit = V::sll_i(V::and_i(V::srl_i(V::load_u8(b + 16 + l), j), 1), 4);
      return V::lut32(t0, V::fma(V::iota(16.f), sc, mn), V::or_i(V::and_i(nib, 15), hbit));
    }
    auto q = V::and_i(V::srl_i(bytes, 4 * (j % 2)), 15);
    if constexpr (B == Block::Q5_K)
      q = V::or_i(q, V::sll_i(V::and_i(V::srl_i(V::load_u8(b + 16 + l), j), 1), 4));
    return V::fma(V::to_float(q), V::set1(c.f[j]), V::set1(c.f[8 + j]));
  }
}

inline const uint8_t* block_row(const Weight& w, int64_t row_bytes_ld, int64_t row) {
  return static_cast<const uint8_t*>(w.data) + row * row_bytes_ld;
}

// Bytes ahead of the current block that the streaming loop prefetches in each weight row.
constexpr int64_t kBlockPrefetchBytes = 2048;

// ---- streaming ----------------------------------------------------------------------------

// Weight rows per streaming tile of M rows of X.
template <class V>
constexpr int block_stream_cols(int M) {
  const int n = V::kAccRegs / M;
  return n < 1 ? 1 : n > 4 ? 4 : n;
}

// Y[r, c] = X[r, :] . W[rows[c], :] for r < M, c < N over `blocks` blocks; the rows are
// consecutive, row_stride bytes apart.
template <class V, Block B, int M, int N>
void block_stream_tile(const float* x, int64_t ldx, const uint8_t* const* rows, int64_t blocks,
                       int64_t row_stride, float* y, int64_t ldy) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int BS = BlockFormat<B>::kElems, TS = BlockFormat<B>::kBytes;
  // Decided by M alone (the full tiles' N), so a column sums the same way in a tile of N and in
  // a single-column tail: its value must not depend on the split of n.
  constexpr bool kFoldScale = B == Block::Q8_0 && 2 * M * block_stream_cols<V>(M) <= V::kAccRegs;
  vec acc[M][N];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) acc[r][c] = V::zero();
  for (int64_t b = 0; b < blocks; ++b) {
    // kBlockPrefetchBytes ahead in the row; past its end, as far into the row this tile slot
    // reads next (row + N: short rows start the next tile warm).
    int64_t ahead = b * TS + kBlockPrefetchBytes;
    if (ahead >= blocks * TS) ahead += N * row_stride - blocks * TS;
    BlockConsts cs[N];
    const uint8_t* blk[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      blk[c] = rows[c] + b * TS;
      for (int o = 0; o < TS; o += 64) __builtin_prefetch(rows[c] + ahead + o, 0, 3);
      block_consts<B>(blk[c], cs[c]);
    }
    // The factors are broadcast from memory (a load), not from the registers they were computed
    // in (a lane extract and a broadcast, two shuffles on the unit the widening and the table
    // permute use: Q4_K ~20% slower on Zen 4).
    asm volatile("" : : "r"(cs) : "memory");
    const float* xb = x + b * BS;
    if constexpr (kFoldScale) {
      // Q8_0 with registers to spare: sum x * q over the block, then one FMA by d per row and
      // column, instead of a multiply by d per weight vector.
      vec part[M][N];
#pragma GCC unroll 32
      for (int i = 0; i < BS / L; ++i) {
        vec wv[N];
#pragma GCC unroll 4
        for (int c = 0; c < N; ++c) wv[c] = V::to_float(V::load_i8(blk[c] + 2 + i * L));
#pragma GCC unroll 8
        for (int r = 0; r < M; ++r) {
          vec xv = V::load(xb + r * ldx + i * L);
          if (N > 1) in_register(xv);
#pragma GCC unroll 4
          for (int c = 0; c < N; ++c)
            part[r][c] = i == 0 ? V::mul(xv, wv[c]) : V::fma(xv, wv[c], part[r][c]);
        }
      }
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) {
        const vec d = V::set1(cs[c].f[0]);
#pragma GCC unroll 8
        for (int r = 0; r < M; ++r) acc[r][c] = V::fma(part[r][c], d, acc[r][c]);
      }
      continue;
    }
#pragma GCC unroll 32
    for (int i = 0; i < BS / L; ++i) {
      vec wv[N];
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) wv[c] = decode_vec<V, B>(blk[c], cs[c], i);
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r) {
        vec xv = V::load(xb + r * ldx + i * L);
        if (N > 1) in_register(xv);
#pragma GCC unroll 4
        for (int c = 0; c < N; ++c) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) y[r * ldy + c] = V::hsum(acc[r][c]);
}

// Columns [n0, n1) for M rows: tiles of N columns, then single columns.
template <class V, Block B, int M>
void block_stream_cols(const float* x, int64_t ldx, const Weight& w, int64_t rb, float* y,
                       int64_t ldy, int64_t c0, int64_t c1) {
  constexpr int N = block_stream_cols<V>(M);
  const int64_t blocks = w.k / BlockFormat<B>::kElems;
  // Q8_0 at one row of X with short weight rows (<= 4 KiB: k <= 3840) streams one weight row at
  // a time: each thread one sequential stream, 1.19-1.26x the 4-row tiles from DRAM at k = 2048
  // (alternated runs, Zen 4); with long rows (k = 7168) the tiles were 1.6x faster. Decided by
  // the shape alone, so a column's value does not depend on the split of n.
  const bool one_row = M == 1 && B == Block::Q8_0 && rb <= 4096;
  int64_t c = c0;
  for (; !one_row && c + N <= c1; c += N) {
    const uint8_t* rows[N];
    for (int i = 0; i < N; ++i) rows[i] = block_row(w, rb, c + i);
    block_stream_tile<V, B, M, N>(x, ldx, rows, blocks, rb, y + c, ldy);
  }
  for (; c < c1; ++c) {
    const uint8_t* rows[1] = {block_row(w, rb, c)};
    block_stream_tile<V, B, M, 1>(x, ldx, rows, blocks, rb, y + c, ldy);
  }
}

// Columns per pass: small enough that a pass's weight rows are still in L2 when the second
// group of rows (9..16) reads them.
constexpr int64_t kBlockStreamPassBytes = 256 << 10;

template <class V, Block B>
void block_stream_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                       int64_t ldy, int64_t n0, int64_t n1) {
  using Fn =
      void (*)(const float*, int64_t, const Weight&, int64_t, float*, int64_t, int64_t, int64_t);
  static constexpr Fn kByRows[] = {
      nullptr,
      block_stream_cols<V, B, 1>,
      block_stream_cols<V, B, 2>,
      block_stream_cols<V, B, 3>,
      block_stream_cols<V, B, 4>,
      block_stream_cols<V, B, 5>,
      block_stream_cols<V, B, 6>,
      block_stream_cols<V, B, 7>,
      block_stream_cols<V, B, 8>,
  };
  const int64_t rb = row_bytes(block_gguf_type(B), w.ld);
  const int64_t pass = m <= 8 ? n1 - n0 : std::max<int64_t>(4, kBlockStreamPassBytes / rb);
  for (int64_t c0 = n0; c0 < n1; c0 += pass) {
    const int64_t c1 = std::min(n1, c0 + pass);
    for (int64_t r0 = 0; r0 < m; r0 += 8) {
      const int64_t rows = std::min<int64_t>(8, m - r0);
      kByRows[rows](x + r0 * ldx, ldx, w, rb, y + r0 * ldy, ldy, c0, c1);
    }
  }
}

// ---- panels ---------------------------------------------------------------------------------

// bp[kk * NR + i] = W[col + i, pc + kk] for kk < kc (a multiple of the block size), zero for
// i >= nr: L rows at a time decoded into fp32 scratch rows, then transposed L x L in registers.
template <class V, Block B>
void pack_block_panel(const Weight& w, int64_t rb, int64_t col, int nr, int64_t pc, int kc,
                      float* bp) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int NR = 2 * L;
  constexpr int BS = BlockFormat<B>::kElems, TS = BlockFormat<B>::kBytes;
  alignas(64) float tmp[L][kPanelDepth];
  for (int i0 = 0; i0 < NR; i0 += L) {
    const int live = std::clamp(nr - i0, 0, L);
    for (int i = 0; i < live; ++i) {
      const uint8_t* row = block_row(w, rb, col + i0 + i) + pc / BS * TS;
      const int blocks = kc / BS;
      // The next k block of this row, which the next pack of these columns reads.
      for (int o = 0; o < blocks * TS; o += 64) __builtin_prefetch(row + blocks * TS + o, 0, 2);
      for (int bk = 0; bk < blocks; ++bk) {
        const uint8_t* b = row + bk * TS;
        BlockConsts cs;
        block_consts<B>(b, cs);
#pragma GCC unroll 32
        for (int v = 0; v < BS / L; ++v)
          V::store(tmp[i] + bk * BS + v * L, decode_vec<V, B>(b, cs, v));
      }
    }
    for (int kk = 0; kk < kc; kk += L) {
      vec r[L];
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) r[i] = i < live ? V::load(tmp[i] + kk) : V::zero();
      V::transpose_store(r, bp + kk * NR + i0, NR, L);
    }
  }
}

// ---- broadcast rows (AVX-512) ---------------------------------------------------------------

// linear_simd.h's broadcast loop with each row's k chunk decoded into its fp32 L1 tile.
template <class V, Block B>
void block_bcast_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int L = V::kLanes;
  constexpr int BS = BlockFormat<B>::kElems, TS = BlockFormat<B>::kBytes;
  const int64_t rb = row_bytes(block_gguf_type(B), w.ld);
  const auto widen = [&](int64_t col, int64_t k0, int64_t kc, float* dst, int64_t ahead_col,
                         int64_t p0, int64_t p1) {
    const uint8_t* row = block_row(w, rb, col);
    const int64_t bytes = kc / BS * TS;
    const uint8_t* ahead = k0 + kBcastDepth < p1 ? row + (k0 + kc) / BS * TS
                                                 : block_row(w, rb, ahead_col) + p0 / BS * TS;
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(ahead + o, 0, 3);
    for (int64_t bk = 0; bk < kc / BS; ++bk) {
      const uint8_t* b = row + (k0 / BS + bk) * TS;
      BlockConsts cs;
      block_consts<B>(b, cs);
      asm volatile("" : : "r"(&cs) : "memory");  // broadcast the factors from memory
#pragma GCC unroll 32
      for (int v = 0; v < BS / L; ++v) V::store(dst + bk * BS + v * L, decode_vec<V, B>(b, cs, v));
    }
  };
  constexpr int64_t kBlock = 4 * L;
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t rows = std::min(kBlock, m - r0);
    const float* xr = x + r0 * ldx;
    float* yr = y + r0 * ldy;
    switch ((rows + L - 1) / L) {
      case 1:
        bcast_rows_with<V, 1>(xr, rows, ldx, w.k, yr, ldy, n0, n1, widen);
        break;
      case 2:
        bcast_rows_with<V, 2>(xr, rows, ldx, w.k, yr, ldy, n0, n1, widen);
        break;
      case 3:
        bcast_rows_with<V, 3>(xr, rows, ldx, w.k, yr, ldy, n0, n1, widen);
        break;
      default:
        bcast_rows_with<V, 4>(xr, rows, ldx, w.k, yr, ldy, n0, n1, widen);
    }
  }
}

template <class V, Block B>
void block_rows_typed(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  if (m <= 16) return block_stream_rows<V, B>(x, m, ldx, w, y, ldy, n0, n1);
  if constexpr (V::kLanes == 16) return block_bcast_rows<V, B>(x, m, ldx, w, y, ldy, n0, n1);
  const int64_t rb = row_bytes(block_gguf_type(B), w.ld);
  panel_rows_with<V>(x, m, ldx, w.k, y, ldy, n0, n1,
                     [&](int64_t col, int nr, int64_t pc, int kc, float* bp, bool) {
                       pack_block_panel<V, B>(w, rb, col, nr, pc, kc, bp);
                     });
}

// The backends' entry: block weights here, every dtype in linear_rows_simd.
template <class V>
void linear_rows_any(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                     int64_t n0, int64_t n1) {
  switch (w.block) {
    case Block::None:
      return linear_rows_simd<V>(x, m, ldx, w, y, ldy, n0, n1);
    case Block::Q8_0:
      return block_rows_typed<V, Block::Q8_0>(x, m, ldx, w, y, ldy, n0, n1);
    case Block::Q4_K:
      return block_rows_typed<V, Block::Q4_K>(x, m, ldx, w, y, ldy, n0, n1);
    case Block::Q5_K:
      return block_rows_typed<V, Block::Q5_K>(x, m, ldx, w, y, ldy, n0, n1);
    case Block::Q6_K:
      return block_rows_typed<V, Block::Q6_K>(x, m, ldx, w, y, ldy, n0, n1);
  }
  fail("linear: unknown weight block format {}", int(w.block));
}

}  // namespace
}  // namespace ff::gemm
