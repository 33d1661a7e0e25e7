// gemm::linear for BF16 weights on vdpbf16ps (AVX512-BF16): Y[0:m, n0:n1] = bf16(X) W^T, fp32
// accumulation. X is rounded to bf16 (round to nearest even, _mm512_cvtne2ps_pbh); each
// instruction adds two exact bf16 products per lane into fp32, with the instruction's own
// rounding (denormal inputs and results flushed to zero). Where vdpbf16ps runs at full rate
// (AMD Zen 4 / Zen 5) it does twice the multiply-adds of an fp32 FMA per cycle; the choice of
// kernel is linear.cc's (resolve_bf16_gemm_kernel).
//
// Blocking, for one thread's columns [n0, n1):
//   k in blocks of kKc (outermost), columns in blocks of kNc, rows of X in blocks of kMc.
//   Per k block, all m rows of X are converted to bf16 once into a compact buffer: row r's dword
//   q = the pair {X[r, 2q], X[r, 2q + 1]} (the pair's first k in the low half, as vdpbf16ps pairs
//   them; the odd k's partner zero), rows kXStride dwords apart so a tile's rows do not share
//   L1 sets. Per (k block, column block) W is packed once into panels of 16 kNv columns: per k
//   pair q, kNv 64-byte vectors, lane c = the dword {W[col + c, 2q], W[col + c, 2q + 1]}
//   (columns past the matrix and the odd k's partner zero); the next block's rows are
//   prefetched while this one computes.
//   Innermost, a tile of MR <= kMr rows x one panel: MR kNv accumulators; per k pair kNv panel
//   loads and, per row, one dword of X broadcast by each of kNv vdpbf16ps.
//   Measured (one thread, Zen 4, m = 512): converting X per (column block, k block) instead,
//   re-read from L3 in fp32, cost ~15%; 8 x 3 vectors beat 12 x 2 and 14 x 2 by ~5%, and 512
//   of k per block beat 256 (fewer passes over Y) by ~5-8%. Then 8 x 2 against 8 x 3 (2 threads,
//   weights from DRAM, alternated in one process, 100-150 calls each): one matrix split in two
//   (linear) equal at m = 512, +4% at 2048 x 7168 m = 256, +20% at 512 x 2048 m = 128, +35-50%
//   at m = 17..64 on 512 x 2048 and 2048 x 512; 18 experts of 512 x 2048 or 9 of 2048 x 512 at
//   m = 32 through linear_batch's split (the model's MoE) +0-3%.
// A column's sum is taken over k blocks in order, each block's part in fp32 registers and then
// added into Y (Y's lines prefetched at the tile's start), and the row tiles depend only on m:
// the result does not depend on n0, n1, the panel a column falls in or the thread.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "core/core.h"
#include "gemm/linear_kernels.h"
#include "gemm/linear_simd.h"  // thread_scratch, transpose16_epi32

