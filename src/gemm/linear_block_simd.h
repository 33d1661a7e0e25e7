// Private: gemm::linear over GGUF block weights (Q8_0, Q4_K, Q5_K, Q6_K; layouts in
// gguf_quant.h), written once over the vector traits of linear_simd.h and compiled by
// linear_avx2.cc and linear_avx512.cc. V additionally provides integer lanes: ivec, load_u8 /
// load_i8 (kLanes bytes, zero- / sign-extended to 32 bits), and_i, or_i, srl_i, sll_i, sub_i
// and to_float.
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
// Panels (m > 16; prefill). linear_simd.h's packed-panel loop with a pack step that decodes
// each row's 256-wide k block into an fp32 scratch row and transposes it into the panel, so W is
// dequantized once per panel (once per element and call) and the FMA loop is the BF16 path's.
#pragma once
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
// m[j]); Q6_K f[i] = d * scales[i], i < 16.
struct BlockConsts {
  float f[16];
};

inline float block_f16(const uint8_t* p) {
  return f16_to_f32(uint16_t(p[0] | (p[1] << 8)));
}

template <Block B>
__attribute__((always_inline)) inline void block_consts(const uint8_t* b, BlockConsts& c) {
  if constexpr (B == Block::Q8_0) {
    c.f[0] = block_f16(b);
  } else if constexpr (B == Block::Q6_K) {
    const float d = block_f16(b + 208);
    for (int i = 0; i < 16; ++i) c.f[i] = d * float(int8_t(b[192 + i]));
  } else {
    const float d = block_f16(b), dmin = block_f16(b + 2);
    const uint8_t* s = b + 4;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
      } else {
        sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
      }
      c.f[j] = d * float(sc);
      c.f[8 + j] = -(dmin * float(m));
    }
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
    auto q = V::and_i(V::srl_i(V::load_u8(b + kQs + 32 * (j / 2) + l), 4 * (j % 2)), 15);
    if constexpr (B == Block::Q5_K)
      q = V::or_i(q, V::sll_i(V::and_i(V::srl_i(V::load_u8(b + 16 + l), j), 1), 4));
    return V::fma(V::to_float(q), V::set1(c.f[j]), V::set1(c.f[8 + j]));
  }
}

inline const uint8_t* block_row(const Weight& w, int64_t row_bytes_ld, int64_t row) {
  return static_cast<const uint8_t*>(w.data) + row * row_bytes_ld;
}

// Bytes ahead of the current block that the streaming loop prefetches in each weight row.
constexpr int64_t kBlockPrefetchBytes = 1024;

// ---- streaming ----------------------------------------------------------------------------

// Y[r, c] = X[r, :] . W[rows[c], :] for r < M, c < N over `blocks` blocks.
template <class V, Block B, int M, int N>
void block_stream_tile(const float* x, int64_t ldx, const uint8_t* const* rows, int64_t blocks,
                       float* y, int64_t ldy) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int BS = BlockFormat<B>::kElems, TS = BlockFormat<B>::kBytes;
  vec acc[M][N];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) acc[r][c] = V::zero();
  for (int64_t b = 0; b < blocks; ++b) {
    BlockConsts cs[N];
    const uint8_t* blk[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      blk[c] = rows[c] + b * TS;
      for (int o = 0; o < TS; o += 64) __builtin_prefetch(blk[c] + kBlockPrefetchBytes + o, 0, 3);
      block_consts<B>(blk[c], cs[c]);
    }
    const float* xb = x + b * BS;
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

template <class V>
constexpr int block_stream_cols(int M) {
  const int n = V::kAccRegs / M;
  return n < 1 ? 1 : n > 4 ? 4 : n;
}

// Columns [n0, n1) for M rows: tiles of N columns, then single columns.
template <class V, Block B, int M>
void block_stream_cols(const float* x, int64_t ldx, const Weight& w, int64_t rb, float* y,
                       int64_t ldy, int64_t c0, int64_t c1) {
  constexpr int N = block_stream_cols<V>(M);
  const int64_t blocks = w.k / BlockFormat<B>::kElems;
  int64_t c = c0;
  for (; c + N <= c1; c += N) {
    const uint8_t* rows[N];
    for (int i = 0; i < N; ++i) rows[i] = block_row(w, rb, c + i);
    block_stream_tile<V, B, M, N>(x, ldx, rows, blocks, y + c, ldy);
  }
  for (; c < c1; ++c) {
    const uint8_t* rows[1] = {block_row(w, rb, c)};
    block_stream_tile<V, B, M, 1>(x, ldx, rows, blocks, y + c, ldy);
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

template <class V, Block B>
void block_rows_typed(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  if (m <= 16) return block_stream_rows<V, B>(x, m, ldx, w, y, ldy, n0, n1);
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
