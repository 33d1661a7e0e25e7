// Private: the SIMD kernels of gemm::linear, written once over a vector-traits type V and
// compiled twice, by linear_avx2.cc (8 fp32 lanes, 16 registers) and linear_avx512.cc
// (16 lanes, 32 registers). Everything here sits in an anonymous namespace so the two
// differently-compiled copies can never be merged by the linker.
//
// V provides: vec, kLanes, kAccRegs (accumulator budget of a streaming tile), kPanelRows,
// zero, set1, load, load_n (first n lanes, rest zero, reads only n), store, store_n, fma, mul,
// add, hsum, load_w<D>(row, j) / load_w_n<D>(row, j, n) returning weights row[j..] as fp32,
// load_w2<D>(row, j, lo, hi) the same for two consecutive vectors, and
// transpose_store(rows[kLanes], dst, ld, cols) writing dst[j * ld + i] = rows[i][j], j < cols
// (dst 64-byte aligned).
// For F8_E4M3, load_w returns the value / 256 (the byte is re-biased into an f16 bit pattern
// and widened by F16C, which keeps subnormals exact); the factor goes into the block scale.
// The e4m3fn NaN code (0x7f / 0xff) therefore reads as +-480: a checkpoint holding NaN weights
// is broken anyway, and the reference backend still propagates it.
//
// Two paths, both with fp32 products and fp32 accumulation (X is never rounded):
//
// Streaming dot products (m <= kStreamMaxRows; decode). Memory-bound: each weight row is read
//   from memory once for all m rows of X. A tile is M rows of X x N weight rows; M*N vector
//   accumulators run along k, one horizontal sum each at the end. FP8 accumulates each
//   128-column block separately and then adds block_sum * scale into the running sum
//   (DeepGEMM's promotion), so the scale costs one FMA per block, not one multiply per weight
//   (where the second set of accumulators does not fit - AVX2 past 4 rows - each widened weight
//   vector is multiplied by its scale instead).
//
// Packed panels (larger m; prefill). Compute-bound: NR = 2 vectors of output columns x KC = 256
//   of k are dequantized (scale applied) and transposed into a k-major panel bp[KC][NR] that
//   stays in L1 while the rows of X pass over it, MR rows at a time: MR x 2 vector
//   accumulators, one broadcast of X and two panel loads per k (blocking: see panel_rows).
//   Each output element is a k-ordered fp32 sum per KC block, the blocks added into Y in order.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

constexpr float kE4m3ViaF16Scale = 256.f;  // f16 exponent bias 15 vs e4m3 bias 7: 2^8
constexpr int kPanelDepth = 256;           // KC: a multiple of the FP8 block (128)

template <DType D>
constexpr int64_t weight_bytes() {
  return D == DType::F32 ? 4 : D == DType::F8_E4M3 ? 1 : 2;
}

template <DType D>
const void* weight_row(const Weight& w, int64_t row) {
  return static_cast<const uint8_t*>(w.data) + row * w.ld * weight_bytes<D>();
}

// ---- streaming dot products -------------------------------------------------------------

// FP8 tiles promote per-block partial sums (a second set of accumulators) when the registers
// allow; otherwise (AVX2 past 4 rows) each widened weight vector is multiplied by its scale.
template <class V, DType D>
constexpr bool stream_promotes(int M) {
  return D == DType::F8_E4M3 && 2 * M <= V::kAccRegs;
}

// Columns per streaming tile for M rows of X: as many as the accumulator budget allows, at
// most 4 weight rows in flight.
template <class V, DType D>
constexpr int stream_cols(int M) {
  const int n = V::kAccRegs / (M * (stream_promotes<V, D>(M) ? 2 : 1));
  return n < 1 ? 1 : n > 4 ? 4 : n;
}

// A few cache lines ahead in each weight row, past its end into the rows that follow (the next
// tile's). The hardware prefetcher alone falls behind when several rows share a 4 KiB page
// (FP8 rows of k = 2048: 4 interleaved streams per 2 pages; measured 0.45 -> 0.8 of the read
// bandwidth on one thread); a prefetch of an address past the matrix is a harmless no-op.
static const int64_t kPrefetchBytes = getenv("PFD") ? atol(getenv("PFD")) : 1024;
static const int kPfHint = getenv("PFH") ? atoi(getenv("PFH")) : 3;

