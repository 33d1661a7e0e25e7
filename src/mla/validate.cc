// Validation of mla_decode_with_kvcache's arguments (see problem.h).
#include <cmath>

#include "mla/problem.h"

namespace ff::mla {
namespace {

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16;
}

}  // namespace

Problem validate(const TensorView& q, const TensorView& kcache, const TensorView& block_table,
                 const TensorView& cache_seqlens, int64_t head_dim_v, const MlaSchedule& schedule,
                 float softmax_scale, bool causal, const TensorView& out, const TensorView& lse,
                 const MlaDecodeOptions& opt) {
  const auto& s = schedule.impl();
  Problem p;
  p.sparse = opt.indices.ndim != 0;
  FF_CHECK(q.ndim == 4, "mla_decode: q must be [b, s_q, h_q, d], got {}", q.shape_str());
  FF_CHECK(kcache.ndim == 4, "mla_decode: kcache must be [num_blocks, 64, h_kv, d], got {}",
           kcache.shape_str());
  p.b = q.shape[0], p.s_q = q.shape[1], p.h_q = q.shape[2], p.d = q.shape[3];
  p.num_blocks = kcache.shape[0];
  p.h_kv = kcache.shape[2];
  p.dv = head_dim_v;
  FF_CHECK(is_float_dtype(q.dtype), "mla_decode: q dtype {} not supported (BF16, F16, F32)",
           dtype_name(q.dtype));
  FF_CHECK(q.stride[3] == 1, "mla_decode: q's last dim must be contiguous");
  FF_CHECK(p.s_q > 0 && p.h_q > 0 && p.d > 0, "mla_decode: q shape {} has an empty dim",
           q.shape_str());
  FF_CHECK(kcache.shape[1] == kBlockSize, "mla_decode: kcache page size {} must be {}",
           kcache.shape[1], kBlockSize);
  FF_CHECK(p.h_kv > 0 && p.h_q % p.h_kv == 0, "mla_decode: h_q {} must be a multiple of h_kv {}",
           p.h_q, p.h_kv);
  FF_CHECK(kcache.stride[3] == 1, "mla_decode: kcache's last dim must be contiguous");
  if (kcache.dtype == DType::U8 || kcache.dtype == DType::F8_E4M3) {
    p.fp8 = true;
    FF_CHECK(kcache.shape[3] == kFp8TokenBytes && p.h_kv == 1,
             "mla_decode: FP8 kcache must be [num_blocks, 64, 1, {}] bytes, got {}", kFp8TokenBytes,
             kcache.shape_str());
    FF_CHECK(
        p.d == kFp8NopeDim + kFp8RopeDim && p.dv == kFp8NopeDim && q.dtype == DType::BF16,
        "mla_decode: FP8 kcache needs BF16 q with d = 576 and head_dim_v = 512 (got {} d = {}, "
        "dv = {})",
        dtype_name(q.dtype), p.d, p.dv);
  } else {
    FF_CHECK(kcache.dtype == q.dtype,
             "mla_decode: kcache dtype {} must equal q dtype {} (or be FP8)",
             dtype_name(kcache.dtype), dtype_name(q.dtype));
    FF_CHECK(kcache.shape[3] == p.d, "mla_decode: kcache head dim {} != q head dim {}",
             kcache.shape[3], p.d);
  }
  FF_CHECK(p.dv > 0 && p.dv <= p.d, "mla_decode: head_dim_v {} must be in [1, d = {}]", p.dv, p.d);
  FF_CHECK(out.ndim == 4 && out.shape[0] == p.b && out.shape[1] == p.s_q && out.shape[2] == p.h_q &&
               out.shape[3] == p.dv,
           "mla_decode: out must be [{}, {}, {}, {}], got {}", p.b, p.s_q, p.h_q, p.dv,
           out.shape_str());
  FF_CHECK(out.dtype == DType::F32 || out.dtype == q.dtype,
           "mla_decode: out dtype {} must be F32 or q's dtype {}", dtype_name(out.dtype),
           dtype_name(q.dtype));
  FF_CHECK(lse.ndim == 3 && lse.shape[0] == p.b && lse.shape[1] == p.h_q && lse.shape[2] == p.s_q &&
               lse.dtype == DType::F32,
           "mla_decode: lse must be F32 [{}, {}, {}], got {} {}", p.b, p.h_q, p.s_q,
           dtype_name(lse.dtype), lse.shape_str());
  FF_CHECK(s.head_dim == p.d && s.head_dim_v == p.dv,
           "mla_decode: schedule made for d = {}, dv = {}; called with d = {}, dv = {}", s.head_dim,
           s.head_dim_v, p.d, p.dv);
  if (opt.attn_sink.ndim != 0)
    FF_CHECK(opt.attn_sink.ndim == 1 && opt.attn_sink.shape[0] == p.h_q &&
                 opt.attn_sink.dtype == DType::F32,
             "mla_decode: attn_sink must be F32 [{}], got {}", p.h_q, opt.attn_sink.shape_str());
  p.q = q, p.kcache = kcache, p.out = out, p.lse = lse, p.sink = opt.attn_sink;
  p.causal = causal && p.s_q > 1;
  p.rows = p.sparse ? p.h_q : p.s_q * p.h_q / p.h_kv;
  FF_CHECK(s.sparse == p.sparse, "mla_decode: schedule is for {} decoding, call is {}",
           s.sparse ? "sparse" : "dense", p.sparse ? "sparse" : "dense");
  FF_CHECK(s.batch == p.b && s.rows == p.rows && s.h_kv == p.h_kv,
           "mla_decode: schedule made for b = {}, {} rows per KV head, h_kv = {}; called with "
           "b = {}, {} rows, h_kv = {}",
           s.batch, s.rows, s.h_kv, p.b, p.rows, p.h_kv);
  const float scale = softmax_scale > 0.f ? softmax_scale : 1.f / std::sqrt(float(p.d));
  p.scale_log2 = scale * float(M_LOG2E);

  if (!p.sparse) {
    FF_CHECK(cache_seqlens.ndim == 1 && cache_seqlens.dtype == DType::I32 &&
                 cache_seqlens.shape[0] == p.b,
             "mla_decode: cache_seqlens must be I32 [{}], got {} {}", p.b,
             dtype_name(cache_seqlens.dtype), cache_seqlens.shape_str());
    FF_CHECK(
        block_table.ndim == 2 && block_table.dtype == DType::I32 && block_table.shape[0] == p.b,
        "mla_decode: block_table must be I32 [{}, max_blocks], got {} {}", p.b,
        dtype_name(block_table.dtype), block_table.shape_str());
    p.block_table = block_table;
    const int64_t max_blocks = block_table.shape[1];
    for (int64_t i = 0; i < p.b; ++i) {
      const int32_t len = *cache_seqlens.at<int32_t>({i});
      FF_CHECK(len == s.lengths[size_t(i)],
               "mla_decode: cache_seqlens[{}] = {} differs from the schedule's {}; call "
               "get_mla_metadata again",
               i, len, s.lengths[size_t(i)]);
      FF_CHECK(len <= max_blocks * kBlockSize,
               "mla_decode: cache_seqlens[{}] = {} exceeds the block table ({} blocks of {})", i,
               len, max_blocks, kBlockSize);
      for (int64_t j = 0; j < (len + kBlockSize - 1) / kBlockSize; ++j) {
        const int32_t page = *block_table.at<int32_t>({i, j});
        FF_CHECK(page >= 0 && page < p.num_blocks,
                 "mla_decode: block_table[{}][{}] = {} out of range [0, {})", i, j, page,
                 p.num_blocks);
      }
    }
  } else {
    const TensorView& ix = opt.indices;
    FF_CHECK(p.h_kv == 1 && !causal, "mla_decode: sparse decoding needs h_kv = 1 and causal off");
    FF_CHECK(ix.ndim == 3 && ix.dtype == DType::I32 && ix.shape[0] == p.b && ix.shape[1] == p.s_q,
             "mla_decode: indices must be I32 [{}, {}, topk], got {} {}", p.b, p.s_q,
             dtype_name(ix.dtype), ix.shape_str());
    p.topk = ix.shape[2];
    FF_CHECK(s.topk == p.topk && s.s_q == p.s_q,
             "mla_decode: schedule made for topk = {}, s_q = {}; called with {}, {}", s.topk, s.s_q,
             p.topk, p.s_q);
    if (opt.topk_length.ndim != 0) {
      FF_CHECK(opt.topk_length.ndim == 1 && opt.topk_length.dtype == DType::I32 &&
                   opt.topk_length.shape[0] == p.b,
               "mla_decode: topk_length must be I32 [{}], got {}", p.b,
               opt.topk_length.shape_str());
    }
    for (int64_t i = 0; i < p.b; ++i) {
      const int32_t len =
          opt.topk_length.ndim ? *opt.topk_length.at<int32_t>({i}) : int32_t(p.topk);
      FF_CHECK(len == s.lengths[size_t(i)],
               "mla_decode: topk_length[{}] = {} differs from the schedule's {}", i, len,
               s.lengths[size_t(i)]);
      for (int64_t t = 0; t < p.s_q; ++t)
        for (int64_t k = 0; k < len; ++k) {
          const int32_t x = *ix.at<int32_t>({i, t, k});
          FF_CHECK(x == -1 || (x >= 0 && x < p.num_blocks * kBlockSize),
                   "mla_decode: indices[{}][{}][{}] = {} out of range [0, {}) (-1 = none)", i, t, k,
                   x, p.num_blocks * kBlockSize);
        }
    }
    p.indices = ix;
  }
  return p;
}

}  // namespace ff::mla
