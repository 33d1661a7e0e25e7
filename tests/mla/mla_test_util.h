// Test helpers for src/mla: random problems in FlashMLA's test style (permuted block tables,
// unused cache slots and block-table entries poisoned, non-contiguous q) and a float64 reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/core.h"
#include "mla/mla.h"

namespace ff::mla::test {

struct Spec {
  int64_t b = 1, s_q = 1, h_q = 16, h_kv = 1, d = 576, dv = 512;
  std::vector<int32_t> lens;  // dense: cache_seqlens; sparse: topk_length (when use_topk_length)
  bool causal = false;
  DType dtype = DType::BF16;  // q (and cache unless fp8)
  bool fp8 = false;
  // Sparse: topk indices per query token into a pool of sparse_pool tokens.
  int64_t topk = 0, sparse_pool = 0;
  bool use_topk_length = false, sink = false;
  DType out_dtype = DType::F32;
  int num_threads = 0;
  uint64_t seed = 1;

  std::string name() const {
    return fmt::format("b{}_sq{}_hq{}_hkv{}_d{}_dv{}_{}{}{}{}{}_t{}", b, s_q, h_q, h_kv, d, dv,
                       fp8 ? "FP8" : dtype_name(dtype), causal ? "_causal" : "",
                       topk ? fmt::format("_sparse{}", topk) : "", use_topk_length ? "_len" : "",
                       sink ? "_sink" : "", num_threads);
  }
};

inline float round_to(DType t, float x) {
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
  if (t == DType::F16) return f16_to_f32(f32_to_f16(x));
  return x;
}

inline void store_as(DType t, void* p, float x) {
  if (t == DType::BF16) {
    const uint16_t h = f32_to_bf16(x);
    std::memcpy(p, &h, 2);
  } else if (t == DType::F16) {
    const uint16_t h = f32_to_f16(x);
    std::memcpy(p, &h, 2);
  } else {
    std::memcpy(p, &x, 4);
  }
}

inline float load_as(DType t, const void* p) {
  uint16_t h;
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::memcpy(&h, p, 2);
  return t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// A generated problem: owns its buffers; the views point into them.
struct Problem {
  Spec spec;
  int64_t num_blocks = 0, row_elems = 0;  // row_elems: d, or 656 bytes for FP8
  std::vector<uint8_t> q_buf, cache_buf;
  std::vector<float> kv;  // [num_blocks * 64][h_kv][d] the values the kernel sees (NaN unused)
  std::vector<float> qv;  // [b][s_q][h_q][d]
  std::vector<int32_t> block_table, seqlens, indices, topk_length;
  std::vector<float> sink;
  int64_t max_blocks = 0;
  TensorView q, kcache, bt, sl, idx, tl, sk;

  float q_at(int64_t bi, int64_t s, int64_t h, int64_t i) const {
    return qv[size_t(((bi * spec.s_q + s) * spec.h_q + h) * spec.d + i)];
  }
  const float* kv_row(int64_t slot, int64_t hk) const {
    return kv.data() + size_t((slot * spec.h_kv + hk) * spec.d);
  }
};

inline Problem make_problem(const Spec& s) {
  Problem p;
  p.spec = s;
  std::mt19937_64 rng(s.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto rnd = [&](float sd) { return std::clamp(normal(rng) * sd, -4.f * sd, 4.f * sd); };
  const bool sparse = s.topk > 0;
  const size_t es = dtype_size(s.dtype);

  // q: stored as [s_q][b][h_q][d + 8] and viewed as [b, s_q, h_q, d] (non-contiguous).
  const int64_t qpad = s.d + 8;
  p.q_buf.assign(size_t(s.s_q * s.b * s.h_q * qpad) * es, 0xff);
  p.qv.resize(size_t(s.b * s.s_q * s.h_q * s.d));
  p.q.data = p.q_buf.data();
  p.q.dtype = s.dtype;
  p.q.ndim = 4;
  p.q.shape = {s.b, s.s_q, s.h_q, s.d, 0, 0};
  p.q.stride = {s.h_q * qpad, s.b * s.h_q * qpad, qpad, 1, 0, 0};
  for (int64_t bi = 0; bi < s.b; ++bi)
    for (int64_t t = 0; t < s.s_q; ++t)
      for (int64_t h = 0; h < s.h_q; ++h)
        for (int64_t i = 0; i < s.d; ++i) {
          const float x = round_to(s.dtype, rnd(1.f));
          p.qv[size_t(((bi * s.s_q + t) * s.h_q + h) * s.d + i)] = x;
        }
  for (int64_t bi = 0; bi < s.b; ++bi)
    for (int64_t t = 0; t < s.s_q; ++t)
      for (int64_t h = 0; h < s.h_q; ++h)
        for (int64_t i = 0; i < s.d; ++i) {
          const int64_t off = bi * p.q.stride[0] + t * p.q.stride[1] + h * p.q.stride[2] + i;
          store_as(s.dtype, p.q_buf.data() + size_t(off) * es,
                   p.qv[size_t(((bi * s.s_q + t) * s.h_q + h) * s.d + i)]);
        }

  // Pages: dense sequences get randomly permuted physical blocks; sparse uses a pool.
  std::vector<int64_t> blocks_of(size_t(s.b), 0);
  int64_t used_blocks = 0;
  if (!sparse) {
    for (int64_t bi = 0; bi < s.b; ++bi) {
      blocks_of[size_t(bi)] = (s.lens[size_t(bi)] + 63) / 64;
      used_blocks += blocks_of[size_t(bi)];
    }
  } else {
    used_blocks = (s.sparse_pool + 63) / 64;
  }
  p.num_blocks = used_blocks + 2;  // two never-used blocks
  p.row_elems = s.fp8 ? kFp8TokenBytes : s.d;
  const int64_t slots = p.num_blocks * 64;
  p.kv.assign(size_t(slots * s.h_kv * s.d), std::numeric_limits<float>::quiet_NaN());
  std::vector<int64_t> perm(size_t(p.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);

  std::vector<char> valid(size_t(slots), 0);
  p.max_blocks = 1;
  if (!sparse) {
    for (int64_t bi = 0; bi < s.b; ++bi)
      p.max_blocks = std::max(p.max_blocks, blocks_of[size_t(bi)] + 1);
    p.block_table.assign(size_t(s.b * p.max_blocks), 2147480000);  // poison unused entries
    int64_t next = 0;
    for (int64_t bi = 0; bi < s.b; ++bi) {
      for (int64_t j = 0; j < blocks_of[size_t(bi)]; ++j)
        p.block_table[size_t(bi * p.max_blocks + j)] = int32_t(perm[size_t(next++)]);
      for (int64_t t = 0; t < s.lens[size_t(bi)]; ++t)
        valid[size_t(p.block_table[size_t(bi * p.max_blocks + t / 64)] * 64 + t % 64)] = 1;
    }
    p.seqlens = s.lens;
  } else {
    // Indices: distinct pool tokens (physical slots of the first pool blocks), some -1.
    p.indices.assign(size_t(s.b * s.s_q * s.topk), -1);
    std::vector<int32_t> pool(size_t(s.sparse_pool));
    for (int64_t i = 0; i < s.sparse_pool; ++i)
      pool[size_t(i)] = int32_t(perm[size_t(i / 64)] * 64 + i % 64);
    for (int64_t bi = 0; bi < s.b; ++bi)
      for (int64_t t = 0; t < s.s_q; ++t) {
        std::shuffle(pool.begin(), pool.end(), rng);
        const int64_t n = s.use_topk_length ? s.lens[size_t(bi)] : s.topk;
        for (int64_t k = 0; k < s.topk; ++k) {
          int32_t x = k < int64_t(pool.size()) ? pool[size_t(k)] : -1;
          if (rng() % 7 == 0) x = -1;
          if (k >= n) x = int32_t(rng() % 1000000);  // past topk_length: must be ignored
          p.indices[size_t((bi * s.s_q + t) * s.topk + k)] = x;
          if (k < n && x >= 0) valid[size_t(x)] = 1;
        }
      }
    if (s.use_topk_length) p.topk_length = s.lens;
    p.block_table.assign(1, 0);
    p.seqlens.assign(1, 0);
  }

  // Cache contents: valid slots random, the rest NaN (FP8: 0xff bytes, NaN scales).
  const size_t row_bytes = size_t(p.row_elems) * (s.fp8 ? 1 : es);
  p.cache_buf.assign(size_t(slots * s.h_kv) * row_bytes, 0);
  std::vector<float> row(size_t(s.d));
  for (int64_t slot = 0; slot < slots; ++slot)
    for (int64_t hk = 0; hk < s.h_kv; ++hk) {
      uint8_t* dst = p.cache_buf.data() + size_t(slot * s.h_kv + hk) * row_bytes;
      float* kv = p.kv.data() + size_t((slot * s.h_kv + hk) * s.d);
      if (!valid[size_t(slot)]) {
        if (s.fp8)
          std::memset(dst, 0xff, row_bytes);
        else
          for (int64_t i = 0; i < s.d; ++i)
            store_as(s.dtype, dst + size_t(i) * es, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      for (int64_t i = 0; i < s.d; ++i) row[size_t(i)] = rnd(0.5f);
      if (s.fp8) {
        quantize_kv_fp8(TensorView(row.data(), DType::F32, {1, s.d}),
                        TensorView(dst, DType::U8, {1, kFp8TokenBytes}));
        dequantize_kv_fp8(TensorView(dst, DType::U8, {1, kFp8TokenBytes}),
                          TensorView(kv, DType::F32, {1, s.d}));
      } else {
        for (int64_t i = 0; i < s.d; ++i) {
          kv[i] = round_to(s.dtype, row[size_t(i)]);
          store_as(s.dtype, dst + size_t(i) * es, kv[i]);
        }
      }
    }
  p.kcache = TensorView(p.cache_buf.data(), s.fp8 ? DType::U8 : s.dtype,
                        {p.num_blocks, 64, s.h_kv, p.row_elems});
  p.bt =
      TensorView(p.block_table.data(), DType::I32, {sparse ? 1 : s.b, sparse ? 1 : p.max_blocks});
  p.sl = TensorView(p.seqlens.data(), DType::I32, {sparse ? 1 : s.b});
  if (sparse) {
    p.bt = TensorView();
    p.sl = TensorView();
    p.idx = TensorView(p.indices.data(), DType::I32, {s.b, s.s_q, s.topk});
    if (s.use_topk_length) p.tl = TensorView(p.topk_length.data(), DType::I32, {s.b});
  }
  if (s.sink) {
    p.sink.resize(size_t(s.h_q));
    for (auto& x : p.sink) x = rnd(1.f);
    p.sink[0] = std::numeric_limits<float>::infinity();  // +inf sink: that head's output is 0
    p.sk = TensorView(p.sink.data(), DType::F32, {s.h_q});
  }
  return p;
}

struct Result {
  std::vector<double> out;  // [b][s_q][h_q][dv]
  std::vector<double> lse;  // [b][h_q][s_q]
};

inline double default_scale(const Spec& s) {
  return 1.0 / std::sqrt(double(s.d));
}

// float64 reference: softmax over the visible keys of each (sequence, query token, head).
inline Result reference(const Problem& p) {
  const Spec& s = p.spec;
  Result r;
  r.out.assign(size_t(s.b * s.s_q * s.h_q * s.dv), 0.0);
  r.lse.assign(size_t(s.b * s.h_q * s.s_q), 0.0);
  const double scale = default_scale(s);
  std::vector<const float*> keys;
  std::vector<double> logits;
  for (int64_t bi = 0; bi < s.b; ++bi)
    for (int64_t t = 0; t < s.s_q; ++t)
      for (int64_t h = 0; h < s.h_q; ++h) {
        keys.clear();
        const int64_t hk = h / (s.h_q / s.h_kv);
        if (s.topk == 0) {
          const int64_t len = s.lens[size_t(bi)];
          int64_t lim = s.causal ? len - s.s_q + t + 1 : len;
          for (int64_t k = 0; k < std::min(lim, len); ++k)
            keys.push_back(
                p.kv_row(p.block_table[size_t(bi * p.max_blocks + k / 64)] * 64 + k % 64, hk));
        } else {
          const int64_t n = s.use_topk_length ? s.lens[size_t(bi)] : s.topk;
          for (int64_t k = 0; k < n; ++k) {
            const int32_t x = p.indices[size_t((bi * s.s_q + t) * s.topk + k)];
            if (x >= 0) keys.push_back(p.kv_row(x, 0));
          }
        }
        double* o = r.out.data() + size_t(((bi * s.s_q + t) * s.h_q + h) * s.dv);
        double& lse = r.lse[size_t((bi * s.h_q + h) * s.s_q + t)];
        if (keys.empty()) {
          lse = std::numeric_limits<double>::infinity();
          continue;
        }
        logits.assign(keys.size(), 0.0);
        double mx = -1e300;
        for (size_t k = 0; k < keys.size(); ++k) {
          double acc = 0.0;
          for (int64_t i = 0; i < s.d; ++i) acc += double(p.q_at(bi, t, h, i)) * double(keys[k][i]);
          logits[k] = acc * scale;
          mx = std::max(mx, logits[k]);
        }
        double sum = 0.0;
        for (double& x : logits) sum += (x = std::exp(x - mx));
        for (size_t k = 0; k < keys.size(); ++k)
          for (int64_t j = 0; j < s.dv; ++j) o[j] += logits[k] / sum * double(keys[k][j]);
        lse = mx + std::log(sum);
        if (s.sink) {
          const double f = 1.0 / (1.0 + std::exp(double(p.sink[size_t(h)]) - lse));
          for (int64_t j = 0; j < s.dv; ++j) o[j] *= f;
        }
      }
  return r;
}

// FlashMLA's comparator (tests/kernelkit/compare.py): inf/NaN positions must match; each element
// passes if |err| < abs_tol or |err| / |ref| < rel_tol; and 1 - 2 sum(xy) / sum(x^2 + y^2) <
// cos_tol.
inline void expect_close(const std::vector<double>& ref, const std::vector<float>& got,
                         double abs_tol, double rel_tol, double cos_tol, const std::string& what) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  double xy = 0, xx = 0;
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double x = ref[i], y = got[i];
    if (std::isinf(x) || std::isnan(x) || std::isinf(y) || std::isnan(y)) {
      const bool same = (std::isnan(x) && std::isnan(y)) || x == y;
      if (!same && bad++ < 5) ADD_FAILURE() << what << " [" << i << "]: ref " << x << " got " << y;
      continue;
    }
    const double err = std::fabs(x - y);
    if (!(err < abs_tol || err / std::fabs(x) < rel_tol) && bad++ < 5)
      ADD_FAILURE() << what << " [" << i << "]: ref " << x << " got " << y << " err " << err;
    xy += x * y;
    xx += x * x + y * y;
  }
  if (xx > 0) {
    const double cos_diff = 1.0 - 2.0 * xy / xx;
    EXPECT_LT(cos_diff, cos_tol) << what << ": cosine difference";
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " elements out of tolerance";
}

}  // namespace ff::mla::test
