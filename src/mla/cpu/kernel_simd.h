// Private: the SIMD decode kernel, written once over a vector trait V (AVX2: 8 lanes, 16
// registers; AVX-512: 16 lanes, 32 registers) and included by the *_avx2.cc / *_avx512.cc files.
//
// Tiling. SIMD lanes run over query rows (the s_q * h_q / h_kv rows sharing a KV head), so every
// key element is read once per group of RB * kLanes rows and used as a broadcast operand:
//   scores  S[t][r] = scale * log2(e) * sum_i Q[i][r] * K[t][i]   Q packed as [d][row_pad]
//   output  O[j][r] = alpha[r] * O[j][r] + sum_t P[t][r] * V[t][j]  o_acc is [dv][row_pad]
// The register tile is RB row vectors x (kAcc / RB) tokens (scores) or output columns (PV), with
// RB = 2 while two row vectors remain, else 1. The f32 path below is the whole kernel for F32 /
// F16 caches and for AVX2; the AVX-512 BF16 path (kernel_avx512.cc) swaps in dot-product
// micro-kernels over bf16 pairs and reuses the softmax step.
#pragma once
#include <cstring>
#include <limits>

#include "mla/cpu/kernels.h"

namespace ff::mla::simd {

template <typename V>
inline typename V::vec exp2_vec(typename V::vec x) {
  // 2^x = 2^n * 2^f, n = round(x), |f| <= 0.5; Taylor to degree 6 of e^(f ln 2) (rel. err. ~2e-7).
  // x is clamped to -127, where 2^n's bit pattern is 0, so exp2(-inf) = 0 exactly.
  x = V::max(x, V::set1(-127.f));
  const typename V::vec n = V::round(x);
  const typename V::vec f = V::sub(x, n);
  typename V::vec p = V::set1(1.5403530393381606e-4f);
  p = V::fma(p, f, V::set1(1.3333558146428443e-3f));
  p = V::fma(p, f, V::set1(9.6181291076284772e-3f));
  p = V::fma(p, f, V::set1(5.5504108664821580e-2f));
  p = V::fma(p, f, V::set1(2.4022650695910071e-1f));
  p = V::fma(p, f, V::set1(6.9314718055994531e-1f));
  p = V::fma(p, f, V::set1(1.f));
  return V::mul(p, V::pow2i(n));
}

// Masks the chunk's scores (padding tokens, keys past each row's limit) to -inf, updates m and l,
// writes P = 2^(S - m) over S and the rescale factors of the old output into alpha.
template <typename V>
inline void softmax_step(const RequestArgs& a, const ChunkArgs& c, float* alpha) {
  using vec = typename V::vec;
  PartBuffers& b = *a.buf;
  const int64_t rp = a.row_pad;
  const vec neg_inf = V::set1(-std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rp; r += V::kLanes) {
    float* s = b.scores.data() + r;
    const int32_t* lim = b.limit.data() + r;
    vec mx = neg_inf;
    for (int64_t t = 0; t < c.n_pad; ++t) {
      vec x = V::load(s + t * rp);
      x = t < c.n ? V::mask_past_limit(x, lim, int32_t(c.pos0 + t), neg_inf) : neg_inf;
      V::store(s + t * rp, x);
      mx = V::max(mx, x);
    }
    const vec m_old = V::load(b.m.data() + r);
    const vec m_new = V::max(m_old, mx);
    const vec m_use = V::zero_where_neg_inf(m_new);  // keeps 2^(-inf - m) = 0 for empty rows
    V::store(alpha + r, exp2_vec<V>(V::sub(m_old, m_use)));
    vec sum = V::zero();
    for (int64_t t = 0; t < c.n_pad; ++t) {
      const vec p = exp2_vec<V>(V::sub(V::load(s + t * rp), m_use));
      V::store(s + t * rp, p);
      sum = V::add(sum, p);
    }
    V::store(b.m.data() + r, m_new);
    V::store(b.l.data() + r, V::fma(V::load(b.l.data() + r), V::load(alpha + r), sum));
  }
}

// Scores of RB row vectors x T tokens.
template <typename V, int RB, int T>
inline void qk_tile(const float* q, int64_t rp, const float* const* k, int64_t d, float* s,
                    float scale) {
  using vec = typename V::vec;
  vec acc[RB][T];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[i][t] = V::zero();
  for (int64_t x = 0; x < d; ++x) {
    vec qv[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) qv[i] = V::load(q + x * rp + i * V::kLanes);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const vec kb = V::set1(k[t][x]);
#pragma GCC unroll 16
      for (int i = 0; i < RB; ++i) acc[i][t] = V::fma(qv[i], kb, acc[i][t]);
    }
  }
  const vec sc = V::set1(scale);
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) V::store(s + t * rp + i * V::kLanes, V::mul(acc[i][t], sc));
}