template <DType D>
inline void prefetch_ahead(const void* row, int64_t j) {
  if (kPrefetchBytes == 0) return;
  const char* p = static_cast<const char*>(row) + j * weight_bytes<D>() + kPrefetchBytes;
  if (kPfHint == 3) __builtin_prefetch(p, 0, 3); else if (kPfHint == 2) __builtin_prefetch(p, 0, 2); else __builtin_prefetch(p, 0, 0);
}

// acc[r][c] += X[r, j0:j1] . W[col+c, j0:j1] (lane-wise partial sums); the weights are
// multiplied by `scale[c]` first when Scaled.
template <class V, DType D, int M, int N, bool Scaled>
inline void dot_range(const float* x, int64_t ldx, const void* const* rows, int64_t j0, int64_t j1,
                      const typename V::vec* scale, typename V::vec (&acc)[M][N]) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  int64_t j = j0;
  // E4M3 is widened 2 vectors at a time where the ISA does that cheaper (V::load_w2).
  for (; D == DType::F8_E4M3 && j + 2 * L <= j1; j += 2 * L) {
    vec wv[N], wv2[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      prefetch_ahead<D>(rows[c], j);
      V::template load_w2<D>(rows[c], j, wv[c], wv2[c]);
      if constexpr (Scaled) {
        wv[c] = V::mul(wv[c], scale[c]);
        wv2[c] = V::mul(wv2[c], scale[c]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const vec xv = V::load(x + r * ldx + j);
      const vec xv2 = V::load(x + r * ldx + j + L);
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) {
        acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
        acc[r][c] = V::fma(xv2, wv2[c], acc[r][c]);
      }
    }
  }
  for (; j + L <= j1; j += L) {
    vec wv[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      prefetch_ahead<D>(rows[c], j);
      wv[c] = V::template load_w<D>(rows[c], j);
      if constexpr (Scaled) wv[c] = V::mul(wv[c], scale[c]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const vec xv = V::load(x + r * ldx + j);
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
    }
  }
  if (j < j1) {
    const int t = int(j1 - j);
    vec wv[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      wv[c] = V::template load_w_n<D>(rows[c], j, t);
      if constexpr (Scaled) wv[c] = V::mul(wv[c], scale[c]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const vec xv = V::load_n(x + r * ldx + j, t);
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
    }
  }
}

// Y[r, col+c] for r < M, c < N.
template <class V, DType D, int M, int N>
void stream_tile(const float* x, int64_t ldx, const Weight& w, int64_t col, float* y, int64_t ldy) {
  using vec = typename V::vec;
  const void* rows[N];
  for (int c = 0; c < N; ++c) rows[c] = weight_row<D>(w, col + c);
  vec acc[M][N];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) acc[r][c] = V::zero();

  if constexpr (D == DType::F8_E4M3) {
    const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
    const float* srow[N];
    for (int c = 0; c < N; ++c) srow[c] = w.scale_inv + ((col + c) / kFp8Block) * kb;
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t j0 = b * kFp8Block, j1 = std::min(w.k, j0 + kFp8Block);
      vec s[N];
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) s[c] = V::set1(srow[c][b] * kE4m3ViaF16Scale);
      if constexpr (stream_promotes<V, D>(M)) {
        vec part[M][N];
#pragma GCC unroll 16
        for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
          for (int c = 0; c < N; ++c) part[r][c] = V::zero();
        dot_range<V, D, M, N, false>(x, ldx, rows, j0, j1, nullptr, part);
#pragma GCC unroll 4
        for (int c = 0; c < N; ++c)
#pragma GCC unroll 16
          for (int r = 0; r < M; ++r) acc[r][c] = V::fma(part[r][c], s[c], acc[r][c]);
      } else {
        dot_range<V, D, M, N, true>(x, ldx, rows, j0, j1, s, acc);
      }
    }
  } else {
    dot_range<V, D, M, N, false>(x, ldx, rows, 0, w.k, nullptr, acc);
  }
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) y[r * ldy + col + c] = V::hsum(acc[r][c]);
}

template <class V, DType D, int M>
void stream_cols_range(const float* x, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                       int64_t n0, int64_t n1) {
  constexpr int N = stream_cols<V, D>(M);
  int64_t c = n0;
  for (; c + N <= n1; c += N) stream_tile<V, D, M, N>(x, ldx, w, c, y, ldy);
  for (; c < n1; ++c) stream_tile<V, D, M, 1>(x, ldx, w, c, y, ldy);
}

