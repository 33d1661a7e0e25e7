// Private: the SIMD kernels of gemm::linear, written once over a vector-traits type V and
// compiled twice, by linear_avx2.cc (8 fp32 lanes, 16 registers) and linear_avx512.cc
// (16 lanes, 32 registers). Everything here sits in an anonymous namespace so the two
// differently-compiled copies can never be merged by the linker.
//
// V provides: kIsa, vec, kLanes, kAccRegs (accumulator budget of a streaming tile), kPanelRows,
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
// Three paths, all with fp32 products and fp32 accumulation (X is never rounded):
//
// Streaming dot products (m <= 8, AVX-512 BF16 / F16 / F32 m <= 12; decode). Memory-bound:
//   each weight row is read from memory once for all m rows of X. A tile is M <= 8 rows of X x N
//   weight rows; M*N vector accumulators run along k, one horizontal sum each at the end (9..12
//   rows: two tiles over the same, still cached, weight rows). FP8 accumulates each 128-column
//   block separately and then adds block_sum * scale into the running sum (DeepGEMM's promotion),
//   so the scale costs one FMA per block, not one multiply per weight (where the second set of
//   accumulators does not fit - AVX2 past 4 rows - each widened weight vector is multiplied by
//   its scale instead). Long rows are cut into column chunks so the X they use stays in cache,
//   and weight rows are prefetched in software (see kStreamXWholeBytes, kPrefetchBytes).
//
// Broadcast rows (AVX-512, 13 rows and up, FP8 9 and up; prefill): X transposed so one vector
//   holds a k of 16 rows; weights widened once into an L1 tile and broadcast, each broadcast
//   feeding up to 4 groups of 16 rows; rows past 64 in further 64-row blocks (see bcast_rows).
//
// Packed panels (AVX2 past 8 rows; prefill). Compute-bound: NR = 2 vectors of output columns x KC =
// 256
//   of k are dequantized (scale applied) and transposed into a k-major panel bp[KC][NR] that
//   stays in L1 while the rows of X pass over it, MR rows at a time: MR x 2 vector
//   accumulators, one broadcast of X and two panel loads per k (blocking: see panel_rows).
//   Each output element is a k-ordered fp32 sum per KC block, the blocks added into Y in order.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>

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

// Per-thread scratch that grows on first use and is then reused by every call on that thread
// (kernels run on the pool's threads, so there is one per thread and no locking).
inline float* thread_scratch(int slot, size_t floats) {
  struct Buffer {
    float* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[3];
  Buffer& b = buffers[slot];
  if (b.size < floats) {
    std::free(b.data);
    b.data = static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
    FF_CHECK(b.data != nullptr, "linear: cannot allocate {} bytes of scratch", floats * 4);
    b.size = floats;
  }
  return b.data;
}

// The 16 x 16 dword transpose: r[i] (16 dwords each) -> r[j] = {r[0][j], ..., r[15][j]}: pairs of
// rows, 4 x 4 blocks in each 128-bit lane, then the lanes. For the AVX-512 kernels that pack
// weight panels (linear_bf16dot_avx512.cc, linear_int8_gemm_avx512vnni.cc); the target
// attribute lets every includer compile it.
__attribute__((target("avx512f"), always_inline)) inline void transpose16_epi32(__m512i (&r)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + q], 128-bit lane l, holds rows 4i..4i+3 of dword 4l + q.
  for (int q = 0; q < 4; ++q) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x88);
    const __m512i v1 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xdd);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x88);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xdd);
    r[q] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + q] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[8 + q] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    r[12 + q] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
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

// Software prefetch 2 KiB ahead in each weight row; near the row's end, the same distance into
// the row this one's tile slot handles next (row + N, the next tile's), so short rows (FP8
// k = 2048: 2 KiB) start the next tile warm. The hardware prefetcher alone restarts at every
// 4 KiB page of every row: measured on one thread over 1 GiB of weights (m = 1), the fraction
// of read bandwidth went from 0.75 to 0.95 (BF16) and from 0.45 / 0.67 to 0.8 / 0.9 (FP8,
// k = 2048 / 7168). A prefetch past the matrix is a harmless no-op. always_inline: GCC 12
// treats a function holding only a prefetch as pure and deletes the calls.
constexpr int64_t kPrefetchBytes = 2048;

