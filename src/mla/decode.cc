// mla_decode_with_kvcache: the per-part driver and the log-sum-exp combine.
//
// Every input is checked before a thread starts (validate.cc), so a bad call throws ff::Error
// and never reads out of bounds. Each part then walks its work items: it gathers the request's
// query rows as f32, hands the backend its key rows chunk by chunk (converted to the backend's
// element type only when the cache holds another one), and writes the normalised result either
// straight to out/lse or, for a request split across parts, to its split slot for the combine step.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "mla/cpu/kernels.h"
#include "mla/problem.h"
#include "mla/schedule.h"

namespace ff::mla {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float load_float(const void* p, DType t) {
  switch (t) {
    case DType::F32:
      return *static_cast<const float*>(p);
    case DType::BF16:
      return bf16_to_f32(*static_cast<const uint16_t*>(p));
    default:
      return f16_to_f32(*static_cast<const uint16_t*>(p));
  }
}

void store_float(void* p, DType t, float v) {
  switch (t) {
    case DType::F32:
      *static_cast<float*>(p) = v;
      break;
    case DType::BF16:
      *static_cast<uint16_t*>(p) = f32_to_bf16(v);
      break;
    default:
      *static_cast<uint16_t*>(p) = f32_to_f16(v);
      break;
  }
}

const uint8_t* cache_row(const Problem& p, int64_t block, int64_t slot, int64_t head) {
  const int64_t off =
      block * p.kcache.stride[0] + slot * p.kcache.stride[1] + head * p.kcache.stride[2];
  return static_cast<const uint8_t*>(p.kcache.data) +
         off * int64_t(p.fp8 ? 1 : dtype_size(p.kcache.dtype));
}

// One cache row to the kernel's element type (generic path; the SIMD backends convert FP8 fast).
void convert_row(const Problem& p, const Kernel& k, const uint8_t* src, void* dst) {
  if (p.fp8 && k.fp8_row) return k.fp8_row(src, dst);
  float* f = k.kv_dtype == DType::F32 ? static_cast<float*>(dst) : nullptr;
  uint16_t* h = f ? nullptr : static_cast<uint16_t*>(dst);
  auto put = [&](int64_t i, float v) {
    if (f)
      f[i] = v;
    else
      h[i] = f32_to_bf16(v);
  };
  if (p.fp8) {
    const float* table = e4m3_table();
    float scales[4];
    std::memcpy(scales, src + kFp8NopeDim, sizeof scales);
    for (int64_t i = 0; i < kFp8NopeDim; ++i) put(i, table[src[i]] * scales[i / kFp8TileSize]);
    const uint8_t* rope = src + kFp8NopeDim + 4 * sizeof(float);
    for (int64_t i = 0; i < kFp8RopeDim; ++i) {
      uint16_t v;
      std::memcpy(&v, rope + 2 * i, 2);
      put(kFp8NopeDim + i, bf16_to_f32(v));
    }
    return;
  }
  const DType t = p.kcache.dtype;
  if (f && t == DType::BF16)
    return convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(src), f, size_t(p.d));
  if (f && t == DType::F16)
    return convert_f16_to_f32(reinterpret_cast<const uint16_t*>(src), f, size_t(p.d));
  const size_t es = dtype_size(t);
  for (int64_t i = 0; i < p.d; ++i) put(i, load_float(src + size_t(i) * es, t));
}

// The rows' result, attention sink applied, into out / lse.
void write_result(const Problem& p, int64_t request, const float* out_rows, const float* lse_rows) {
  const int64_t h_per = p.h_q / p.h_kv;
  for (int64_t r = 0; r < p.rows; ++r) {
    int64_t bi, s_pos, head;
    if (p.sparse) {
      bi = request / p.s_q, s_pos = request % p.s_q, head = r;
    } else {
      bi = request / p.h_kv, s_pos = r / h_per, head = (request % p.h_kv) * h_per + r % h_per;
    }
    const float lse = lse_rows[r];
    float factor = 1.f;
    if (p.sink.ndim) {
      // exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)); lse = +inf gives 0 anyway.
      const float sink = *p.sink.at<float>({head});
      factor = lse == kInf ? 0.f : 1.f / (1.f + std::exp(sink - lse));
    }
    const float* o = out_rows + r * p.dv;
    const size_t es = dtype_size(p.out.dtype);
    uint8_t* dst = static_cast<uint8_t*>(p.out.data);
    const int64_t base = bi * p.out.stride[0] + s_pos * p.out.stride[1] + head * p.out.stride[2];
    for (int64_t j = 0; j < p.dv; ++j)
      store_float(dst + size_t(base + j * p.out.stride[3]) * es, p.out.dtype, o[j] * factor);
    *p.lse.at<float>({bi, head, s_pos}) = lse;
  }
}

