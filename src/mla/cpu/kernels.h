// Private: the CPU backends behind mla_decode_with_kvcache.
//
// The driver (decode.cc) hands a backend one request at a time: its query rows (all s_q * h_q /
// h_kv rows of one KV head, so each cache row is read once for all of them) and then the
// request's keys in chunks of at most 64 tokens, padded with a zero row to a multiple of
// kTokenPad. A backend keeps FlashMLA's online-softmax state per row:
//   m[r]  running max of the logits in log2 units (scale * log2(e) * q.k), -inf while empty
//   l[r]  sum of 2^(logit - m)
//   o_acc [dv][row_pad] f32, unnormalised output, transposed so SIMD lanes run over query rows
// and the driver normalises it (out = o / l, lse = ln 2 * (m + log2 l)).
#pragma once
#include <cstdint>

#include "mla/schedule.h"

namespace ff::mla {

struct RequestArgs {
  int64_t rows = 0, row_pad = 0, d = 0, dv = 0;
  float scale_log2 = 0.f;  // softmax_scale * log2(e)
  PartBuffers* buf = nullptr;
};

struct ChunkArgs {
  const void* const* rows = nullptr;  // n_pad key rows in the kernel's kv dtype (d values each)
  int64_t n = 0;                      // valid tokens; rows [n, n_pad) are zero rows
  int64_t n_pad = 0;                  // a multiple of kTokenPad
  int64_t pos0 = 0;                   // position of token 0; token t is masked for row r when
                                      // pos0 + t >= buf->limit[r]
};

struct Kernel {
  DType kv_dtype = DType::F32;  // the element type chunk rows arrive in: F32 or BF16
  // Query rows are padded to a multiple of this (the SIMD width; the schedule's row_pad, a
  // multiple of 16, is the buffers' capacity).
  int64_t row_align = kRowPad;
  // Packs buf->q_rows ([rows][d] f32) into buf->q_packed (the rows past `rows` must come out 0).
  void (*begin)(const RequestArgs&) = nullptr;
  // Folds a chunk into m, l and o_acc.
  void (*chunk)(const RequestArgs&, const ChunkArgs&) = nullptr;
  // Optional: one FP8 token (kFp8TokenBytes) to 576 values of kv_dtype; null: the generic code.
  void (*fp8_row)(const uint8_t* src, void* dst) = nullptr;
};

Kernel kernel_ref();
Kernel kernel_avx2();
Kernel kernel_avx512_f32();
Kernel kernel_avx512_bf16();  // needs AVX512-BF16, even d and dv

enum class KernelId { Ref, Avx2, Avx512F32, Avx512Bf16 };
const char* kernel_name(KernelId id);

// The AVX-512 kernel for BF16 q with even dims: Avx512Bf16 (vdpbf16ps) or Avx512F32 (fp32 FMAs on
// bf16 values widened exactly). The two round differently (the dot kernel rounds P to bf16), so
// the choice is a pure function of the CPU's identity and never of a timing. Sapphire Rapids
// issues one vdpbf16ps (64 FLOPs) per two cycles but two FMAs (32 FLOPs each) per cycle, so FMA is
// faster there; AMD Zen 4 / Zen 5 run vdpbf16ps at full rate. Hence the dot kernel only on AMD
// family >= 0x19 with AVX512-BF16, FMA everywhere else (Intel and unknown CPUs included).
// ff_mla_bf16_kernel (the FF_MLA_BF16_KERNEL value; null or "" for none) "dot" or "fma" forces
// one; another value, or "dot" on a CPU without AVX512-BF16, throws ff::Error naming it.
KernelId resolve_bf16_kernel(const CpuFeatures& cpu, const char* ff_mla_bf16_kernel);

// The kernel mla_decode_with_isa runs on `isa` for BF16 / F16 / F32 q and these dims. With at
// most 8 query rows per KV head (a model with few heads) on AVX-512, the 8-lane AVX2 kernel: the
// 16-lane ones would leave at least half of every vector empty. For BF16 q on AVX512-BF16 CPUs,
// resolve_bf16_kernel(cpu_features(), getenv("FF_MLA_BF16_KERNEL")), read once per process.
KernelId default_kernel(Isa isa, DType q_dtype, int64_t d, int64_t dv, int64_t rows = kRowPad);

// mla_decode_with_kvcache on a given kernel (the CPU must support it); for tests and benchmarks.
void mla_decode_with_kernel(KernelId id, const TensorView& q, const TensorView& kcache,
                            const TensorView& block_table, const TensorView& cache_seqlens,
                            int64_t head_dim_v, MlaSchedule& schedule, float softmax_scale,
                            bool causal, const TensorView& out, const TensorView& lse,
                            const MlaDecodeOptions& opt = {});

}  // namespace ff::mla
