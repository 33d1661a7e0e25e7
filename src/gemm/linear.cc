// gemm::linear's host side: input checks, the scalar dequantizer, backend dispatch and the
// split of output columns across the thread pool.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/core.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {

void validate(const Weight& w, const char* what) {
  FF_CHECK(w.data != nullptr, "{}: weight has no data", what);
  FF_CHECK(w.n > 0 && w.k > 0 && w.ld >= w.k, "{}: bad weight shape [{}, {}] (ld {})", what, w.n,
           w.k, w.ld);
  if (w.block != Block::None) {
    FF_CHECK(w.block == Block::Q8_0 || w.block == Block::Q4_K || w.block == Block::Q5_K ||
                 w.block == Block::Q6_K,
             "{}: unknown weight block format {}", what, int(w.block));
    const GgufType t = block_gguf_type(w.block);
    const int64_t bs = gguf_block_size(t);
    FF_CHECK(w.k % bs == 0, "{}: {} weight k = {} is not a multiple of its block size {}", what,
             gguf_type_name(t), w.k, bs);
    FF_CHECK(w.ld % bs == 0, "{}: {} weight ld = {} is not a multiple of its block size {}", what,
             gguf_type_name(t), w.ld, bs);
    return;
  }
  switch (w.dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      break;
    case DType::F8_E4M3:
      FF_CHECK(w.scale_inv != nullptr, "{}: F8_E4M3 weight without weight_scale_inv", what);
      break;
    default:
      fail("{}: unsupported weight dtype {}", what, dtype_name(w.dtype));
  }
}

void dequantize_row(const Weight& w, int64_t row, float* out) {
  if (w.block != Block::None) {
    const GgufType t = block_gguf_type(w.block);
    dequantize_gguf(t, static_cast<const uint8_t*>(w.data) + row * row_bytes(t, w.ld), w.k, out);
    return;
  }
  const int64_t kb = (w.k + kFp8Block - 1) / kFp8Block;
  for (int64_t j = 0; j < w.k; ++j) {
    const int64_t idx = row * w.ld + j;
    float v = 0.f;
    switch (w.dtype) {
      case DType::F32:
        v = static_cast<const float*>(w.data)[idx];
        break;
      case DType::BF16:
        v = bf16_to_f32(static_cast<const uint16_t*>(w.data)[idx]);
        break;
      case DType::F16:
        v = f16_to_f32(static_cast<const uint16_t*>(w.data)[idx]);
        break;
      case DType::F8_E4M3:
        v = e4m3_to_f32(static_cast<const uint8_t*>(w.data)[idx]) *
            w.scale_inv[(row / kFp8Block) * kb + j / kFp8Block];
        break;
      default:
        fail("dequantize_row: unsupported dtype {}", dtype_name(w.dtype));
    }
    out[j] = v;
  }
}

namespace {

using RowsFn = void (*)(const float*, int64_t, int64_t, const Weight&, float*, int64_t, int64_t,
                        int64_t);

// The rows function for one product: the BF16 dot kernel where it was chosen and applies.
RowsFn backend(Isa isa, Bf16Kernel bf16, const Weight& w, int64_t m) {
  if (isa == Isa::Avx512 && bf16 == Bf16Kernel::Dot && w.dtype == DType::BF16 &&
      w.block == Block::None && !w.exact_x && m >= kBf16DotMinRows)
    return linear_bf16dot_rows;
  switch (isa) {
    case Isa::Avx512:
      return linear_avx512_rows;
    case Isa::Avx2:
      return linear_avx2_rows;
    default:
      return linear_ref_rows;
  }
}

// Below this many multiply-adds waking the pool costs more than it saves.
constexpr int64_t kMinParallelMacs = int64_t(1) << 16;
// Columns are handed out in multiples of the widest panel (2 x 16 lanes) so no thread gets a
// ragged panel in the middle of the matrix.
constexpr int64_t kColumnGrain = 32;

void check_bf16_kernel(Bf16Kernel bf16, const char* what) {
  FF_CHECK(bf16 == Bf16Kernel::Fma || cpu_features().avx512_bf16,
           "{}: the BF16 dot kernel needs AVX512-BF16, which this CPU lacks", what);
}

}  // namespace