// Runs one work item of a part on kernel k.
void run_item(const Problem& p, const Kernel& k, const MlaSchedule::Impl& s, PartBuffers& b,
              const WorkItem& it, float* o_accum, float* lse_accum) {
  const int64_t d = p.d, dv = p.dv, rows = p.rows, rp = round_up(rows, k.row_align);
  const int64_t h_per = p.h_q / p.h_kv;
  int64_t bi, hk = 0, s_pos = 0;
  if (p.sparse)
    bi = it.request / p.s_q, s_pos = it.request % p.s_q;
  else
    bi = it.request / p.h_kv, hk = it.request % p.h_kv;
  const int64_t len = s.lengths[size_t(bi)];

  // Query rows as f32, and the keys each row may see.
  const size_t qes = dtype_size(p.q.dtype);
  int32_t max_limit = 0;
  for (int64_t r = 0; r < rp; ++r) {
    int32_t lim = 0;
    if (r < rows) {
      const int64_t sp = p.sparse ? s_pos : r / h_per;
      const int64_t head = p.sparse ? r : hk * h_per + r % h_per;
      const uint8_t* src =
          reinterpret_cast<const uint8_t*>(p.q.data) +
          size_t(bi * p.q.stride[0] + sp * p.q.stride[1] + head * p.q.stride[2]) * qes;
      float* dst = b.q_rows.data() + r * d;
      if (p.q.dtype == DType::F32)
        std::memcpy(dst, src, size_t(d) * 4);
      else if (p.q.dtype == DType::BF16)
        convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, size_t(d));
      else
        convert_f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, size_t(d));
      lim = p.sparse ? INT32_MAX : int32_t(p.causal ? len - p.s_q + sp + 1 : len);
      if (lim < 0) lim = 0;
    }
    b.limit[size_t(r)] = lim;
    max_limit = std::max(max_limit, lim);
    b.m[size_t(r)] = -kInf;
    b.l[size_t(r)] = 0.f;
  }
  std::fill(b.o_acc.begin(), b.o_acc.begin() + dv * rp, 0.f);
  RequestArgs ra{rows, rp, d, dv, p.scale_log2, &b};
  k.begin(ra);

  const bool direct = !p.fp8 && p.kcache.dtype == k.kv_dtype;
  const size_t kes = dtype_size(k.kv_dtype);
  for (int64_t blk = it.block0; blk < it.block1; ++blk) {
    const int64_t t0 = blk * kBlockSize;
    int64_t n = 0;
    auto add = [&](const uint8_t* row) {
      if (direct) {
        b.row_ptrs[size_t(n)] = row;
      } else {
        void* dst = reinterpret_cast<uint8_t*>(b.kv_rows.data()) + size_t(n * d) * kes;
        convert_row(p, k, row, dst);
        b.row_ptrs[size_t(n)] = dst;
      }
      ++n;
    };
    if (p.sparse) {
      const int64_t t1 = std::min<int64_t>(t0 + kBlockSize, len);
      for (int64_t i = t0; i < t1; ++i) {
        const int32_t x = *p.indices.at<int32_t>({bi, s_pos, i});
        if (x >= 0) add(cache_row(p, x / kBlockSize, x % kBlockSize, 0));
      }
    } else {
      const int64_t t1 = std::min<int64_t>({t0 + kBlockSize, len, max_limit});
      if (t1 <= t0) continue;
      const int32_t page = *p.block_table.at<int32_t>({bi, blk});
      for (int64_t t = t0; t < t1; ++t) add(cache_row(p, page, t - t0, hk));
    }
    if (n == 0) continue;
    const int64_t n_pad = round_up(n, kTokenPad);
    for (int64_t t = n; t < n_pad; ++t) b.row_ptrs[size_t(t)] = b.zero_row.data();
    ChunkArgs ca{b.row_ptrs.data(), n, n_pad, p.sparse ? 0 : t0};
    k.chunk(ra, ca);
  }

  // Normalise: out = o / l, lse = ln 2 * (m + log2 l); an empty row gives 0 and +inf.
  float* out_rows = it.split >= 0 ? o_accum + it.split * rows * dv : b.out_rows.data();
  float* lse_rows = it.split >= 0 ? lse_accum + it.split * rows : b.lse_rows.data();
  for (int64_t r = 0; r < rows; ++r) {
    const float l = b.l[size_t(r)];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int64_t j = 0; j < dv; ++j) out_rows[r * dv + j] = b.o_acc[size_t(j * rp + r)] * inv;
    lse_rows[r] = l > 0.f ? float(M_LN2) * (b.m[size_t(r)] + std::log2(l)) : kInf;
  }
  if (it.split < 0) write_result(p, it.request, out_rows, lse_rows);
}

