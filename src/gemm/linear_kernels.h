// Private: the backends behind gemm::linear and the entry point that picks one.
//
// Every backend computes output columns [n0, n1) for all m rows; linear_with_isa splits n
// across the global pool. A column's value depends only on the backend and m (not on which
// thread or tile computed it), so results are deterministic for any thread count.
#pragma once
#include <functional>
#include <span>
#include <vector>

#include "core/cpu.h"
#include "gemm/gemm.h"

namespace ff::gemm {

// The two kernels for BF16 weights at more than kBf16DotMinRows rows on the AVX-512 backend:
// Fma widens the weights and multiplies fp32 X (as every other path does); Dot rounds X to bf16
// and multiplies on vdpbf16ps (linear_bf16dot_avx512.cc), twice the FMA rate where that
// instruction runs at full rate.
enum class Bf16Kernel { Fma, Dot };
constexpr int64_t kBf16DotMinRows = 17;  // fewer rows: the fp32 kernels on bf16-rounded X

// The kernel from ff_gemm_bf16_kernel (the FF_GEMM_BF16_KERNEL value): null, "" or "auto" (the
// default) Dot on AMD family >= 0x19 with AVX-512 and AVX512-BF16 (Zen 4, Zen 5; Intel runs
// vdpbf16ps at half the FMA rate), Fma elsewhere; "fma" Fma; "dot" Dot. Another value, or "dot"
// on a CPU without AVX512-BF16, throws ff::Error naming it. Depends on the CPU identity only,
// never on timing, so a model's output is the same on every run of one machine (gemm.h).
Bf16Kernel resolve_bf16_gemm_kernel(const CpuFeatures& cpu, const char* ff_gemm_bf16_kernel);

// resolve_bf16_gemm_kernel(cpu_features(), getenv("FF_GEMM_BF16_KERNEL")), read once per process
// (or what a ScopedBf16GemmKernel set).
Bf16Kernel bf16_gemm_kernel();

// For tests: replaces this process's choice while it lives (a test that compares an fp32 forward
// with fp32 goldens at 1e-4 keeps fp32 products; Dot needs AVX512-BF16). Not for concurrent use
// with other threads running gemm::linear.
class ScopedBf16GemmKernel {
 public:
  explicit ScopedBf16GemmKernel(Bf16Kernel kernel);
  ~ScopedBf16GemmKernel();
  ScopedBf16GemmKernel(const ScopedBf16GemmKernel&) = delete;
  ScopedBf16GemmKernel& operator=(const ScopedBf16GemmKernel&) = delete;

 private:
  Bf16Kernel previous_;
};

// Runs linear on backend `isa` (which the CPU must support) with `bf16` as the BF16 prefill
// kernel (Dot needs AVX512-BF16; it applies to the AVX-512 backend only). Validates like
// linear(); m == 0 is a no-op. Tests and benchmarks use it to compare backends within one
// process.
void linear_with_isa(Isa isa, Bf16Kernel bf16, const float* x, int64_t m, int64_t ldx,
                     const Weight& w, float* y, int64_t ldy);
// The same with this process's bf16_gemm_kernel().
void linear_with_isa(Isa isa, const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy);

// Runs linear_batch on backend `isa` (with `bf16`, or this process's choice).
void linear_batch_with_isa(Isa isa, Bf16Kernel bf16, std::span<const LinearProblem> problems);
void linear_batch_with_isa(Isa isa, std::span<const LinearProblem> problems);

// The kernel for GGUF block weights at few rows (see the int8 section below).
enum class BlockKernel { Float, Int8 };
// Both kernel choices given: `bf16` as above, `block` for block weights (Int8 needs AVX512-VNNI
// and applies on Isa::Avx512 only). The functions above pass block_kernel() on Avx512, Float
// on the other backends.
void linear_with_kernels(Isa isa, Bf16Kernel bf16, BlockKernel block, const float* x, int64_t m,
                         int64_t ldx, const Weight& w, float* y, int64_t ldy);
void linear_batch_with_kernels(Isa isa, Bf16Kernel bf16, BlockKernel block,
                               std::span<const LinearProblem> problems);

// One product of a batch as the column split sees it: rows, the weight's n and k, bytes a weight.
struct BatchShape {
  int64_t m = 0, n = 0, k = 0;
  double weight_bytes = 0;
};
// linear_batch's split, for any kernel: the problems' output columns, concatenated, cut into one
// run per pool thread of about equal cost (reading weights against multiply-adds), at multiples
// of 32 columns inside a problem; run(i, c0, c1) computes columns [c0, c1) of problem i
// (problems with m == 0 are skipped). Small batches run on the calling thread.
void for_each_column_run(std::span<const BatchShape> shapes,
                         const std::function<void(size_t, int64_t, int64_t)>& run);

// Reference backend (FF_ISA=scalar): dequantize a row, fp32 dot products. Slow and simple.
void linear_ref_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy,
                     int64_t n0, int64_t n1);

