// fireflyer gemm: matrix products over checkpoint weights (DeepGEMM's role).
//
// Layout: a weight W is [n, k] row-major (PyTorch nn.Linear layout, "NT" GEMM), row i at
// data + i * ld elements. FP8 (e4m3) weights carry fp32 block scales `scale_inv`
// [ceil(n/128), ceil(k/128)] (DeepSeek's weight_scale_inv): W[i,j] = W8[i,j] * s[i/128, j/128].
// Block-quantized weights (Weight::block != None; GGUF's Q8_0, Q4_K, Q5_K, Q6_K, layouts in
// gguf_quant.h) hold each row as GGUF blocks: row i starts at (const uint8_t*)data +
// i * row_bytes(type, ld), k and ld are elements and multiples of the block size (32 for Q8_0,
// 256 for the K types), data may have any alignment. Their element values are exactly those of
// dequantize_gguf. Activations are fp32 rows. Kernels split n across the global thread pool;
// the result for a fixed thread count and backend is deterministic.
#pragma once
#include <cstdint>
#include <optional>
#include <span>

#include "core/core.h"
#include "gemm/gguf_quant.h"  // GGUF (llama.cpp) block formats: sizes, names, dequantisation

namespace ff::gemm {

constexpr int64_t kFp8Block = 128;

// GGUF block formats a weight may hold (the kernels of gemm::linear run them directly).
enum class Block : uint8_t { None = 0, Q8_0, Q4_K, Q5_K, Q6_K };

// The GGUF type of a block format; ff::Error for Block::None.
GgufType block_gguf_type(Block b);
// The Block for a GGUF type the kernels run (Q8_0, Q4_K, Q5_K, Q6_K); nullopt for any other.
std::optional<Block> block_of(GgufType t);

struct Weight {
  DType dtype = DType::F32;   // F32, BF16, F16 or F8_E4M3; ignored when block != None
  Block block = Block::None;  // GGUF blocks: see the layout above
  const void* data = nullptr;
  int64_t n = 0, k = 0;
  int64_t ld = 0;                    // elements between rows (>= k; blocks: a block multiple)
  const float* scale_inv = nullptr;  // F8_E4M3 only: [ceil(n/128), ceil(k/128)]
  // Multiply X as it is (fp32 products) even where the BF16 dot kernel or the integer block
  // kernels are chosen (see linear's precision note): for products whose rounding must match
  // another path's at fp32 precision (MLA's kv_b against its absorbed per-head form).
  bool exact_x = false;
};

// Y[m, n] = X[m, k] * W^T, X row stride ldx, Y row stride ldy (in floats); columns of Y past n
// are not touched. Throws ff::Error for a malformed weight (see validate), ldx < k, ldy < n or a
// null X / Y; m == 0 does nothing.
//
// Precision: products and sums are fp32 for every weight dtype (weights are widened exactly,
// FP8 block scales applied per 128 columns), with one exception chosen per CPU,
// FF_GEMM_BF16_KERNEL=auto (the default): on CPUs where vdpbf16ps runs at twice the FMA rate
// (AMD Zen 4 / Zen 5, by CPU identity, never by timing) BF16 weights on the AVX-512 backend
// multiply X rounded to bf16 (round to nearest even), as oneDNN and llama.cpp do, ~2^-9 relative
// error per product, sums still fp32; m > 16 on vdpbf16ps (~2x prefill GEMMs on Zen 4), fewer
// rows on the fp32 kernels over the same rounded X, so a row's value depends on m only through
// fp32 summation order. =fma keeps fp32 products everywhere; =dot forces the dot kernel (any CPU
// with AVX512-BF16; Intel's Sapphire Rapids class runs it at half the FMA rate). A weight with
// exact_x set always takes fp32 products: the model sets it on MLA's kv_b and its absorbed
// per-head form, whose prefill (latent times kv_b) and decode (q times W_UK^T) paths must agree
// at fp32 precision, or a preempted and recomputed request could differ from an uninterrupted
// one by ~1e-2 of the logits' scale. Rounding X to bf16 still turns the last-bit differences of
// another summation order (a batched step against a lone one) into a bf16 step now and then,
// which can tip a near tie inside the model (an MoE router's top-k); =fma where batch
// composition must not matter beyond fp32 noise.
// Backends: AVX-512, AVX2 or the scalar reference by ff::active_isa() (FF_ISA). Small m (up to
// 8; 12 for non-FP8 weights on AVX-512) streams W once (decode); on AVX-512, 13..16 rows (FP8:
// 9..16) widen each weight once into an L1 tile and broadcast it against X transposed; larger m
// packs W into cache-resident panels (prefill). Output columns are split across the global
// thread pool.
// Block weights (Q8_0, Q4_K, Q5_K, Q6_K): the weights are dequantized exactly (the values of
// dequantize_gguf), products and sums fp32 as above; only the summation order differs between
// backends. Up to 16 rows stream each weight row once and dequantize it in registers (Q4_K:
// d * sc * q - dmin * m by one exact FMA per sub-block table, one permute per vector on
// AVX-512; 9..16 rows as two tiles over the same, cached, weight rows); more rows dequantize W
// into the fp32 tiles of the paths above, as often as those widen BF16 (AVX-512 broadcast rows,
// AVX2 packed panels). The reference backend dequantizes a row with dequantize_gguf.
// Exception, on AVX-512 CPUs with VNNI: Q4_K / Q5_K / Q6_K weights multiply X quantized to
// int8 per 256 elements (llama.cpp's Q8_K: each x off by at most 1/254 of its group's largest
// |x|) and Q8_0 weights X quantized to int16 per 32 (off by at most 2^-16 of the group's
// largest), at every m, on integer kernels: 1..8 rows stream the weights (K types; Q4_K decode
// 1.4-2.7x), more rows multiply 32-column panels with vpdpbusd / vpdpwssd (prefill: 2.6-2.8x the
// fp32 kernel for Q4_K, 1.7x for Q8_0), Q8_0 at 1..8 rows runs the fp32 kernels over the same
// rounded X. FF_GEMM_BLOCK_KERNEL=float keeps the exact path (details in linear_kernels.h).
void linear(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy);

// ---- many products in one pass (grouped GEMM over fp32 activations) ----------------------
// One product: Y[m, n] = X[m, k] W^T, exactly as linear(x, m, ldx, *w, y, ldy).
struct LinearProblem {
  const float* x = nullptr;
  int64_t m = 0, ldx = 0;
  const Weight* w = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};
// Runs independent products in one parallel region: their output columns, concatenated, are
// cut into one run per thread of about equal cost (weight bytes and multiply-adds), so many
// small products (MoE experts at a few rows each) cost one wake-up of the pool instead of one
// each, and each thread streams one long run of weights. The results are bitwise those of
// calling linear() on each problem (a column's value never depends on the split). Outputs must
// not overlap each other or any input. Problems with m == 0 are skipped (their weight is not
// read); the others are checked as linear() checks them (ff::Error naming the problem index).
void linear_batch(std::span<const LinearProblem> problems);

// MoE layers over fp32 activations with one weight per expert (the model's experts, each in its
// checkpoint dtype: FP8 stays 1 byte per weight), in DeepGEMM's two grouped layouts. All
// experts must share one shape [n, k]. Both run as one linear_batch.
// Contiguous (prefill): X [m_sum, k] holds the rows of all experts; m_indices[i] is row i's
// expert in [0, experts.size()) or -1 for a padding row, whose Y row is zero-filled. Unlike the
// FP8 form below there is no 128-row alignment rule (a CPU has no tile to fill); each maximal
// run of equal ids is one product.
void m_grouped_linear_contiguous(const float* x, int64_t m_sum, int64_t ldx,
                                 const int32_t* m_indices, std::span<const Weight> experts,
                                 float* y, int64_t ldy);
// Masked (decode): X is experts.size() blocks of [max_m, k] (block g at x + g * max_m * ldx), Y
// likewise [G, max_m, n] (ldy); expert g uses its first masked_m[g] in [0, max_m] rows, and the
// other rows of Y are not written.
void m_grouped_linear_masked(const float* x, int64_t max_m, int64_t ldx,
                             std::span<const Weight> experts, const int32_t* masked_m, float* y,
                             int64_t ldy);

// Dequantizes row `row` of W into out[k] as fp32.
void dequantize_row(const Weight& w, int64_t row, float* out);

// Checks that a weight is well-formed; throws ff::Error naming `what` otherwise. Block weights:
// k and ld multiples of the block size (and ld >= k), data non-null.
void validate(const Weight& w, const char* what);

// Bytes of the n x k weight as stored (rows of ld past k not counted; FP8 scales not counted).
int64_t weight_bytes(const Weight& w);

// ---- GGUF quantizers (on-load quantization of fp32 weights, `--quantize q8|q4`) ----------
// Both quantize n floats (n a multiple of the block size: 32, resp. 256) into n / block GGUF
// blocks at out (any alignment) and throw ff::Error for a bad n or a non-finite input (a NaN or
// infinity has no meaningful block scale).
// Q8_0: bit-exact with gguf-py's gguf.quants.quantize(x, Q8_0) (and ggml's reference): d =
// amax / 127 rounded to f16, q = round-half-away(x * (1 / d)) with the fp32 d before rounding.
// An amax past 127 * 65504 gives an infinite f16 d, as there.
void quantize_q8_0(const float* x, int64_t n, void* out);
// Q4_K, our own fit: per 32-element sub-block an affine grid x ~ s * q - m (q in 0..15, m >= 0)
// chosen by a small search over candidate scales, each followed by a least-squares refit of s and
// m to its q, keeping the least squared error; the 8 scales and mins are then rounded to 6 bits
// against per-256 f16 d = max s / 63 and dmin = max m / 63, q is re-solved for the rounded grid,
// and each 6-bit min refit to those q (then q once more). The 6-bit scales share one d, so an
// outlier 60x above a sub-block's range leaves that sub-block a constant (its mean, clipped to
// <= 0): a limit of the format. Gaussian data: relative RMS error ~0.07
// (tests/gemm/block_quant_test.cc).
void quantize_q4_k(const float* x, int64_t n, void* out);

// ==== DeepGEMM-style GEMMs: D = C + A * B^T over FP8 (e4m3) or BF16 operands ===============
//
// Naming follows DeepGEMM: fp8_gemm_XY, X for A's storage, Y for B's. A is logically [m, k],
// B logically [n, k]. "n" after the name (first letter) means A is K-major (row-major [m, k]);
// "t" means A is M-major (stored [k, m]). For B, "t" means K-major (stored [n, k], nn.Linear
// layout) and "n" means N-major (stored [k, n]). So fp8_gemm_nt is the usual X * W^T.
//
// FP8 scales (fp32, "scale_inv": value = e4m3 * scale), always in their *logical* layout,
// row-major, whatever the storage major of the data:
//   A: 1x128 per-token groups, [m, ceil(k/128)];   B: 128x128 blocks, [ceil(n/128), ceil(k/128)].
// A k that is not a multiple of 128 has a short last group (its scale covers the remainder).
// Numerics (reference backend, exactly DeepGEMM's two-level accumulation): for each 128-wide
// k group an fp32 partial dot product of the raw e4m3 values, multiplied by sa[i,g] * sb[j/128,g]
// and added to an fp32 accumulator; then C is added and D is rounded to its dtype (bf16: RNE).
// The SIMD backends compute the same sum with A's scale folded into A before the products
// (the difference is fp32 rounding, ~1e-7 relative) through gemm::linear's kernels; BF16 B with
// more than 16 rows of A in a product takes linear's BF16 kernel choice (see its Precision).
// UE8M0: scales are passed as fp32 values; GemmOptions::ue8m0 asks validation to check that
// every scale is an exact power of two (what quantize_*(…, ue8m0 = true) produces; DeepGEMM's
// packed ue8m0 bytes convert with ff::ue8m0_to_f32). The arithmetic is the same.

// One GEMM operand, logically [rows, k] (A: rows = m; B: rows = n).
struct Matrix {
  DType dtype = DType::F8_E4M3;  // F8_E4M3 (needs scales) or BF16
  const void* data = nullptr;
  int64_t rows = 0, k = 0;
  // Elements between consecutive rows (K-major) or between consecutive k (MN-major); 0 means
  // packed (k, resp. rows).
  int64_t ld = 0;
  const float* scales = nullptr;  // F8_E4M3 only; layout above (A 1x128, B 128x128)
  // Optional: the shape of the scales tensor as the caller holds it (per group for grouped
  // operands). When set (non-zero), it must equal the shape the recipe needs, or ff::Error.
  int64_t scale_rows = 0, scale_cols = 0;
  // Grouped operands only: elements between groups of `data` / of `scales`; 0 means packed.
  int64_t group_stride = 0, scale_group_stride = 0;
};

// The result D [m, n] (row-major, ld elements between rows, 0: n), F32 or BF16, and an optional
// fp32 C [m, n] added to it (c may equal data when D is F32: accumulate in place).
struct Output {
  DType dtype = DType::F32;
  void* data = nullptr;
  int64_t ld = 0;
  const float* c = nullptr;
  int64_t ldc = 0;  // 0: n
};

struct GemmOptions {
  bool ue8m0 = false;  // require every FP8 scale to be a power of two (see above)
};

void fp8_gemm_nt(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt = {});
void fp8_gemm_nn(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt = {});
void fp8_gemm_tn(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt = {});
void fp8_gemm_tt(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt = {});
void bf16_gemm_nt(const Matrix& a, const Matrix& b, const Output& d);
void bf16_gemm_nn(const Matrix& a, const Matrix& b, const Output& d);
void bf16_gemm_tn(const Matrix& a, const Matrix& b, const Output& d);
void bf16_gemm_tt(const Matrix& a, const Matrix& b, const Output& d);

// MoE prefill. A [m_sum, k] (K-major) holds the rows of all experts; m_indices[m_sum] gives each
// row's expert in [0, num_groups) or -1 for a padding row. m_sum must be a multiple of
// kFp8Block and every aligned block of 128 rows may hold only one expert id (plus -1 rows):
// DeepGEMM's contiguous layout with alignment 128. B is num_groups experts of [n, k]
// (K-major; group_stride / scale_group_stride between experts). D [m_sum, n]; padding rows
// of D are zero-filled (C is not read for them).
void m_grouped_fp8_gemm_nt_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                      const int32_t* m_indices, const Output& d,
                                      const GemmOptions& opt = {});
