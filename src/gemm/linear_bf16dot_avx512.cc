// gemm::linear for BF16 weights on vdpbf16ps (AVX512-BF16): Y[0:m, n0:n1] = bf16(X) W^T, fp32
// accumulation. X is rounded to bf16 (round to nearest even, _mm512_cvtne2ps_pbh); each
// instruction adds two exact bf16 products per lane into fp32, with the instruction's own
// rounding (denormal inputs and results flushed to zero). Where vdpbf16ps runs at full rate
// (AMD Zen 4 / Zen 5) it does twice the multiply-adds of an fp32 FMA per cycle; the choice of
// kernel is linear.cc's (resolve_bf16_gemm_kernel).
//
// BLIS-style blocking, for one thread's columns [n0, n1):
//   columns in blocks of kNc, k in blocks of kKc (an even count: k pairs), rows of X in blocks
//   of kMc. Per (column block, k block) W is packed once into panels of 32 columns: panel p
//   holds, per k pair q, two 64-byte vectors (columns 0..15, 16..31), lane c = the dword
//   {W[col + c, 2q], W[col + c, 2q + 1]} (the pair's first k in the low half, as vdpbf16ps
//   pairs them); columns past the matrix and the odd k's missing partner are zero. A column
//   block's panels (kNc x kKc bf16, 128 KiB) stay in L2, one panel (16 KiB) in L1.
//   Per (.., row block) the rows of X are converted to bf16 into a compact buffer: row r's
//   dword q is the same pair of X (its stride padded off a multiple of 4 KiB, so the rows of a
//   tile do not share L1 sets).
//   Innermost, a tile of MR <= kMr rows x 32 columns: 2 MR accumulators; per k pair two panel
//   loads and, per row, one broadcast dword of X feeding two vdpbf16ps.
// A column's sum is taken over k blocks in order, each block's part in fp32 registers and then
// added into Y, and the row tiles depend only on m: the result does not depend on n0, n1 or
// the thread that computed it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "core/core.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

constexpr int kNr = 32;   // columns of a panel: two vectors
constexpr int kKc = 256;  // k per block (128 pairs)
constexpr int kNc = 256;  // columns per block
constexpr int kMc = 144;  // rows of X per block
constexpr int kMr = 12;   // rows per tile: 24 accumulators + 2 panel vectors + a broadcast
constexpr int kKp = kKc / 2;
constexpr int kXStride = kKp + 16;  // dwords between converted rows of X

// Per-thread scratch (kernels run on the pool's threads): grows on first use, then reused.
void* scratch(int slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[2];
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    std::free(b.data);
    b.data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    FF_CHECK(b.data != nullptr, "linear: cannot allocate {} bytes of scratch", bytes);
    b.size = bytes;
  }
  return b.data;
}