namespace ff::gemm {
namespace {
namespace dot {  // (apart from linear_simd.h's names, included for thread_scratch)

constexpr int kKc = 512;  // k per block (256 pairs)
constexpr int kNc = 256;  // columns per block (rounded down to whole panels)
constexpr int kMc = 144;  // rows of X per block
constexpr int kMr = 8;    // rows per tile
constexpr int kNv = 2;    // vectors (of 16 columns) per panel: 16 accumulators + 2 panel vectors
constexpr int kKp = kKc / 2;
constexpr int kXStride = kKp + 16;  // dwords between converted rows of X

// Panel of W[col : col + nr, pc : pc + kc] (nr <= 16 NV) into bp (kp = ceil(kc / 2) pairs x
// 16 NV dwords), 16 columns x 16 pairs per transpose.
template <int NV>
void pack_panel(const Weight& w, int64_t col, int nr, int64_t pc, int kc, uint32_t* bp) {
  const auto* base = static_cast<const uint16_t*>(w.data);
  const int kp = (kc + 1) / 2;
  for (int half = 0; half < NV; ++half) {
    for (int q0 = 0; q0 < kp; q0 += 16) {
      const int elems = std::min(32, kc - 2 * q0);  // bf16 of this step in a row
      const __mmask32 mask = elems == 32 ? ~__mmask32(0) : __mmask32((1u << elems) - 1u);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const int c = half * 16 + i;
        r[i] = c < nr ? _mm512_maskz_loadu_epi16(mask, base + (col + c) * w.ld + pc + 2 * q0)
                      : _mm512_setzero_si512();
      }
      transpose16_epi32(r);
      const int pairs = std::min(16, kp - q0);
      for (int j = 0; j < pairs; ++j)
        _mm512_store_si512(bp + (size_t(q0 + j) * NV + half) * 16, r[j]);
    }
  }
}

// Rows [0, rows) of X, columns [pc, pc + kc), as bf16 pairs (the odd k's partner zero).
void convert_rows(const float* x, int64_t ldx, int rows, int64_t pc, int kc, uint32_t* xb) {
  for (int r = 0; r < rows; ++r) {
    const float* src = x + r * ldx + pc;
    uint32_t* dst = xb + size_t(r) * kXStride;
    for (int j = 0; j < kc; j += 32) {
      const int t = kc - j;
      const __m512 lo = t >= 16 ? _mm512_loadu_ps(src + j)
                                : _mm512_maskz_loadu_ps(__mmask16((1u << t) - 1u), src + j);
      const __m512 hi = t >= 32 ? _mm512_loadu_ps(src + j + 16)
                        : t <= 16
                            ? _mm512_setzero_ps()
                            : _mm512_maskz_loadu_ps(__mmask16((1u << (t - 16)) - 1u), src + j + 16);
      _mm512_store_si512(dst + j / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

// acc += b . broadcast(*x), the dword of X as the instruction's embedded broadcast: GCC 12 emits
// a separate vpbroadcastd for _mm512_set1_epi32, which competes with vdpbf16ps for the vector
// pipes (one thread, m = 512: ~5% slower).
__attribute__((always_inline)) inline __m512 dot_bcast(__m512 acc, __m512bh b, const uint32_t* x) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(b), "m"(*x));
  return acc;
}

// Y[0:MR, 0:nr] (+)= X[0:MR] . panel over kp pairs; adds into Y when `accumulate`.
template <int MR, int NV>
void dot_tile(const uint32_t* xb, const uint32_t* bp, int kp, float* y, int64_t ldy, int nr,
              bool accumulate) {
  // Y's lines are fetched while the tile computes: with k outermost, Y (m x the thread's
  // columns) is rarely still in L2 when a block comes back to it.
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v <= NV; ++v) __builtin_prefetch(y + r * ldy + 16 * v, 1, 3);
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int q = 0; q < kp; ++q) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_load_si512(bp + (q * NV + v) * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = dot_bcast(acc[r][v], b[v], xb + r * kXStride + q);
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* yr = y + r * ldy;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int t = std::clamp(nr - 16 * v, 0, 16);
      if (t == 16) {
        if (accumulate) acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_loadu_ps(yr + 16 * v));
        _mm512_storeu_ps(yr + 16 * v, acc[r][v]);
      } else if (t > 0) {
        const __mmask16 mk = __mmask16((1u << t) - 1u);
        if (accumulate)
          acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(mk, yr + 16 * v));
        _mm512_mask_storeu_ps(yr + 16 * v, mk, acc[r][v]);
      }
    }
  }
}

template <int MR, int NV>
void dot_tail(int rows, const uint32_t* xb, const uint32_t* bp, int kp, float* y, int64_t ldy,
              int nr, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR)
      dot_tile<MR, NV>(xb, bp, kp, y, ldy, nr, accumulate);
    else
      dot_tail<MR - 1, NV>(rows, xb, bp, kp, y, ldy, nr, accumulate);
  }
}

// Prefetches (into L2) W[col : col + nr, pc : pc + kc], the panel that pack_panel reads next
// time: a panel reads 512 bytes of each of its 32 rows, a whole matrix apart from the previous
// read of the same rows, too little for the hardware prefetcher to find the streams.
void prefetch_panel(const Weight& w, int64_t col, int nr, int64_t pc, int kc) {
  const auto* base = static_cast<const char*>(w.data);
  for (int c = 0; c < nr; ++c) {
    const char* row = base + ((col + c) * w.ld + pc) * 2;
    for (int off = 0; off < kc * 2 + 63; off += 64) __builtin_prefetch(row + off, 0, 2);
  }
}

// Y[0:rows, 0:nr] (+)= X[0:rows] . panel: the rows split evenly over the fewest tiles (m = 24:
// 12 + 12, m = 17: 9 + 8; a short tile has too few accumulators to hide the latency).
template <int MR, int NV>
void panel_times_rows(int rows, const uint32_t* xb, const uint32_t* panel, int kp, float* y,
                      int64_t ldy, int nr, bool accumulate) {
  const int tiles = (rows + MR - 1) / MR;
  for (int t = 0, r = 0; t < tiles; ++t) {
    const int tr = rows / tiles + (t < rows % tiles ? 1 : 0);
    dot_tail<MR, NV>(tr, xb + size_t(r) * kXStride, panel, kp, y + r * ldy, ldy, nr, accumulate);
    r += tr;
  }
}