struct RowPrefetch {
  int64_t distance;    // bytes ahead: kPrefetchBytes, at most one chunk of a row
  int64_t row_bytes;   // where the columns read from a row end (bytes from its start)
  int64_t wrap_bytes;  // from there to the first column read from row + N
};

// For rows read over columns [j0, j1), N rows per tile.
template <DType D>
RowPrefetch row_prefetch(const Weight& w, int n_rows, int64_t j0, int64_t j1) {
  constexpr int64_t b = weight_bytes<D>();
  return {std::min(kPrefetchBytes, (j1 - j0) * b), j1 * b, (n_rows * w.ld - (j1 - j0)) * b};
}

template <DType D>
__attribute__((always_inline)) inline void prefetch_ahead(const void* row, int64_t j,
                                                          const RowPrefetch& pf) {
  int64_t off = j * weight_bytes<D>() + pf.distance;
  if (off >= pf.row_bytes) off += pf.wrap_bytes;
  __builtin_prefetch(static_cast<const char*>(row) + off, 0, 3);
}

// Rows of X as a streaming pass sees them: X[r, j] = data[r * ld + j - col0].
struct XView {
  const float* data;
  int64_t ld;
  int64_t col0;
  const float* at(int r, int64_t j) const { return data + r * ld + (j - col0); }
};

// Keeps a loaded vector in a register: GCC otherwise folds the load into every FMA that uses
// it, so an X vector shared by N weight rows is loaded N times, and with the weight loads the
// streaming loop becomes bound by the two 512-bit loads a cycle instead of the two FMAs.
template <class T>
__attribute__((always_inline)) inline void in_register(T& v) {
  asm("" : "+v"(v));
}

// acc[r][c] += X[r, j0:j1] . W[col+c, j0:j1] (lane-wise partial sums); the weights are
// multiplied by `scale[c]` first when Scaled.
template <class V, DType D, int M, int N, bool Scaled, bool Prefetch = true>
inline void dot_range(const XView& x, const void* const* rows, const RowPrefetch& pf, int64_t j0,
                      int64_t j1, const typename V::vec* scale, typename V::vec (&acc)[M][N]) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  int64_t j = j0;
  // E4M3 is widened 2 vectors at a time where the ISA does that cheaper (V::load_w2).
  for (; D == DType::F8_E4M3 && j + 2 * L <= j1; j += 2 * L) {
    vec wv[N], wv2[N];
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      if constexpr (Prefetch) prefetch_ahead<D>(rows[c], j, pf);
      V::template load_w2<D>(rows[c], j, wv[c], wv2[c]);
      if constexpr (Scaled) {
        wv[c] = V::mul(wv[c], scale[c]);
        wv2[c] = V::mul(wv2[c], scale[c]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      vec xv = V::load(x.at(r, j)), xv2 = V::load(x.at(r, j + L));
      if (N > 1) in_register(xv), in_register(xv2);
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
      if constexpr (Prefetch) prefetch_ahead<D>(rows[c], j, pf);
      wv[c] = V::template load_w<D>(rows[c], j);
      if constexpr (Scaled) wv[c] = V::mul(wv[c], scale[c]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      vec xv = V::load(x.at(r, j));
      if (N > 1) in_register(xv);
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
      const vec xv = V::load_n(x.at(r, j), t);
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
    }
  }
}

// Y[r, col+c] (+)= X[r, j0:j1] . W[col+c, j0:j1] for r < M, c < N; adds to Y if `accumulate`.
// Prefetch: the software prefetch of the weight rows (see kPrefetchBytes, kStreamOneRowBytes).
template <class V, DType D, int M, int N, bool Prefetch = true>
void stream_tile(const XView& x, const Weight& w, int64_t col, float* y, int64_t ldy,
                 int64_t j_begin, int64_t j_end, bool accumulate) {
  using vec = typename V::vec;
  const void* rows[N];
  for (int c = 0; c < N; ++c) rows[c] = weight_row<D>(w, col + c);
  const RowPrefetch pf = row_prefetch<D>(w, N, j_begin, j_end);
  vec acc[M][N];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) acc[r][c] = V::zero();

  if constexpr (D == DType::F8_E4M3) {
    const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
    const float* srow[N];
    for (int c = 0; c < N; ++c) srow[c] = w.scale_inv + ((col + c) / kFp8Block) * kb;
    for (int64_t b = j_begin / kFp8Block; b * kFp8Block < j_end; ++b) {
      const int64_t j0 = b * kFp8Block, j1 = std::min(j_end, j0 + kFp8Block);
      vec s[N];
#pragma GCC unroll 4
      for (int c = 0; c < N; ++c) s[c] = V::set1(srow[c][b] * kE4m3ViaF16Scale);
      if constexpr (stream_promotes<V, D>(M)) {
        vec part[M][N];
#pragma GCC unroll 16
        for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
          for (int c = 0; c < N; ++c) part[r][c] = V::zero();
        dot_range<V, D, M, N, false>(x, rows, pf, j0, j1, nullptr, part);
#pragma GCC unroll 4
        for (int c = 0; c < N; ++c)
#pragma GCC unroll 16
          for (int r = 0; r < M; ++r) acc[r][c] = V::fma(part[r][c], s[c], acc[r][c]);
      } else {
        dot_range<V, D, M, N, true>(x, rows, pf, j0, j1, s, acc);
      }
    }
  } else {
    dot_range<V, D, M, N, false, Prefetch>(x, rows, pf, j_begin, j_end, nullptr, acc);
  }
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < N; ++c) {
      float* out = y + r * ldy + col + c;
      *out = accumulate ? *out + V::hsum(acc[r][c]) : V::hsum(acc[r][c]);
    }
  }
}