// Merges a split request's partial results by log-sum-exp into `out_rows` / `lse_rows`.
void combine(const Problem& p, const MlaSchedule::Impl& s, int64_t request, float* out_rows,
             float* lse_rows) {
  const int64_t first = [&] {
    // The request's slots are consecutive; find the first from num_splits (slots are assigned in
    // request order to split requests only).
    int64_t slot = 0;
    for (int64_t r = 0; r < request; ++r) {
      const int64_t n = s.num_splits[size_t(r) + 1] - s.num_splits[size_t(r)];
      if (n > 1) slot += n;
    }
    return slot;
  }();
  const int64_t n = s.num_splits[size_t(request) + 1] - s.num_splits[size_t(request)];
  const int64_t rows = p.rows, dv = p.dv;
  for (int64_t r = 0; r < rows; ++r) {
    float mx = -kInf;
    for (int64_t i = 0; i < n; ++i) {
      const float x = s.lse_accum[size_t((first + i) * rows + r)];
      if (x != kInf) mx = std::max(mx, x);
    }
    float* o = out_rows + r * dv;
    std::fill(o, o + dv, 0.f);
    if (mx == -kInf) {
      lse_rows[r] = kInf;
      continue;
    }
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const float x = s.lse_accum[size_t((first + i) * rows + r)];
      if (x != kInf) sum += std::exp(x - mx);
    }
    const float lse = mx + std::log(sum);
    lse_rows[r] = lse;
    for (int64_t i = 0; i < n; ++i) {
      const float x = s.lse_accum[size_t((first + i) * rows + r)];
      if (x == kInf) continue;
      const float w = std::exp(x - lse);
      const float* src = s.o_accum.data() + size_t(((first + i) * rows + r) * dv);
      for (int64_t j = 0; j < dv; ++j) o[j] += w * src[j];
    }
  }
}

Kernel kernel_of(KernelId id) {
  const auto& cpu = cpu_features();
  switch (id) {
    case KernelId::Ref:
      return kernel_ref();
    case KernelId::Avx2:
      FF_CHECK(cpu.avx2_fma, "mla_decode: the AVX2 backend needs AVX2 + FMA, which this CPU lacks");
      return kernel_avx2();
    case KernelId::Avx512F32:
      FF_CHECK(cpu.avx512, "mla_decode: the AVX-512 backend needs AVX-512, which this CPU lacks");
      return kernel_avx512_f32();
    case KernelId::Avx512Bf16:
      FF_CHECK(cpu.avx512 && cpu.avx512_bf16,
               "mla_decode: the AVX-512 BF16 kernel needs AVX512-BF16, which this CPU lacks");
      return kernel_avx512_bf16();
  }
  return kernel_ref();
}

KernelId bf16_kernel() {
  static const KernelId id = resolve_bf16_kernel(cpu_features(), std::getenv("FF_MLA_BF16_KERNEL"));
  return id;
}

}  // namespace

KernelId resolve_bf16_kernel(const CpuFeatures& cpu, const char* env) {
  if (env && *env) {
    const std::string v(env);
    FF_CHECK(v == "dot" || v == "fma", "FF_MLA_BF16_KERNEL={}: expected dot or fma", v);
    FF_CHECK(v == "fma" || cpu.avx512_bf16, "FF_MLA_BF16_KERNEL=dot: this CPU lacks AVX512-BF16");
    return v == "dot" ? KernelId::Avx512Bf16 : KernelId::Avx512F32;
  }
  // Zen 4 and Zen 5 (Zen 3, also family 0x19, lacks AVX512-BF16). Intel parts measured so far run
  // vdpbf16ps at half rate; there and on unknown CPUs the FMA kernel, which rounds nothing to bf16.
  const bool full_rate_dot = cpu.vendor == CpuVendor::Amd && cpu.family >= 0x19;
  return cpu.avx512_bf16 && full_rate_dot ? KernelId::Avx512Bf16 : KernelId::Avx512F32;
}

const char* kernel_name(KernelId id) {
  switch (id) {
    case KernelId::Ref:
      return "ref";
    case KernelId::Avx2:
      return "avx2";
    case KernelId::Avx512F32:
      return "avx512-fma";
    case KernelId::Avx512Bf16:
      return "avx512-dpbf16";
  }
  return "?";
}