void m_grouped_bf16_gemm_nt_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                       const int32_t* m_indices, const Output& d);
// The same with B N-major: num_groups experts of [k, n] storage (b.ld elements between k rows,
// group_stride between experts; scales still logical [ceil(n/128), ceil(k/128)] per expert),
// DeepGEMM's m_grouped_*_gemm_nn_contiguous (MoE backward). The fast path copies each used
// expert to K-major first.
void m_grouped_fp8_gemm_nn_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                      const int32_t* m_indices, const Output& d,
                                      const GemmOptions& opt = {});
void m_grouped_bf16_gemm_nn_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                       const int32_t* m_indices, const Output& d);

// MoE decode. A is num_groups blocks of [max_m, k] (a.rows = max_m; group_stride elements
// apart, scales scale_group_stride apart; 0: packed), D likewise [num_groups, max_m, n] with
// blocks max_m * ld apart. Group g uses its first masked_m[g] <= max_m rows; the rest of D
// is not written (as DeepGEMM). expected_m is DeepGEMM's scheduling hint and is ignored.
void m_grouped_fp8_gemm_nt_masked(const Matrix& a, const Matrix& b, int64_t num_groups,
                                  const int32_t* masked_m, int64_t expected_m, const Output& d,
                                  const GemmOptions& opt = {});