// X rows are re-read from cache for every tile. When all of X's rows take at most
// kStreamXWholeBytes, a pass reads whole weight rows and X stays in L2; otherwise the columns
// are taken in chunks of at most kStreamXBytes of X (in L1), each chunk a pass over all the
// tiles, its sums added into Y. Whole rows are faster where they apply (2 threads, 32 experts of
// 1024 x 2048 BF16 from DRAM, alternated call by call: m = 5..8 +5-14%, 9..12 +2-9%; m = 2..4
// at k = 5632: +10%); past that, X in L2 loses (m = 8..12 at k = 5632: -7-10%). W is still read
// once; the chunk sizes depend only on m and k, so every column is computed the same way
// whatever the split of n across threads. With several rows, the chunk of X is first copied to
// a compact buffer: X's own row stride is often a multiple of 4 KiB (k = 7168), which would put
// every row's current line in the same L1 set.
constexpr int64_t kStreamXBytes = 32 << 10;
constexpr int64_t kStreamXWholeBytes = 128 << 10;
constexpr int64_t kStreamXPad = 16;  // floats between the copied rows, to spread the L1 sets

// One weight row per tile and no software prefetch, for BF16 / F16 / F32 weights where the rows
// of X take at most kStreamOneRowXBytes: each thread then reads one sequential stream, which AMD
// Zen 4 (2 threads, from DRAM, alternated runs) reads at the bound of a plain sum, where 4
// interleaved row streams with their prefetches took 0.55-0.8 of it (BF16 m = 1: 129280 x 2048
// 27-30 -> 32-41 GB/s against a 42-46 GB/s read; 512 x 2048 25-28 -> 34-51, 2048 x 512 18 ->
// 35-54, 5632 x 2048 28 -> 33-35, 3072 x 1536 25 -> 35; m = 2 at k = 1536: 26-28 -> 34-45).
// With more of X (m = 3 at k = 2048, m = 2 at 5632 x 2048, m = 1 at k = 5632) it loses 10-45%:
// X no longer stays in L1 beside the stream, and the tiles share each X load among 4 rows. A
// column's sums are the same either way (one accumulator per row and column, j in order). AMD
// only: on Sapphire Rapids the software prefetch is what took BF16 at m = 1 from 0.75 to 0.95 of
// the read bandwidth (see kPrefetchBytes), and one-row streams are unmeasured there.
constexpr int64_t kStreamOneRowXBytes = 12 << 10;
template <DType D>
bool stream_one_row(int rows, const Weight& w) {
  return (D == DType::BF16 || D == DType::F16 || D == DType::F32) &&
         rows * w.k * int64_t(sizeof(float)) <= kStreamOneRowXBytes &&
         cpu_features().vendor == CpuVendor::Amd;
}