template <int MR, int NV>
void dot_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
              int64_t n0, int64_t n1) {
  constexpr int kNr = 16 * NV;
  constexpr int kNcv = kNc / kNr * kNr;
  auto* bp = reinterpret_cast<uint32_t*>(thread_scratch(0, size_t(kNcv) * kKp));
  auto* xb = reinterpret_cast<uint32_t*>(thread_scratch(1, size_t(m) * kXStride));
  for (int64_t pc = 0; pc < w.k; pc += kKc) {
    const int kc = int(std::min<int64_t>(kKc, w.k - pc));
    const int kp = (kc + 1) / 2;
    convert_rows(x, ldx, int(m), pc, kc, xb);
    for (int64_t jc = n0; jc < n1; jc += kNcv) {
      const int nc = int(std::min<int64_t>(kNcv, n1 - jc));
      // The block packed next: the next columns at this depth, or the first ones at the next.
      const bool last_col = jc + kNcv >= n1;
      const int64_t next_jc = last_col ? n0 : jc + kNcv, next_pc = last_col ? pc + kKc : pc;
      const int next_nc = int(std::min<int64_t>(kNcv, n1 - next_jc));
      const int next_kc = int(std::min<int64_t>(kKc, w.k - next_pc));
      for (int jr = 0; jr < nc; jr += kNr)
        pack_panel<NV>(w, jc + jr, std::min(kNr, nc - jr), pc, kc, bp + size_t(jr) * kKp);
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int mc = int(std::min<int64_t>(kMc, m - ic));
        const uint32_t* xblock = xb + size_t(ic) * kXStride;
        for (int jr = 0; jr < nc; jr += kNr) {
          const int nr = std::min(kNr, nc - jr);
          if (ic == 0 && next_kc > 0 && jr < next_nc)
            prefetch_panel(w, next_jc + jr, std::min(kNr, next_nc - jr), next_pc, next_kc);
          panel_times_rows<MR, NV>(mc, xblock, bp + size_t(jr) * kKp, kp, y + ic * ldy + jc + jr,
                                   ldy, nr, pc > 0);
        }
      }
    }
  }
}

// Few rows (all of X converted at once takes at most kXWholeBytes): panels outermost, then k.
// Each panel's rows, consecutive in W, are then read over their whole depth before the next
// panel's, one sequential region per thread, instead of kKc-wide slices of every row of the
// thread's columns per k block, which on Zen 4 (2 threads, from DRAM) is what small m paid for:
// 512 x 2048 at m = 33 spent over half its time on a fixed cost per weight. The sums are the
// same (a column's k blocks in order, each block's part added into Y).
constexpr int64_t kXWholeBytes = 256 << 10;

template <int MR, int NV>
void dot_rows_panels_first(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                           int64_t ldy, int64_t n0, int64_t n1) {
  constexpr int kNr = 16 * NV;
  const int64_t blocks = (w.k + kKc - 1) / kKc;
  auto* bp = reinterpret_cast<uint32_t*>(thread_scratch(0, size_t(kNr) * kKp));
  auto* xb = reinterpret_cast<uint32_t*>(thread_scratch(1, size_t(blocks * m) * kXStride));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t pc = b * kKc;
    convert_rows(x, ldx, int(m), pc, int(std::min<int64_t>(kKc, w.k - pc)),
                 xb + size_t(b * m) * kXStride);
  }
  for (int64_t jc = n0; jc < n1; jc += kNr) {
    const int nr = int(std::min<int64_t>(kNr, n1 - jc));
    if (jc + kNr < n1)  // the next panel, over its whole depth, while this one computes
      prefetch_panel(w, jc + kNr, int(std::min<int64_t>(kNr, n1 - jc - kNr)), 0, int(w.k));
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t pc = b * kKc;
      const int kc = int(std::min<int64_t>(kKc, w.k - pc));
      pack_panel<NV>(w, jc, nr, pc, kc, bp);
      panel_times_rows<MR, NV>(int(m), xb + size_t(b * m) * kXStride, bp, (kc + 1) / 2, y + jc, ldy,
                               nr, pc > 0);
    }
  }
}

}  // namespace dot
}  // namespace

void linear_bf16dot_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                         int64_t ldy, int64_t n0, int64_t n1) {
  if (m * w.k * 2 <= dot::kXWholeBytes)
    dot::dot_rows_panels_first<dot::kMr, dot::kNv>(x, m, ldx, w, y, ldy, n0, n1);
  else
    dot::dot_rows<dot::kMr, dot::kNv>(x, m, ldx, w, y, ldy, n0, n1);
}

}  // namespace ff::gemm