void m_grouped_bf16_gemm_nt_masked(const Matrix& a, const Matrix& b, int64_t num_groups,
                                   const int32_t* masked_m, int64_t expected_m, const Output& d);

// MoE weight gradient (DeepGEMM's 1D1D recipe, fp32 out): for each group g with k_g = ks[g] rows
// of the K-grouped inputs (each a multiple of 128, may be 0), D[g] = C[g] + A_g^T B_g where
// A is [sum_k, m] e4m3 with scales sfa [sum_k / 128, m] (one per 128 k and column of m) and
// B is [sum_k, n] e4m3 with scales sfb [sum_k / 128, n]; D and C are [G, m, n] fp32 (c may
// equal d: accumulate in place; null: no C). Per 128-k block an fp32 partial of the raw
// products times sfa * sfb is accumulated in fp32, as for the other FP8 GEMMs.
void k_grouped_fp8_gemm_tn_contiguous(const uint8_t* a, const float* sfa, int64_t m,
                                      const uint8_t* b, const float* sfb, int64_t n,
                                      const int64_t* ks, int64_t num_groups, float* d,
                                      const float* c);
// The same over BF16 inputs (DeepGEMM's k_grouped_bf16_gemm_tn_contiguous): A [sum_k, m] and
// B [sum_k, n] bf16, no scales, any ks[g] >= 0; fp32 products and sums.
void k_grouped_bf16_gemm_tn_contiguous(const uint16_t* a, int64_t m, const uint16_t* b, int64_t n,
                                       const int64_t* ks, int64_t num_groups, float* d,
                                       const float* c);