// SIMD backends (linear_simd.h instantiated for 8-lane AVX2 and 16-lane AVX-512).
void linear_avx2_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                      int64_t ldy, int64_t n0, int64_t n1);
void linear_avx512_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                        int64_t ldy, int64_t n0, int64_t n1);
// BF16 weights (no block format) on vdpbf16ps, X rounded to bf16; any m, meant for m > 16.
void linear_bf16dot_rows(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                         int64_t ldy, int64_t n0, int64_t n1);

// ---- int8 activations for GGUF K-quant weights (AVX512-VNNI) ----------------------------
//
// Decode over Q4_K / Q5_K / Q6_K weights is bound by decoding the weights to fp32, not by memory
// (Q4_K at m = 1 reaches ~0.4 of the read bandwidth that way), and prefill by the fp32 FMA rate.
// The int8 kernels instead quantize the rows of X once per call and multiply the weights'
// integer quants by X's (exact int32 sums over a whole super-block), applying the scales once per
// super-block: llama.cpp's Q4_K x Q8_K scheme. Up to kInt8MaxRows rows each thread streams its
// weight rows through vpmaddubsw + vpdpwssd (linear_int8_avx512vnni.cc); more rows multiply
// panels of 32 repacked columns with vpdpbusd (linear_int8_gemm_avx512vnni.cc).
//
// X's quantization (quantize_rows_int8), per row and per group of consecutive elements: for the
// K types per 256 (their super-blocks) to int8, d = amax / 127 (fp32), q = round-half-even(x *
// (1 / d)) in [-127, 127] (q = 0 where d = 0); for Q8_0 per 32 (its blocks) to int16, d = amax /
// 32767, multiplied with vpdpwssd (32 multiply-adds an instruction, twice the fp32 FMA rate) so
// that Q8_0, the near-lossless format, keeps X to 2^-16 of its block's range (int8 X, llama.cpp's
// Q8_0 x Q8_0, measured 4.5x the mean KL of X exact on the default model; int16 X is within
// noise of it). The result of a column is the sum of W's exact values times d * q, exact in int32
// per block and lane, scaled and summed in fp32; it depends only on k and the column's own
// weights and X's row, not on the split of n, and on m only through fp32 summation order. Q8_0 at
// up to kInt8MaxRows rows runs the fp32 kernels on X so rounded (round_rows_int8): bandwidth, not
// arithmetic, bounds it there.
// The kernel for GGUF block weights: Int8 where the CPU has AVX-512 with VNNI (full-rate
// on every such CPU we know), Float elsewhere. ff_gemm_block_kernel (the FF_GEMM_BLOCK_KERNEL
// value; null or "" for none) "int8" or "float" forces one; another value, or "int8" without
// AVX512-VNNI, throws ff::Error naming it.
BlockKernel resolve_block_kernel(const CpuFeatures& cpu, const char* ff_gemm_block_kernel);
// resolve_block_kernel(cpu_features(), getenv("FF_GEMM_BLOCK_KERNEL")), read once per process.
BlockKernel block_kernel();
// Rows up to which the streaming int8 kernel runs (one thread, weights in L2, Zen 4: Q4_K 2.7x
// the fp32 kernel at 1 row, 1.6x at 4 and 8; from DRAM, 2 threads, 1.4-1.8x at 1 row); more rows
// run the panel kernel.
constexpr int64_t kInt8MaxRows = 8;
// Whether w is a format the int8 kernels run (Q4_K, Q5_K, Q6_K; Q8_0 past kInt8MaxRows rows).
constexpr bool int8_block(Block b) {
  return b == Block::Q4_K || b == Block::Q5_K || b == Block::Q6_K || b == Block::Q8_0;
}
// Elements of X per scale for block format b, and the largest quant (int8 or int16).
constexpr int64_t int8_group(Block b) {
  return b == Block::Q8_0 ? 32 : 256;
}
constexpr int int8_qmax(Block b) {
  return b == Block::Q8_0 ? 32767 : 127;
}
// Whether linear on backend `isa` with kernel `kernel` runs w at m rows (m > 0) through the int8
// kernels.
bool int8_block_path(Isa isa, BlockKernel kernel, const Weight& w, int64_t m);