Bf16Kernel resolve_bf16_gemm_kernel(const CpuFeatures& cpu, const char* env) {
  const std::string v = env ? env : "";
  FF_CHECK(v.empty() || v == "dot" || v == "fma" || v == "auto",
           "FF_GEMM_BF16_KERNEL={}: expected dot, fma or auto", printable(v));
  FF_CHECK(v != "dot" || cpu.avx512_bf16, "FF_GEMM_BF16_KERNEL=dot: this CPU lacks AVX512-BF16");
  if (v == "dot") return Bf16Kernel::Dot;
  if (v == "fma") return Bf16Kernel::Fma;
  // auto, the default: Zen 4 and Zen 5 (Zen 3, also family 0x19, lacks AVX512-BF16) run
  // vdpbf16ps at twice the FMA rate; Intel parts measured so far at half of it. Unknown CPUs keep
  // fp32 products.
  const bool full_rate_dot = cpu.vendor == CpuVendor::Amd && cpu.family >= 0x19;
  return cpu.avx512 && cpu.avx512_bf16 && full_rate_dot ? Bf16Kernel::Dot : Bf16Kernel::Fma;
}

namespace {

std::atomic<Bf16Kernel>& chosen_bf16_kernel() {
  static std::atomic<Bf16Kernel> k{
      resolve_bf16_gemm_kernel(cpu_features(), std::getenv("FF_GEMM_BF16_KERNEL"))};
  return k;
}

}  // namespace

Bf16Kernel bf16_gemm_kernel() {
  return chosen_bf16_kernel().load(std::memory_order_relaxed);
}

ScopedBf16GemmKernel::ScopedBf16GemmKernel(Bf16Kernel kernel) : previous_(bf16_gemm_kernel()) {
  check_bf16_kernel(kernel, "ScopedBf16GemmKernel");
  chosen_bf16_kernel().store(kernel, std::memory_order_relaxed);
}

ScopedBf16GemmKernel::~ScopedBf16GemmKernel() {
  chosen_bf16_kernel().store(previous_, std::memory_order_relaxed);
}

BlockKernel resolve_block_kernel(const CpuFeatures& cpu, const char* env) {
  const bool vnni = cpu.avx512 && cpu.avx512_vnni;
  if (env == nullptr || *env == '\0') return vnni ? BlockKernel::Int8 : BlockKernel::Float;
  if (!std::strcmp(env, "float")) return BlockKernel::Float;
  FF_CHECK(!std::strcmp(env, "int8"),
           "FF_GEMM_BLOCK_KERNEL={}: unknown kernel (expected int8 or float)", printable(env));
  FF_CHECK(vnni, "FF_GEMM_BLOCK_KERNEL=int8: this CPU lacks AVX512-VNNI");
  return BlockKernel::Int8;
}

BlockKernel block_kernel() {
  static const BlockKernel k =
      resolve_block_kernel(cpu_features(), std::getenv("FF_GEMM_BLOCK_KERNEL"));
  return k;
}

bool int8_block_path(Isa isa, BlockKernel kernel, const Weight& w, int64_t m) {
  return isa == Isa::Avx512 && kernel == BlockKernel::Int8 && m > 0 && int8_block(w.block) &&
         !w.exact_x && (w.block != Block::Q8_0 || m > kInt8MaxRows);
}

namespace {

BlockKernel default_block_kernel(Isa isa) {
  return isa == Isa::Avx512 ? block_kernel() : BlockKernel::Float;
}

}  // namespace

void linear_with_isa(Isa isa, const float* x, int64_t m, int64_t ldx, const Weight& w, float* y,
                     int64_t ldy) {
  linear_with_kernels(isa, bf16_gemm_kernel(), default_block_kernel(isa), x, m, ldx, w, y, ldy);
}

void linear_with_isa(Isa isa, Bf16Kernel bf16, const float* x, int64_t m, int64_t ldx,
                     const Weight& w, float* y, int64_t ldy) {
  linear_with_kernels(isa, bf16, default_block_kernel(isa), x, m, ldx, w, y, ldy);
}

namespace {

// The rounding of X that the kernel choice implies, applied at every m so that a row's result
// does not depend on how many rows share the call (a server's batch): with the dot kernel, BF16
// weights multiply bf16-rounded X also where the fp32 kernels run (m <= 16: decode), which then
// differ from it only in fp32 summation order; with the integer kernels, Q8_0 weights multiply
// int16-rounded X (q * d) where the fp32 kernels run (m up to kInt8MaxRows). (The K types run the
// integer kernels at every m.) Writes the rounded rows to `out` (stride k) and returns true when
// one applies; false (X used as it is) otherwise, or where X holds a non-finite value the integer
// scale cannot take.
bool round_x_for(Isa isa, Bf16Kernel bf16, BlockKernel block, const float* x, int64_t m,
                 int64_t ldx, const Weight& w, std::vector<float>& out) {
  if (isa != Isa::Avx512) return false;
  if (bf16 == Bf16Kernel::Dot && w.block == Block::None && w.dtype == DType::BF16 && !w.exact_x &&
      m < kBf16DotMinRows) {
    out.resize(size_t(m * w.k));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < w.k; ++j)
        out[size_t(r * w.k + j)] = bf16_to_f32(f32_to_bf16(x[r * ldx + j]));
    return true;
  }
  if (block == BlockKernel::Int8 && w.block == Block::Q8_0 && !w.exact_x && m <= kInt8MaxRows) {
    out.resize(size_t(m * w.k));
    return round_rows_int8(w.block, x, m, ldx, w.k, out.data());
  }
  return false;
}