// Rows [0, M) and, when M2 > 0, rows [M, M + M2) as a second tile over the same weight rows,
// which are still in L1 then: 9..12 rows still read W once and widen each weight twice, which
// for BF16 beats packing it and, below 13 rows, broadcasting it (see linear_rows_typed).
template <class V, DType D, int M, int M2 = 0>
void stream_cols_range(const float* x, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                       int64_t n0, int64_t n1) {
  static_assert(M2 <= M);
  constexpr int kRows = M + M2;
  constexpr int N = stream_cols<V, D>(M);
  const int64_t chunk =
      kRows * w.k * 4 <= kStreamXWholeBytes
          ? w.k
          : std::max<int64_t>(kFp8Block, kStreamXBytes / (kRows * 4) / kFp8Block * kFp8Block);
  const int64_t xs = chunk + kStreamXPad;
  float* copy = kRows > 1 ? thread_scratch(2, size_t(kRows) * xs) : nullptr;
  for (int64_t j0 = 0; j0 < w.k; j0 += chunk) {
    const int64_t j1 = std::min(w.k, j0 + chunk);
    XView xv{x, ldx, 0};
    if (kRows > 1) {
      for (int r = 0; r < kRows; ++r)
        std::memcpy(copy + r * xs, x + r * ldx + j0, size_t(j1 - j0) * sizeof(float));
      xv = XView{copy, xs, j0};
    }
    // Rows [M, M + M2): only used when M2 > 0, and then X was copied.
    const XView xv2{copy + (M2 > 0 ? M * xs : 0), xs, j0};
    float* y2 = M2 > 0 ? y + M * ldy : y;
    int64_t c = n0;
    if (stream_one_row<D>(M + M2, w)) {
      for (; c < n1; ++c) {
        stream_tile<V, D, M, 1, false>(xv, w, c, y, ldy, j0, j1, j0 > 0);
        if constexpr (M2 > 0) stream_tile<V, D, M2, 1, false>(xv2, w, c, y2, ldy, j0, j1, j0 > 0);
      }
      continue;
    }
    for (; c + N <= n1; c += N) {
      stream_tile<V, D, M, N>(xv, w, c, y, ldy, j0, j1, j0 > 0);
      if constexpr (M2 > 0) stream_tile<V, D, M2, N>(xv2, w, c, y2, ldy, j0, j1, j0 > 0);
    }
    for (; c < n1; ++c) {
      stream_tile<V, D, M, 1>(xv, w, c, y, ldy, j0, j1, j0 > 0);
      if constexpr (M2 > 0) stream_tile<V, D, M2, 1>(xv2, w, c, y2, ldy, j0, j1, j0 > 0);
    }
  }
}

// All m rows in one pass over W; m <= 12.
template <class V, DType D>
void stream_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  using Fn = void (*)(const float*, int64_t, const Weight&, float*, int64_t, int64_t, int64_t);
  static constexpr Fn kByRows[] = {
      nullptr,
      stream_cols_range<V, D, 1>,
      stream_cols_range<V, D, 2>,
      stream_cols_range<V, D, 3>,
      stream_cols_range<V, D, 4>,
      stream_cols_range<V, D, 5>,
      stream_cols_range<V, D, 6>,
      stream_cols_range<V, D, 7>,
      stream_cols_range<V, D, 8>,
      stream_cols_range<V, D, 8, 1>,
      stream_cols_range<V, D, 8, 2>,
      stream_cols_range<V, D, 8, 3>,
      stream_cols_range<V, D, 8, 4>,
  };
  static_assert(std::size(kByRows) == 13);
  kByRows[m](x, ldx, w, y, ldy, n0, n1);
}

// ---- packed panels ----------------------------------------------------------------------