KernelId default_kernel(Isa isa, DType q_dtype, int64_t d, int64_t dv, int64_t rows) {
  switch (isa) {
    case Isa::Scalar:
      return KernelId::Ref;
    case Isa::Avx2:
      return KernelId::Avx2;
    case Isa::Avx512:
      if (rows <= 8 && cpu_features().avx2_fma) return KernelId::Avx2;
      if (cpu_features().avx512_bf16 && q_dtype == DType::BF16 && d % 2 == 0 && dv % 2 == 0)
        return bf16_kernel();
      return KernelId::Avx512F32;
  }
  return KernelId::Ref;
}

void mla_decode_with_isa(Isa isa, const TensorView& q, const TensorView& kcache,
                         const TensorView& block_table, const TensorView& cache_seqlens,
                         int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                         bool causal, const TensorView& out, const TensorView& lse,
                         const MlaDecodeOptions& opt) {
  if (isa == Isa::Avx2)
    FF_CHECK(cpu_features().avx2_fma,
             "mla_decode: the AVX2 backend needs AVX2 + FMA, which this CPU lacks");
  if (isa == Isa::Avx512)
    FF_CHECK(cpu_features().avx512,
             "mla_decode: the AVX-512 backend needs AVX-512, which this CPU lacks");
  // The FP8 cache keeps the 16-lane kernels (they have the fast FP8 row conversion).
  const int64_t rows =
      opt.indices.ndim == 0 && kcache.dtype != DType::U8 && kcache.dtype != DType::F8_E4M3
          ? schedule.impl().rows
          : kRowPad;
  mla_decode_with_kernel(
      default_kernel(isa, q.dtype, q.ndim == 4 ? q.shape[3] : 0, head_dim_v, rows), q, kcache,
      block_table, cache_seqlens, head_dim_v, schedule, softmax_scale, causal, out, lse, opt);
}

void mla_decode_with_kernel(KernelId id, const TensorView& q, const TensorView& kcache,
                            const TensorView& block_table, const TensorView& cache_seqlens,
                            int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                            bool causal, const TensorView& out, const TensorView& lse,
                            const MlaDecodeOptions& opt) {
  const Problem p = validate(q, kcache, block_table, cache_seqlens, head_dim_v, schedule,
                             softmax_scale, causal, out, lse, opt);
  Kernel k = kernel_of(id);
  if (k.kv_dtype == DType::BF16)
    FF_CHECK(p.q.dtype == DType::BF16 && p.d % 2 == 0 && p.dv % 2 == 0,
             "mla_decode: the dpbf16 kernel needs BF16 q and even d, dv");
  // The pool tasks capture one pointer, which std::function stores without allocating.
  struct Job {
    const Problem& p;
    const Kernel& k;
    MlaSchedule::Impl& s;
    ThreadPool& pool;
    int combiners;
  };
  ThreadPool& pool = ThreadPool::global();
  auto& sch = schedule.impl();
  const Job job{p, k, sch, pool, std::min(pool.size(), int(sch.parts.size()))};
  pool.run([j = &job](int t) {
    auto& s = j->s;
    const int P = int(s.parts.size());
    for (int part = t; part < P; part += j->pool.size())
      for (const WorkItem& it : s.parts[size_t(part)])
        run_item(j->p, j->k, s, s.buffers[size_t(part)], it, s.o_accum.data(), s.lse_accum.data());
  });
  // Requests split across parts: merge, each combining thread using one part's buffers.
  pool.run([j = &job](int t) {
    auto& s = j->s;
    if (t >= j->combiners) return;
    PartBuffers& b = s.buffers[size_t(t)];
    for (int64_t r = t; r < s.num_requests; r += j->combiners) {
      if (s.num_splits[size_t(r) + 1] - s.num_splits[size_t(r)] <= 1) continue;
      combine(j->p, s, r, b.out_rows.data(), b.lse_rows.data());
      write_result(j->p, r, b.out_rows.data(), b.lse_rows.data());
    }
  });
}

void mla_decode_with_kvcache(const TensorView& q, const TensorView& kcache,
                             const TensorView& block_table, const TensorView& cache_seqlens,
                             int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                             bool causal, const TensorView& out, const TensorView& lse,
                             const MlaDecodeOptions& opt) {
  mla_decode_with_isa(active_isa(), q, kcache, block_table, cache_seqlens, head_dim_v, schedule,
                      softmax_scale, causal, out, lse, opt);
}

}  // namespace ff::mla