// Output columns [j, j + J) of RB row vectors, over all n_pad tokens.
template <typename V, int RB, int J>
inline void pv_tile(const float* p, int64_t rp, const float* const* v, int64_t n, int64_t j,
                    float* o, const float* alpha) {
  using vec = typename V::vec;
  vec acc[J][RB];
  vec al[RB];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i) al[i] = V::load(alpha + i * V::kLanes);
#pragma GCC unroll 16
  for (int c = 0; c < J; ++c)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i)
      acc[c][i] = V::mul(V::load(o + (j + c) * rp + i * V::kLanes), al[i]);
  for (int64_t t = 0; t < n; ++t) {
    vec pv[RB];
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) pv[i] = V::load(p + t * rp + i * V::kLanes);
    const float* vr = v[t] + j;
#pragma GCC unroll 16
    for (int c = 0; c < J; ++c) {
      const vec vb = V::set1(vr[c]);
#pragma GCC unroll 16
      for (int i = 0; i < RB; ++i) acc[c][i] = V::fma(pv[i], vb, acc[c][i]);
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < J; ++c)
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) V::store(o + (j + c) * rp + i * V::kLanes, acc[c][i]);
}

template <typename V, int RB>
inline void pv_rows(const RequestArgs& a, const ChunkArgs& c, int64_t r, const float* alpha) {
  // With one row vector, 8 output columns per pass measured ~5% faster than 16 (h_q = 16).
  constexpr int J = RB == 1 ? 8 : V::kAcc / RB;
  PartBuffers& b = *a.buf;
  const float* const* v = reinterpret_cast<const float* const*>(c.rows);
  const float* p = b.scores.data() + r;
  float* o = b.o_acc.data() + r;
  int64_t j = 0;
  for (; j + J <= a.dv; j += J) pv_tile<V, RB, J>(p, a.row_pad, v, c.n, j, o, alpha + r);
  for (; j < a.dv; ++j) pv_tile<V, RB, 1>(p, a.row_pad, v, c.n, j, o, alpha + r);
}

template <typename V>
void begin_f32(const RequestArgs& a) {
  PartBuffers& b = *a.buf;
  float* qp = b.q_packed.data();
  for (int64_t x = 0; x < a.d; ++x)
    for (int64_t r = 0; r < a.row_pad; ++r)
      qp[x * a.row_pad + r] = r < a.rows ? b.q_rows[size_t(r * a.d + x)] : 0.f;
}

template <typename V>
void chunk_f32(const RequestArgs& a, const ChunkArgs& c) {
  PartBuffers& b = *a.buf;
  const int64_t rp = a.row_pad;
  const float* const* k = reinterpret_cast<const float* const*>(c.rows);
  const int64_t nvec = rp / V::kLanes;
  for (int64_t rv = 0; rv < nvec;) {
    const int64_t r = rv * V::kLanes;
    if (rv + 2 <= nvec) {
      constexpr int T = V::kAcc / 2;
      for (int64_t t = 0; t < c.n_pad; t += T)
        qk_tile<V, 2, T>(b.q_packed.data() + r, rp, k + t, a.d, b.scores.data() + t * rp + r,
                         a.scale_log2);
      rv += 2;
    } else {
      constexpr int T = V::kAcc;
      for (int64_t t = 0; t < c.n_pad; t += T)
        qk_tile<V, 1, T>(b.q_packed.data() + r, rp, k + t, a.d, b.scores.data() + t * rp + r,
                         a.scale_log2);
      rv += 1;
    }
  }
  float* alpha = b.alpha.data();
  softmax_step<V>(a, c, alpha);
  for (int64_t rv = 0; rv < nvec;) {
    if (rv + 2 <= nvec) {
      pv_rows<V, 2>(a, c, rv * V::kLanes, alpha);
      rv += 2;
    } else {
      pv_rows<V, 1>(a, c, rv * V::kLanes, alpha);
      rv += 1;
    }
  }
}

}  // namespace ff::mla::simd