// bp[kk * NR + i] = W[col + i, pc + kk] dequantized (scale applied); zero for i >= nr. Built
// from L x L blocks (L rows of W, L values of k each) widened to fp32 and transposed in
// registers, so packing costs a few shuffles per element instead of a scalar store each.
// A block reads only KC columns of each row, too short for the hardware prefetcher, so each
// load also prefetches the same place `next_block_bytes` on (the next k block of the row), which
// the next pack of this row reads one block of work later.
template <class V, DType D>
void pack_panel(const Weight& w, int64_t col, int nr, int64_t pc, int kc, float* bp,
                int64_t next_block_bytes) {
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
          __builtin_prefetch(
              static_cast<const char*>(rows[i]) + (pc + kk) * weight_bytes<D>() + next_block_bytes,
              0, 2);
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

// Blocking (BLIS order): columns in blocks of kPanelCols, k in blocks of kPanelDepth, rows of X
// in blocks of kPanelRowBlock. W is packed once per (column block, k block) - once per weight
// element - into NR-wide k-major panels (kPanelCols x kPanelDepth fp32 stays in L2). Rows of X
// are copied to a compact buffer (row stride kPanelDepth + 16 floats): X's own stride is often
// a multiple of 4 KiB (k = 7168), which would put all MR rows of a tile in the same L1 sets.
// Innermost, one NR panel (32 KiB at 16 lanes) stays in L1 while MR-row tiles of X pass over it.
constexpr int kPanelCols = 256;
constexpr int kPanelRowBlock = 144;  // a multiple of both backends' MR (12, 6)
constexpr int kXStride = kPanelDepth + 16;

// The panel loop over any weight format: pack(col, nr, pc, kc, bp, last_k) fills bp with
// W[col : col + nr, pc : pc + kc] as pack_panel does (last_k: pc is the last k block).
template <class V, class Pack>
void panel_rows_with(const float* x, int64_t m, int64_t ldx, int64_t k, float* y, int64_t ldy,
                     int64_t n0, int64_t n1, const Pack& pack) {
  constexpr int NR = 2 * V::kLanes;
  constexpr int MR = V::kPanelRows;
  static_assert(kPanelCols % NR == 0 && kPanelRowBlock % MR == 0);
  float* bp = thread_scratch(0, size_t(kPanelCols) * kPanelDepth);
  float* xp = thread_scratch(1, size_t(kPanelRowBlock) * kXStride);
  for (int64_t jc = n0; jc < n1; jc += kPanelCols) {
    const int nc = int(std::min<int64_t>(kPanelCols, n1 - jc));
    for (int64_t pc = 0; pc < k; pc += kPanelDepth) {
      const int kc = int(std::min<int64_t>(kPanelDepth, k - pc));
      for (int jr = 0; jr < nc; jr += NR)
        pack(jc + jr, std::min(NR, nc - jr), pc, kc, bp + jr * kPanelDepth, pc + kPanelDepth >= k);
      for (int64_t ic = 0; ic < m; ic += kPanelRowBlock) {
        const int mc = int(std::min<int64_t>(kPanelRowBlock, m - ic));
        for (int r = 0; r < mc; ++r)
          std::memcpy(xp + r * kXStride, x + (ic + r) * ldx + pc, size_t(kc) * sizeof(float));
        for (int jr = 0; jr < nc; jr += NR) {
          const float* panel = bp + jr * kPanelDepth;
          const int nr = std::min(NR, nc - jr);
          float* yb = y + ic * ldy + jc + jr;
          // Rows split evenly over the fewest tiles (m = 16: 8 + 8, not 12 + 4): a short tile
          // has too few accumulators to hide the FMA latency.
          const int tiles = (mc + MR - 1) / MR;
          for (int t = 0, r = 0; t < tiles; ++t) {
            const int rows = mc / tiles + (t < mc % tiles ? 1 : 0);
            panel_tail<V, MR>(rows, xp + r * kXStride, kXStride, panel, kc, yb + r * ldy, ldy, nr,
                              pc > 0);
            r += rows;
          }
        }
      }
    }
  }
}

template <class V, DType D>
void panel_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                int64_t n0, int64_t n1) {
  constexpr int64_t b = weight_bytes<D>();
  panel_rows_with<V>(x, m, ldx, w.k, y, ldy, n0, n1,
                     [&](int64_t col, int nr, int64_t pc, int kc, float* bp, bool last_k) {
                       // After the last k block, the next block of columns' first k block.
                       const int64_t next =
                           !last_k ? kPanelDepth * b : (kPanelCols * w.ld - pc) * b;
                       pack_panel<V, D>(w, col, nr, pc, kc, bp, next);
                     });
}

// ---- broadcast rows (AVX-512: FP8 from 9 rows, other weights from 13) ---------------------

// G groups of 16 rows of X (rows past m zero) are transposed once per pass over k into
// X^T [k][16 G]. Per block of C weight rows (output columns), each kBcastDepth-wide chunk is
// widened once - FP8 scaled - into an fp32 tile wt[c][kk] that stays in L1, and one vector per
// column and group, lanes over the group's rows, accumulates X^T[k] * broadcast(wt[c][k]) in k
// order; with G > 1 one broadcast feeds G FMAs. Against two 8-row streaming tiles this widens
// each weight once instead of twice and needs no horizontal sums (a column's vector holds it for
// every row); against the packed panels it skips transposing W (only X, O(mk) per call, is
// transposed). Each pass's sums are added into Y (the first one stores). A column's value
// depends only on its own weights, X and m, whatever the split of n.
constexpr int64_t kBcastDepth = 256;  // a multiple of the FP8 block