// All m rows in one pass over W; m <= kStreamMaxRows.
template <class V, DType D>
void stream_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  switch (m) {
    case 1:
      stream_cols_range<V, D, 1>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 2:
      stream_cols_range<V, D, 2>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 3:
      stream_cols_range<V, D, 3>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 4:
      stream_cols_range<V, D, 4>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 5:
      stream_cols_range<V, D, 5>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 6:
      stream_cols_range<V, D, 6>(x, ldx, w, y, ldy, n0, n1);
      break;
    case 7:
      stream_cols_range<V, D, 7>(x, ldx, w, y, ldy, n0, n1);
      break;
    default:
      stream_cols_range<V, D, 8>(x, ldx, w, y, ldy, n0, n1);
      break;
  }
}

// ---- packed panels ----------------------------------------------------------------------

// bp[kk * NR + i] = W[col + i, pc + kk] dequantized (scale applied); zero for i >= nr. Built
// from L x L blocks (L rows of W, L values of k each) widened to fp32 and transposed in
// registers, so packing costs a few shuffles per element instead of a scalar store each.
template <class V, DType D>
void pack_panel(const Weight& w, int64_t col, int nr, int64_t pc, int kc, float* bp) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int NR = 2 * L;
  const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
  for (int i0 = 0; i0 < NR; i0 += L) {
    const void* rows[L];
    float scale[L];  // FP8: this row block's scale row, per row (rows may straddle blocks)
    const float* srow[L];
    const int live = std::clamp(nr - i0, 0, L);
    for (int i = 0; i < L; ++i) {
      rows[i] = i < live ? weight_row<D>(w, col + i0 + i) : nullptr;
      srow[i] = D == DType::F8_E4M3 && i < live ? w.scale_inv + ((col + i0 + i) / kFp8Block) * kb
                                                : nullptr;
    }
    for (int kk = 0; kk < kc; kk += L) {
      const int t = std::min(L, kc - kk);
      vec r[L];
      if constexpr (D == DType::F8_E4M3) {
        // L divides the FP8 block and pc is block-aligned: one scale per row and vector.
        for (int i = 0; i < live; ++i) scale[i] = srow[i][(pc + kk) / kFp8Block] * kE4m3ViaF16Scale;
      }
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i) {
        if (i < live) {
          r[i] = t == L ? V::template load_w<D>(rows[i], pc + kk)
                        : V::template load_w_n<D>(rows[i], pc + kk, t);
          if constexpr (D == DType::F8_E4M3) r[i] = V::mul(r[i], V::set1(scale[i]));
        } else {
          r[i] = V::zero();
        }
      }
      V::transpose_store(r, bp + kk * NR + i0, NR, t);
    }
  }
}

// Y[0:MR, 0:nr] (+)= X[0:MR, 0:kc] * bp (X rows `xs` floats apart), adding to Y when
// `accumulate` (every k block after the first).
template <class V, int MR>
void panel_tile(const float* x, int64_t xs, const float* bp, int kc, float* y, int64_t ldy, int nr,
                bool accumulate) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int NR = 2 * L;
  vec acc[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = V::zero();
  for (int kk = 0; kk < kc; ++kk) {
    const vec b0 = V::load(bp + kk * NR);
    const vec b1 = V::load(bp + kk * NR + L);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const vec a = V::set1(x[r * xs + kk]);
      acc[r][0] = V::fma(a, b0, acc[r][0]);
      acc[r][1] = V::fma(a, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* yr = y + r * ldy;
    if (nr == NR) {
      if (accumulate) {
        acc[r][0] = V::add(acc[r][0], V::load(yr));
        acc[r][1] = V::add(acc[r][1], V::load(yr + L));
      }
      V::store(yr, acc[r][0]);
      V::store(yr + L, acc[r][1]);
    } else {
      const int t0 = std::min(nr, L), t1 = nr - t0;
      if (accumulate) acc[r][0] = V::add(acc[r][0], V::load_n(yr, t0));
      V::store_n(yr, acc[r][0], t0);
      if (t1 > 0) {
        if (accumulate) acc[r][1] = V::add(acc[r][1], V::load_n(yr + L, t1));
        V::store_n(yr + L, acc[r][1], t1);
      }
    }
  }
}

template <class V, int MR>
void panel_tail(int rows, const float* x, int64_t xs, const float* bp, int kc, float* y,
                int64_t ldy, int nr, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR)
      panel_tile<V, MR>(x, xs, bp, kc, y, ldy, nr, accumulate);
    else
      panel_tail<V, MR - 1>(rows, x, xs, bp, kc, y, ldy, nr, accumulate);
  }
}

