// MLA decoding over a paged latent KV cache, with FlashMLA's API and semantics, on the CPU.
//
// Layouts (FlashMLA's; elements, row-major unless a view says otherwise):
//   q             [b, s_q, h_q, d]            BF16 | F16 | F32; any strides
//   kcache        [num_blocks, 64, h_kv, d]   same dtype as q; innermost dim contiguous.
//                 K and V are the same rows: V = the first head_dim_v columns. d = 576 (512 latent
//                 + 64 RoPE) and dv = 512 in DeepSeek-V3; any d >= dv > 0 works (tiny test models).
//                 FP8 (DeepSeek-V3.2): U8 [num_blocks, 64, 1, 656], one token = kFp8TokenBytes:
//                   bytes [0, 512)    512 x e4m3 NoPE values, value = e4m3 * scale[i / 128]
//                   bytes [512, 528)  4 x fp32 scales, one per 128 NoPE values
//                   bytes [528, 656)  64 x bf16 RoPE values (not quantized)
//                 (logical d = 576, dv = 512, q BF16.) quantize_kv_fp8 writes it.
//   block_table   [b, max_blocks] I32: logical page j of sequence i (tokens [64j, 64j+64)) is
//                 physical block block_table[i][j]
//   cache_seqlens [b] I32: tokens of each sequence; 0 <= len <= 64 * max_blocks
//   out           [b, s_q, h_q, dv]  F32 or q's dtype; any strides
//   lse           [b, h_q, s_q] F32: natural log-sum-exp of the scaled logits (+inf: nothing
//   attended)
//
// Semantics: out = softmax(scale * q k^T) v per (b, query token, head), with the h_q heads sharing
// KV head h = head / (h_q / h_kv). Causal masking is bottom-right aligned (query token i of s_q may
// see keys [0, len - s_q + i]); a query with no key gets out = 0 and lse = +inf.
//
// Sparse decoding (DeepSeek-V3.2): instead of block_table/cache_seqlens, indices [b, s_q, topk]
// I32 name the cache slots (block * 64 + offset) each query token attends to; -1 is skipped;
// topk_length [b] (optional) uses only the first topk_length[i] indices; h_kv must be 1.
// attn_sink [h_q] F32 (optional, dense or sparse) scales a head's output by
// exp(lse) / (exp(lse) + exp(sink)); lse is returned unchanged.
//
// Work split (get_mla_metadata): each (sequence, KV head) -- or (sequence, query token) when
// sparse -- is a request costing ceil(len / 64) + 5 blocks; the requests are laid end to end and
// cut into num_threads equal parts, so a long request may be split across threads. Split parts
// write normalised partial outputs and their lse; a combine step merges them by log-sum-exp.
// The schedule owns every buffer the decode needs, so a decode call does not allocate; one decode
// at a time may use a schedule. Results are deterministic for a fixed schedule (thread count).
//
// Backends (src/mla/cpu/): AVX-512 (a vdpbf16ps kernel and an fp32-FMA kernel; for BF16 the dot
// kernel where vdpbf16ps is full-rate (AMD Zen 4 / Zen 5), else FMA, and FF_MLA_BF16_KERNEL=dot|fma
// forces one), AVX2, and a plain reference; active_isa() picks (FF_ISA=scalar|avx2|avx512 forces).
// See docs/mla.md.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/core.h"

namespace ff::mla {

constexpr int64_t kBlockSize = 64;       // tokens per cache page
constexpr int64_t kFp8TokenBytes = 656;  // 512 e4m3 + 4 x fp32 scales + 64 x bf16
constexpr int64_t kFp8NopeDim = 512, kFp8RopeDim = 64, kFp8TileSize = 128;

struct MlaMetadataOptions {
  int num_threads = 0;       // parts to split into; 0: ThreadPool::global().size()
  int64_t head_dim = 576;    // d of q / kcache (576 for the FP8 layout)
  int64_t head_dim_v = 512;  // dv
};

// The schedule and workspace of one decode shape. Reuse it while the batch shape and the
// cache_seqlens (topk_length) values stay the same; mla_decode_with_kvcache checks both.
class MlaSchedule {
 public:
  MlaSchedule();
  ~MlaSchedule();
  MlaSchedule(MlaSchedule&&) noexcept;
  MlaSchedule& operator=(MlaSchedule&&) noexcept;

  int num_parts() const;
  // FlashMLA's num_splits: prefix sums over the requests of how many parts each is split into
  // (size num_requests + 1, starting at 0).
  const std::vector<int32_t>& num_splits() const;

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Dense decoding. num_q_tokens_per_head_k = s_q * h_q / h_kv (FlashMLA's argument).
MlaSchedule get_mla_metadata(const TensorView& cache_seqlens, int64_t num_q_tokens_per_head_k,
                             int64_t num_heads_k, const MlaMetadataOptions& opt = {});

// Sparse decoding: batch x s_q requests of h_q rows each, over topk indices (or topk_length[i]
// of them, when topk_length is a [batch] I32 view; an empty view means all topk).
MlaSchedule get_mla_sparse_metadata(int64_t batch, int64_t s_q, int64_t h_q, int64_t topk,
                                    const TensorView& topk_length = {},
                                    const MlaMetadataOptions& opt = {});

struct MlaDecodeOptions {
  TensorView indices;      // sparse: [b, s_q, topk] I32; empty: dense
  TensorView topk_length;  // sparse: [b] I32 or empty
  TensorView attn_sink;    // [h_q] F32 or empty
};

// softmax_scale <= 0 means d^-0.5 (d = 576 for FP8). causal is ignored when s_q == 1 and
// must be false when sparse. Bad shapes / dtypes / block tables / indices throw ff::Error before
// anything is read out of bounds.
void mla_decode_with_kvcache(const TensorView& q, const TensorView& kcache,
                             const TensorView& block_table, const TensorView& cache_seqlens,
                             int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                             bool causal, const TensorView& out, const TensorView& lse,
                             const MlaDecodeOptions& opt = {});

// Same, on a given backend (the CPU must support it); for tests and benchmarks.
void mla_decode_with_isa(Isa isa, const TensorView& q, const TensorView& kcache,
                         const TensorView& block_table, const TensorView& cache_seqlens,
                         int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                         bool causal, const TensorView& out, const TensorView& lse,
                         const MlaDecodeOptions& opt = {});

// FP8 cache quantizer (FlashMLA tests/quant.py): per token and 128-value tile,
// scale = 2^ceil(log2(max(amax / 448, 1e-4))), e4m3 = RNE(x / scale); RoPE copied as bf16.
// src [n, 576] (F32 or BF16, rows contiguous, any row stride; e.g. a kcache viewed as tokens),
// dst [n, 656] U8.
void quantize_kv_fp8(const TensorView& src, const TensorView& dst);
// The inverse, to [n, 576] F32 (exactly what the kernels compute with).
void dequantize_kv_fp8(const TensorView& src, const TensorView& dst);

}  // namespace ff::mla