// Columns a block widens for G groups of 16 rows: G * C accumulators (16 or 24) of 32 registers.
template <int G>
constexpr int bcast_cols() {
  return G == 1 ? 16 : 24 / G;
}

// k per pass: X^T of a pass ([k][16 G] fp32) takes at most 256 KiB, so it stays in L2 while the
// pass runs over all the columns (a multiple of the chunk depth).
template <int G>
constexpr int64_t bcast_pass_depth() {
  return std::max<int64_t>(kBcastDepth, (int64_t(64) << 10) / (16 * G) / kBcastDepth * kBcastDepth);
}

// The broadcast loop over any weight format: widen(col, k0, kc, dst, ahead_col, p0) writes
// W[col, k0 : k0 + kc] as fp32 to dst and prefetches what the slot reads next (the row's next
// chunk or, after the pass's last one, row ahead_col from p0).
template <class V, int G, class Widen>
void bcast_rows_with(const float* x, int64_t m, int64_t ldx, int64_t k, float* y, int64_t ldy,
                     int64_t n0, int64_t n1, const Widen& widen) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  constexpr int C = bcast_cols<G>();
  constexpr int R = G * L;  // rows a k step holds (past m: zero)
  constexpr int64_t kPass = bcast_pass_depth<G>();
  static_assert(L == 16, "one vector holds 16 rows");
  float* xt = thread_scratch(0, size_t(std::min(k, kPass)) * R);
  float* wt = thread_scratch(1, size_t(C) * kBcastDepth);
  for (int64_t p0 = 0; p0 < k; p0 += kPass) {
    const int64_t p1 = std::min(k, p0 + kPass);
    // X^T [k - p0][R] for this pass, 16 x 16 blocks transposed in registers.
    for (int g = 0; g < G; ++g) {
      for (int64_t k0 = p0; k0 < p1; k0 += L) {
        const int t = int(std::min<int64_t>(L, p1 - k0));
        vec r[L];
        for (int i = 0; i < L; ++i) {
          const int64_t row = g * L + i;
          r[i] = row < m ? V::load_n(x + row * ldx + k0, t) : V::zero();
        }
        V::transpose_store(r, xt + (k0 - p0) * R + g * L, R, t);
      }
    }
    for (int64_t c0 = n0; c0 < n1; c0 += C) {
      const int nc = int(std::min<int64_t>(C, n1 - c0));
      vec acc[G][C];
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 16
        for (int c = 0; c < C; ++c) acc[g][c] = V::zero();
      for (int64_t k0 = p0; k0 < p1; k0 += kBcastDepth) {
        const int64_t kc = std::min(kBcastDepth, p1 - k0);
        // Widen the block's chunk (columns past nc: zeros), prefetching the next chunk.
        for (int c = 0; c < C; ++c) {
          float* dst = wt + c * kBcastDepth;
          if (c >= nc) {
            std::fill(dst, dst + kc, 0.f);
            continue;
          }
          widen(c0 + c, k0, kc, dst, c0 + C + c, p0, p1);
        }
        const float* xk = xt + (k0 - p0) * R;
        for (int64_t kk = 0; kk < kc; ++kk) {
          vec xv[G];
#pragma GCC unroll 4
          for (int g = 0; g < G; ++g) xv[g] = V::load(xk + kk * R + g * L);
#pragma GCC unroll 16
          for (int c = 0; c < C; ++c) {
            vec b = V::set1(wt[c * kBcastDepth + kk]);
            if (G > 1) in_register(b);
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) acc[g][c] = V::fma(xv[g], b, acc[g][c]);
          }
        }
      }
      // Constant indices only, so the accumulators stay in registers.
      alignas(64) float lanes[G][C][L];
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 16
        for (int c = 0; c < C; ++c) V::store(lanes[g][c], acc[g][c]);
      for (int g = 0; g < G; ++g) {
        const int64_t rows = std::min<int64_t>(L, m - g * L);
        for (int64_t r = 0; r < rows; ++r) {
          float* yr = y + (g * L + r) * ldy + c0;
          for (int c = 0; c < nc; ++c) yr[c] = p0 == 0 ? lanes[g][c][r] : yr[c] + lanes[g][c][r];
        }
      }
    }
  }
}