// Per-thread scratch that grows on first use and is then reused by every call on that thread
// (kernels run on the pool's threads, so there is one per thread and no locking).
inline float* thread_scratch(int slot, size_t floats) {
  struct Buffer {
    float* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (b.size < floats) {
    std::free(b.data);
    b.data = static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
    FF_CHECK(b.data != nullptr, "linear: cannot allocate {} bytes of scratch", floats * 4);
    b.size = floats;
  }
  return b.data;
}

// Blocking (BLIS order): columns in blocks of kPanelCols, k in blocks of kPanelDepth, rows of X
// in blocks of kPanelRowBlock. W is packed once per (column block, k block) - once per weight
// element - into NR-wide k-major panels (kPanelCols x kPanelDepth fp32 stays in L2). Rows of X
// are copied to a compact buffer (row stride kPanelDepth + 16 floats): X's own stride is often
// a multiple of 4 KiB (k = 7168), which would put all MR rows of a tile in the same L1 sets.
// Innermost, one NR panel (32 KiB at 16 lanes) stays in L1 while MR-row tiles of X pass over it.
constexpr int kPanelCols = 256;
constexpr int kPanelRowBlock = 144;  // a multiple of both backends' MR (12, 6)
constexpr int kXStride = kPanelDepth + 16;

template <class V, DType D>
void panel_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                int64_t n0, int64_t n1) {
  constexpr int NR = 2 * V::kLanes;
  constexpr int MR = V::kPanelRows;
  static_assert(kPanelCols % NR == 0 && kPanelRowBlock % MR == 0);
  float* bp = thread_scratch(0, size_t(kPanelCols) * kPanelDepth);
  float* xp = thread_scratch(1, size_t(kPanelRowBlock) * kXStride);
  for (int64_t jc = n0; jc < n1; jc += kPanelCols) {
    const int nc = int(std::min<int64_t>(kPanelCols, n1 - jc));
    for (int64_t pc = 0; pc < w.k; pc += kPanelDepth) {
      const int kc = int(std::min<int64_t>(kPanelDepth, w.k - pc));
      for (int jr = 0; jr < nc; jr += NR)
        pack_panel<V, D>(w, jc + jr, std::min(NR, nc - jr), pc, kc, bp + jr * kPanelDepth);
      for (int64_t ic = 0; ic < m; ic += kPanelRowBlock) {
        const int mc = int(std::min<int64_t>(kPanelRowBlock, m - ic));
        for (int r = 0; r < mc; ++r)
          std::memcpy(xp + r * kXStride, x + (ic + r) * ldx + pc, size_t(kc) * sizeof(float));
        for (int jr = 0; jr < nc; jr += NR) {
          const float* panel = bp + jr * kPanelDepth;
          const int nr = std::min(NR, nc - jr);
          float* yb = y + ic * ldy + jc + jr;
          int r = 0;
          for (; r + MR <= mc; r += MR)
            panel_tile<V, MR>(xp + r * kXStride, kXStride, panel, kc, yb + r * ldy, ldy, nr,
                              pc > 0);
          if (r < mc)
            panel_tail<V, MR - 1>(mc - r, xp + r * kXStride, kXStride, panel, kc, yb + r * ldy, ldy,
                                  nr, pc > 0);
        }
      }
    }
  }
}

// ---- entry ------------------------------------------------------------------------------

template <class V, DType D>
void linear_rows_typed(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                       int64_t ldy, int64_t n0, int64_t n1) {
  // Streaming keeps every accumulator in registers for one pass over W; past one tile's rows
  // a second pass would re-convert each weight, and the packed panels win (measured: at m = 8
  // streaming is ~1.4x faster than panels on AVX-512, at m = 12 panels already match it).
  if (m <= kStreamMaxRows)
    stream_rows<V, D>(x, m, ldx, w, y, ldy, n0, n1);
  else
    panel_rows<V, D>(x, m, ldx, w, y, ldy, n0, n1);
}

template <class V>
void linear_rows_simd(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  switch (w.dtype) {
    case DType::F32:
      linear_rows_typed<V, DType::F32>(x, m, ldx, w, y, ldy, n0, n1);
      break;
    case DType::BF16:
      linear_rows_typed<V, DType::BF16>(x, m, ldx, w, y, ldy, n0, n1);
      break;
    case DType::F16:
      linear_rows_typed<V, DType::F16>(x, m, ldx, w, y, ldy, n0, n1);
      break;
    case DType::F8_E4M3:
      linear_rows_typed<V, DType::F8_E4M3>(x, m, ldx, w, y, ldy, n0, n1);
      break;
    default:
      fail("linear: unsupported weight dtype {}", dtype_name(w.dtype));
  }
}

}  // namespace
}  // namespace ff::gemm