// ---- quantization helpers (DeepSeek / DeepGEMM casts) ----------------------------------
// Per-token 1x128 cast (DeepSeek's act_quant): for row i, group g of x [m, k] (row stride ldx):
// amax = max(|x|, 1e-4), s = amax / 448, with ue8m0 s = 2^ceil(log2 s); q = e4m3(x / s)
// (ff::f32_to_e4m3: RNE, saturating at +-448). `reciprocal` uses DeepGEMM's
// per_token_cast_to_fp8 form e4m3(x * (1 / s)) instead. out [m, k] packed, scales [m, ceil(k/128)].
void quantize_per_token(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* out,
                        float* scales, bool ue8m0 = false, bool reciprocal = false);
// Per-block 128x128 cast (the checkpoint's weight / weight_scale_inv; DeepGEMM's
// per_block_cast_to_fp8): amax over each block (partial edge blocks over their elements),
// then as above. out [n, k] packed, scales [ceil(n/128), ceil(k/128)].
void quantize_per_block(const float* w, int64_t n, int64_t k, int64_t ldw, uint8_t* out,
                        float* scales, bool ue8m0 = false, bool reciprocal = false);

// DeepGEMM's packed UE8M0 scales (its SM100 input, get_mn_major_tma_aligned_packed_ue8m0_tensor):
// fp32 scales [rows, kb] (row-major, rows = m for A's 1x128 groups or ceil(n/128) for B's
// blocks) <-> int32 words holding four ue8m0 exponent bytes along k, little-endian (byte b of
// word w is group 4w + b; bytes past kb are 0), stored MN-major: word w of row r at
// packed[w * mn_stride + r], mn_stride >= rows (DeepGEMM pads it to a multiple of 4).
// Packing rounds each scale up to a power of two (DeepGEMM's ceil_to_ue8m0); unpacking is exact,
// and the result feeds the GEMMs above with GemmOptions::ue8m0.
void pack_ue8m0_scales(const float* scales, int64_t rows, int64_t kb, int64_t mn_stride,
                       int32_t* packed);
void unpack_ue8m0_scales(const int32_t* packed, int64_t rows, int64_t kb, int64_t mn_stride,
                         float* scales);

// DeepGEMM's metric: 1 - 2 sum(x y) / sum(x^2 + y^2) in float64 (0 when both are all zero).
double calc_diff(const double* x, const double* y, int64_t n);

}  // namespace ff::gemm