template <class V, DType D, int G>
void bcast_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                int64_t n0, int64_t n1) {
  constexpr int L = V::kLanes;
  const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
  bcast_rows_with<V, G>(
      x, m, ldx, w.k, y, ldy, n0, n1,
      [&](int64_t col, int64_t k0, int64_t kc, float* dst, int64_t ahead_col, int64_t p0,
          int64_t p1) {
        using vec = typename V::vec;
        const void* row = weight_row<D>(w, col);
        const float* srow = D == DType::F8_E4M3 ? w.scale_inv + (col / kFp8Block) * kb : nullptr;
        // The next chunk of this row, or after the pass's last one the pass's first chunk of
        // the row the next block widens in this slot, so a block starts warm.
        const char* ahead =
            k0 + kBcastDepth < p1
                ? static_cast<const char*>(row) + (k0 + kBcastDepth) * weight_bytes<D>()
                : static_cast<const char*>(weight_row<D>(w, ahead_col)) + p0 * weight_bytes<D>();
        for (int64_t j = 0; j < kc; j += L) {
          __builtin_prefetch(ahead + j * weight_bytes<D>(), 0, 3);
          const int t = int(std::min<int64_t>(L, kc - j));
          vec v =
              t == L ? V::template load_w<D>(row, k0 + j) : V::template load_w_n<D>(row, k0 + j, t);
          if constexpr (D == DType::F8_E4M3)
            v = V::mul(v, V::set1(srow[(k0 + j) / kFp8Block] * kE4m3ViaF16Scale));
          V::store(dst + j, v);
        }
      });
}

// Rows in blocks of 64 (the last one smaller), each a bcast_rows over the same columns: the
// weights are read once per block, at 64 rows ~8 bytes per 256 flops, far below the bandwidth.
template <class V, DType D>
void bcast_row_blocks(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int64_t kBlock = 4 * V::kLanes;
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t rows = std::min(kBlock, m - r0);
    const float* xr = x + r0 * ldx;
    float* yr = y + r0 * ldy;
    switch ((rows + V::kLanes - 1) / V::kLanes) {
      case 1:
        bcast_rows<V, D, 1>(xr, rows, ldx, w, yr, ldy, n0, n1);
        break;
      case 2:
        bcast_rows<V, D, 2>(xr, rows, ldx, w, yr, ldy, n0, n1);
        break;
      case 3:
        bcast_rows<V, D, 3>(xr, rows, ldx, w, yr, ldy, n0, n1);
        break;
      default:
        bcast_rows<V, D, 4>(xr, rows, ldx, w, yr, ldy, n0, n1);
    }
  }
}

// ---- entry ------------------------------------------------------------------------------

template <class V, DType D>
void linear_rows_typed(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                       int64_t ldy, int64_t n0, int64_t n1) {
  // Measured (AVX-512, one thread, weights from DRAM): m = 8 streams ~1.4x faster than the
  // panels. Broadcast rows (2 threads, 512 x 2048, interleaved runs): BF16 m = 16 175 vs 125
  // GFLOP/s for two streaming tiles, m = 12 equal, m = 9 97 vs 117 (7 of 16 lanes idle); FP8
  // against the panels m = 16 150 vs 114, m = 12 110 vs 96, m = 9 81 vs 78. Past 16 rows
  // (BF16, 2 threads, alternated call by call): 1.1-1.4x the panels at m = 24..64 and
  // 1.0-1.2x at 72..512 (docs/BENCHMARKS.md).
  if (m <= 8) return stream_rows<V, D>(x, m, ldx, w, y, ldy, n0, n1);
  if constexpr (V::kLanes == 16) {
    if (m > 16) return bcast_row_blocks<V, D>(x, m, ldx, w, y, ldy, n0, n1);
    if (D == DType::F8_E4M3 || m > 12) return bcast_rows<V, D, 1>(x, m, ldx, w, y, ldy, n0, n1);
    stream_rows<V, D>(x, m, ldx, w, y, ldy, n0, n1);  // BF16 / F16 / F32, 9..12 rows
  } else {
    panel_rows<V, D>(x, m, ldx, w, y, ldy, n0, n1);
  }
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
