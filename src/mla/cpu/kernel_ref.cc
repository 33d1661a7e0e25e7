// Reference backend (FF_ISA=scalar): one query row at a time, f32 dot products, the chunk's
// scores first so the running output is rescaled once per chunk. Plain and slow on purpose.
#include <cmath>
#include <limits>

#include "mla/cpu/kernels.h"

namespace ff::mla {
namespace {

void ref_begin(const RequestArgs& a) {
  PartBuffers& b = *a.buf;
  for (int64_t i = 0; i < a.rows * a.d; ++i) b.q_packed[size_t(i)] = b.q_rows[size_t(i)];
}

void ref_chunk(const RequestArgs& a, const ChunkArgs& c) {
  PartBuffers& b = *a.buf;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float* s = b.scores.data();
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* q = b.q_packed.data() + r * a.d;
    float mx = kNegInf;
    for (int64_t t = 0; t < c.n; ++t) {
      if (c.pos0 + t >= b.limit[size_t(r)]) {
        s[t] = kNegInf;
        continue;
      }
      const float* k = static_cast<const float*>(c.rows[t]);
      float dot = 0.f;
      for (int64_t i = 0; i < a.d; ++i) dot += q[i] * k[i];
      s[t] = dot * a.scale_log2;
      mx = std::max(mx, s[t]);
    }
    if (mx == kNegInf) continue;  // nothing visible in this chunk
    float& m = b.m[size_t(r)];
    const float m_new = std::max(m, mx);
    const float alpha = std::exp2(m - m_new);  // 0 when m was -inf
    m = m_new;
    float* o = b.o_acc.data() + r;
    float l = b.l[size_t(r)] * alpha;
    for (int64_t j = 0; j < a.dv; ++j) o[j * a.row_pad] *= alpha;
    for (int64_t t = 0; t < c.n; ++t) {
      if (s[t] == kNegInf) continue;
      const float p = std::exp2(s[t] - m_new);
      l += p;
      const float* v = static_cast<const float*>(c.rows[t]);
      for (int64_t j = 0; j < a.dv; ++j) o[j * a.row_pad] += p * v[j];
    }
    b.l[size_t(r)] = l;
  }
}

}  // namespace

Kernel kernel_ref() {
  Kernel k;
  k.kv_dtype = DType::F32;
  k.begin = ref_begin;
  k.chunk = ref_chunk;
  return k;
}

}  // namespace ff::mla