// Rows of X quantized for one block format (see above), laid out as the int8 kernels read them.
class Int8Rows {
 public:
  int64_t m() const { return m_; }
  int64_t k() const { return k_; }
  Block block() const { return block_; }
  // Row r: k int8 quants in the format's order (Q4_K / Q5_K: per 128 elements, 0..31, 64..95,
  // 32..63, 96..127, matching the nibbles of one 64-byte load; Q6_K natural). K types only.
  const int8_t* q(int64_t r) const { return reinterpret_cast<const int8_t*>(row(r)); }
  // Row r: k int16 quants in natural order. Q8_0 only.
  const int16_t* q16(int64_t r) const { return reinterpret_cast<const int16_t*>(row(r)); }
  // One scale per int8_group(block()).
  const float* dx(int64_t r) const {
    return reinterpret_cast<const float*>(row(r) + (block_ == Block::Q8_0 ? 2 * k_ : k_));
  }
  // Sums of the quants in natural order: Q4_K / Q5_K per 32 (their sub-blocks, for the mins),
  // Q6_K per 16 (its scale groups, for the offset of 32). K types only.
  const int16_t* bsums(int64_t r) const {
    return reinterpret_cast<const int16_t*>(row(r) + 2 * k_);
  }

 private:
  friend bool quantize_rows_int8(Block b, const float* x, int64_t m, int64_t ldx, int64_t k,
                                 Int8Rows& out);
  const uint8_t* row(int64_t r) const { return data_.data() + r * 3 * k_; }
  int16_t* bsums_mut(int64_t r) {
    return reinterpret_cast<int16_t*>(data_.data() + r * 3 * k_ + 2 * k_);
  }
  Block block_ = Block::None;
  int64_t m_ = 0, k_ = 0;
  std::vector<uint8_t> data_;
};

// Quantizes X [m, k] (row stride ldx) for block format b (int8_block(b)) into out, reusing its
// memory; false (out unusable) when X holds a NaN or an infinity, which have no int8 scale.
// Needs AVX512-VNNI.
bool quantize_rows_int8(Block b, const float* x, int64_t m, int64_t ldx, int64_t k, Int8Rows& out);
// X's quantization for b as values: out[r * k + j] = q * d (fp32), for the fp32 kernels (Q8_0
// at few rows). False (out unusable) for a NaN or an infinity in X. Needs AVX-512.
bool round_rows_int8(Block b, const float* x, int64_t m, int64_t ldx, int64_t k, float* out);
// Columns [n0, n1) of Y [x.m(), n] = X W^T from the quantized rows (w.block == x.block()).
// Either kernel by x.m() (Q8_0: the panel kernel at any m).
void linear_int8_avx512_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy, int64_t n0,
                             int64_t n1);
// The panel kernel alone (any m; linear_int8_avx512_rows runs it past kInt8MaxRows rows).
void linear_int8_gemm_avx512_rows(const Int8Rows& x, const Weight& w, float* y, int64_t ldy,
                                  int64_t n0, int64_t n1);

}  // namespace ff::gemm