// r[i] (16 dwords each) -> r[j] = {r[0][j], ..., r[15][j]}: pairs of rows, 4 x 4 blocks in each
// 128-bit lane, then the lanes.
void transpose16(__m512i (&r)[16]) {
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

// Panel of W[col : col + nr, pc : pc + kc] (nr <= 32) into bp (kp = ceil(kc / 2) pairs x 32
// dwords), 16 columns x 16 pairs per transpose.
void pack_panel(const Weight& w, int64_t col, int nr, int64_t pc, int kc, uint32_t* bp) {
  const auto* base = static_cast<const uint16_t*>(w.data);
  const int kp = (kc + 1) / 2;
  for (int half = 0; half < 2; ++half) {
    for (int q0 = 0; q0 < kp; q0 += 16) {
      const int elems = std::min(32, kc - 2 * q0);  // bf16 of this step in a row
      const __mmask32 mask = elems == 32 ? ~__mmask32(0) : __mmask32((1u << elems) - 1u);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const int c = half * 16 + i;
        r[i] = c < nr ? _mm512_maskz_loadu_epi16(mask, base + (col + c) * w.ld + pc + 2 * q0)
                      : _mm512_setzero_si512();
      }
      transpose16(r);
      const int pairs = std::min(16, kp - q0);
      for (int j = 0; j < pairs; ++j)
        _mm512_store_si512(bp + (size_t(q0 + j) * 2 + half) * 16, r[j]);
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

// Y[0:MR, 0:nr] (+)= X[0:MR] . panel over kp pairs; adds into Y when `accumulate`.
template <int MR>
void dot_tile(const uint32_t* xb, const uint32_t* bp, int kp, float* y, int64_t ldy, int nr,
              bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int q = 0; q < kp; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(bp + q * 32);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(bp + q * 32 + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(xb[r * kXStride + q]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], b0, a);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], b1, a);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* yr = y + r * ldy;
    if (nr == kNr) {
      if (accumulate) {
        acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(yr));
        acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(yr + 16));
      }
      _mm512_storeu_ps(yr, acc[r][0]);
      _mm512_storeu_ps(yr + 16, acc[r][1]);
    } else {
      const int t0 = std::min(nr, 16), t1 = nr - t0;
      const __mmask16 m0 = __mmask16((1u << t0) - 1u), m1 = __mmask16((1u << t1) - 1u);
      if (accumulate) acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, yr));
      _mm512_mask_storeu_ps(yr, m0, acc[r][0]);
      if (t1 > 0) {
        if (accumulate) acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, yr + 16));
        _mm512_mask_storeu_ps(yr + 16, m1, acc[r][1]);
      }
    }
  }
}

template <int MR>
void dot_tail(int rows, const uint32_t* xb, const uint32_t* bp, int kp, float* y, int64_t ldy,
              int nr, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR)
      dot_tile<MR>(xb, bp, kp, y, ldy, nr, accumulate);
    else
      dot_tail<MR - 1>(rows, xb, bp, kp, y, ldy, nr, accumulate);
  }
}

}  // namespace

void linear_bf16dot_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                         int64_t ldy, int64_t n0, int64_t n1) {
  static_assert(kNc % kNr == 0 && kKc % 32 == 0);
  auto* bp = static_cast<uint32_t*>(scratch(0, size_t(kNc) * kKp * 4));
  auto* xb = static_cast<uint32_t*>(scratch(1, size_t(kMc) * kXStride * 4));
  for (int64_t jc = n0; jc < n1; jc += kNc) {
    const int nc = int(std::min<int64_t>(kNc, n1 - jc));
    for (int64_t pc = 0; pc < w.k; pc += kKc) {
      const int kc = int(std::min<int64_t>(kKc, w.k - pc));
      const int kp = (kc + 1) / 2;
      for (int jr = 0; jr < nc; jr += kNr)
        pack_panel(w, jc + jr, std::min(kNr, nc - jr), pc, kc, bp + size_t(jr) * kKp);
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int mc = int(std::min<int64_t>(kMc, m - ic));
        convert_rows(x + ic * ldx, ldx, mc, pc, kc, xb);
        // Rows split evenly over the fewest tiles (m = 24: 12 + 12, m = 17: 9 + 8): a short
        // tile has too few accumulators to hide the latency.
        const int tiles = (mc + kMr - 1) / kMr;
        for (int jr = 0; jr < nc; jr += kNr) {
          const uint32_t* panel = bp + size_t(jr) * kKp;
          const int nr = std::min(kNr, nc - jr);
          float* yb = y + ic * ldy + jc + jr;
          for (int t = 0, r = 0; t < tiles; ++t) {
            const int rows = mc / tiles + (t < mc % tiles ? 1 : 0);
            dot_tail<kMr>(rows, xb + size_t(r) * kXStride, panel, kp, yb + r * ldy, ldy, nr,
                          pc > 0);
            r += rows;
          }
        }
      }
    }
  }
}

}  // namespace ff::gemm