// linear_batch's view of a product: the weight's bytes per element set the column split.
BatchShape shape_of(const LinearProblem& p) {
  return {p.m, p.w->n, p.w->k, double(weight_bytes(*p.w)) / double(p.w->n * p.w->k)};
}

// Runs checked products (shapes[i] = shape_of(problems[i]), or m = 0 to skip one): each X is
// prepared once as the kernel choice implies (quantized for the integer kernels, else rounded by
// round_x_for), then the output columns are split across the pool (for_each_column_run).
// `what` names the caller in errors.
void run_products(Isa isa, Bf16Kernel bf16, BlockKernel kernel,
                  std::span<const LinearProblem> problems, std::span<const BatchShape> shapes,
                  const char* what) {
  FF_CHECK(int(isa) <= int(best_isa()), "{}: backend {} not supported by this CPU", what,
           isa_name(isa));
  check_bf16_kernel(bf16, what);
  FF_CHECK(kernel == BlockKernel::Float || cpu_features().avx512_vnni,
           "{}: the int8 block kernel needs AVX512-VNNI", what);
  // The caller's thread's buffers, reused between calls: the pool's threads read them through
  // these references (naming a thread_local inside the lambda would name theirs).
  thread_local std::vector<Int8Rows> tls_rows;
  thread_local std::vector<char> tls_int8;
  thread_local std::vector<std::vector<float>> tls_x;
  std::vector<Int8Rows>& qx = tls_rows;
  std::vector<char>& int8 = tls_int8;
  std::vector<std::vector<float>>& rounded = tls_x;
  if (qx.size() < problems.size()) qx.resize(problems.size());
  if (rounded.size() < problems.size()) rounded.resize(problems.size());
  int8.assign(problems.size(), 0);
  thread_local std::vector<const float*> tls_xs;
  thread_local std::vector<int64_t> tls_ldxs;
  std::vector<const float*>& xs = tls_xs;
  std::vector<int64_t>& ldxs = tls_ldxs;
  xs.resize(problems.size());
  ldxs.resize(problems.size());
  for (size_t i = 0; i < problems.size(); ++i) {
    const LinearProblem& p = problems[i];
    xs[i] = p.x;
    ldxs[i] = p.ldx;
    if (p.m == 0) continue;
    int8[i] = int8_block_path(isa, kernel, *p.w, p.m) &&
              quantize_rows_int8(p.w->block, p.x, p.m, p.ldx, p.w->k, qx[i]);
    if (!int8[i] && round_x_for(isa, bf16, kernel, p.x, p.m, p.ldx, *p.w, rounded[i])) {
      xs[i] = rounded[i].data();
      ldxs[i] = p.w->k;
    }
  }
  for_each_column_run(shapes, [&](size_t i, int64_t c0, int64_t c1) {
    const LinearProblem& p = problems[i];
    if (int8[i])
      linear_int8_avx512_rows(qx[i], *p.w, p.y, p.ldy, c0, c1);
    else
      backend(isa, bf16, *p.w, p.m)(xs[i], p.m, ldxs[i], *p.w, p.y, p.ldy, c0, c1);
  });
}

}  // namespace

void linear_with_kernels(Isa isa, Bf16Kernel bf16, BlockKernel kernel, const float* x, int64_t m,
                         int64_t ldx, const Weight& w, float* y, int64_t ldy) {
  FF_CHECK(m >= 0, "linear: negative row count {}", m);
  if (m == 0) return;  // nothing to compute, and nothing of w is read
  validate(w, "linear");
  FF_CHECK(x != nullptr && y != nullptr, "linear: null input or output");
  FF_CHECK(ldx >= w.k, "linear: input row stride {} < k {}", ldx, w.k);
  FF_CHECK(ldy >= w.n, "linear: output row stride {} < n {}", ldy, w.n);
  const LinearProblem p{x, m, ldx, &w, y, ldy};
  const BatchShape shape = shape_of(p);
  run_products(isa, bf16, kernel, {&p, 1}, {&shape, 1}, "linear");
}

void linear(const float* x, int64_t m, int64_t ldx, const Weight& w, float* y, int64_t ldy) {
  linear_with_isa(active_isa(), x, m, ldx, w, y, ldy);
}

namespace {

// Relative cost of one output column of a problem: reading its weight row (bytes, weighted as
// ~4 multiply-adds each, about the ratio of DRAM bandwidth to FMA throughput on 2 cores) plus
// its m * k multiply-adds. Only the split depends on it, never a result.
double column_cost(const BatchShape& p) {
  return double(p.k) * (4.0 * p.weight_bytes + double(p.m) + 2.0);
}

// A position in the problems' concatenated output columns: problem index, column.
struct ColumnPos {
  size_t p = 0;
  int64_t col = 0;
};

}  // namespace

void for_each_column_run(std::span<const BatchShape> shapes,
                         const std::function<void(size_t, int64_t, int64_t)>& run) {
  int64_t macs = 0;
  for (const BatchShape& p : shapes) macs += p.m * p.n * p.k;
  const int threads = ThreadPool::global().size();
  if (macs < kMinParallelMacs || threads == 1) {
    for (size_t i = 0; i < shapes.size(); ++i)
      if (shapes[i].m > 0) run(i, 0, shapes[i].n);
    return;
  }
  // Cut the concatenated columns into `threads` runs of about equal cost, at multiples of
  // kColumnGrain inside a problem; run r goes from bound(r) to bound(r + 1).
  std::vector<double> start(shapes.size() + 1, 0.0);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const BatchShape& p = shapes[i];
    start[i + 1] = start[i] + (p.m > 0 ? column_cost(p) * double(p.n) : 0.0);
  }
  const double total = start.back();
  const auto bound = [&](int r) -> ColumnPos {
    if (r <= 0) return {0, 0};
    if (r >= threads) return {shapes.size(), 0};
    const double target = total * double(r) / double(threads);
    size_t i = size_t(std::upper_bound(start.begin(), start.end(), target) - start.begin()) - 1;
    while (i < shapes.size() && shapes[i].m == 0) ++i;
    if (i >= shapes.size()) return {shapes.size(), 0};
    const BatchShape& p = shapes[i];
    const double cols = std::max(0.0, target - start[i]) / column_cost(p);
    int64_t col = (int64_t(cols + 0.5 * double(kColumnGrain)) / kColumnGrain) * kColumnGrain;
    if (col >= p.n) return {i + 1, 0};
    return {i, col};
  };
  parallel_for(threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const ColumnPos b = bound(int(r)), e = bound(int(r) + 1);
      for (size_t i = b.p; i <= e.p && i < shapes.size(); ++i) {
        if (shapes[i].m == 0) continue;
        const int64_t c0 = i == b.p ? b.col : 0, c1 = i == e.p ? e.col : shapes[i].n;
        if (c1 > c0) run(i, c0, c1);
      }
    }
  });
}

void linear_batch_with_isa(Isa isa, std::span<const LinearProblem> problems) {
  linear_batch_with_kernels(isa, bf16_gemm_kernel(), default_block_kernel(isa), problems);
}

void linear_batch_with_isa(Isa isa, Bf16Kernel bf16, std::span<const LinearProblem> problems) {
  linear_batch_with_kernels(isa, bf16, default_block_kernel(isa), problems);
}

void linear_batch_with_kernels(Isa isa, Bf16Kernel bf16, BlockKernel kernel,
                               std::span<const LinearProblem> problems) {
  std::vector<BatchShape> shapes(problems.size());
  for (size_t i = 0; i < problems.size(); ++i) {
    const LinearProblem& p = problems[i];
    FF_CHECK(p.m >= 0, "linear_batch: problem {}: negative row count {}", i, p.m);
    if (p.m == 0) continue;
    FF_CHECK(p.w != nullptr, "linear_batch: problem {} has no weight", i);
    validate(*p.w, "linear_batch");
    FF_CHECK(p.x != nullptr && p.y != nullptr, "linear_batch: problem {}: null input or output", i);
    FF_CHECK(p.ldx >= p.w->k, "linear_batch: problem {}: input row stride {} < k {}", i, p.ldx,
             p.w->k);
    FF_CHECK(p.ldy >= p.w->n, "linear_batch: problem {}: output row stride {} < n {}", i, p.ldy,
             p.w->n);
    shapes[i] = shape_of(p);
  }
  run_products(isa, bf16, kernel, problems, shapes, "linear_batch");
}

void linear_batch(std::span<const LinearProblem> problems) {
  linear_batch_with_isa(active_isa(), problems);
}

}  // namespace ff::gemm
