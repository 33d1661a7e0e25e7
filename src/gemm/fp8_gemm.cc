// DeepGEMM-style GEMMs (dense FP8 / BF16 in the four layouts, m-grouped contiguous and masked):
// validation, the scalar reference with DeepGEMM's two-level accumulation, and the fast path,
// which dequantizes A into fp32 rows and hands B to gemm::linear's kernels unchanged (B in its
// K-major storage is exactly a gemm::Weight: e4m3 bytes + 128x128 weight_scale_inv, or bf16),
// so the SIMD work (streaming for decode, packed panels for prefill) is the existing one.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/core.h"
#include "gemm/fp8_gemm_kernels.h"
#include "gemm/gemm.h"
#include "gemm/linear_kernels.h"

namespace ff::gemm {
namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::NT:
      return "nt";
    case Layout::NN:
      return "nn";
    case Layout::TN:
      return "tn";
    default:
      return "tt";
  }
}
bool a_k_major(Layout l) {
  return l == Layout::NT || l == Layout::NN;
}
bool b_k_major(Layout l) {
  return l == Layout::NT || l == Layout::TT;
}

// An operand resolved for one product: element (r, kk) at data[r * rs + kk * ks].
struct View {
  DType dtype;
  const uint8_t* bytes;
  int64_t rows, k, rs, ks;
  const float* scales;  // A: [rows, kb]; B: [ceil(rows/128), kb]
  bool block_rows;      // B (128x128) vs A (1x128)
  int64_t ld() const { return rs == 1 ? ks : rs; }
  float value(int64_t r, int64_t kk) const {
    const int64_t idx = r * rs + kk * ks;
    return dtype == DType::F8_E4M3 ? e4m3_table()[bytes[idx]]
                                   : bf16_to_f32(reinterpret_cast<const uint16_t*>(bytes)[idx]);
  }
  float scale(int64_t r, int64_t g) const {
    if (dtype != DType::F8_E4M3) return 1.f;
    const int64_t kb = ceil_div(k, kFp8Block);
    return scales[(block_rows ? r / kFp8Block : r) * kb + g];
  }
};

bool is_pow2(float v) {
  int e = 0;
  return v > 0.f && std::isfinite(v) && std::frexp(v, &e) == 0.5f;
}

// Validates one operand (rows x k logical, `k_major` storage) and returns its view.
// `groups` > 1: a grouped operand, whose every group's scales the ue8m0 check covers.
View check_operand(const char* fn, const char* name, const Matrix& x, DType dtype, bool k_major,
                   bool block_rows, const GemmOptions& opt, int64_t groups = 1) {
  FF_CHECK(x.dtype == dtype, "{}: {} has dtype {}, expected {}", fn, name, dtype_name(x.dtype),
           dtype_name(dtype));
  FF_CHECK(x.rows >= 0 && x.k > 0, "{}: {} has bad shape [{}, {}]", fn, name, x.rows, x.k);
  FF_CHECK(x.data != nullptr || x.rows == 0, "{}: {} has no data", fn, name);
  const int64_t inner = k_major ? x.k : x.rows;
  const int64_t ld = x.ld ? x.ld : inner;
  FF_CHECK(ld >= inner, "{}: {} leading dimension {} < {} ({}-major)", fn, name, ld, inner,
           k_major ? "K" : "MN");
  View v{dtype,
         static_cast<const uint8_t*>(x.data),
         x.rows,
         x.k,
         k_major ? ld : 1,
         k_major ? 1 : ld,
         x.scales,
         block_rows};
  if (dtype == DType::F8_E4M3) {
    FF_CHECK(x.scales != nullptr, "{}: FP8 {} has no scales", fn, name);
    const int64_t kb = ceil_div(x.k, kFp8Block);
    const int64_t sr = block_rows ? ceil_div(x.rows, kFp8Block) : x.rows;
    if (x.scale_rows || x.scale_cols)
      FF_CHECK(x.scale_rows == sr && x.scale_cols == kb,
               "{}: {} scales have shape [{}, {}], but {} [{}, {}] with {} scaling needs "
               "[{}, {}] (k must match the scales' 128-wide groups)",
               fn, name, x.scale_rows, x.scale_cols, name, x.rows, x.k,
               block_rows ? "128x128" : "1x128", sr, kb);
    if (opt.ue8m0) {
      const int64_t sgs = x.scale_group_stride ? x.scale_group_stride : sr * kb;
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t i = 0; i < sr * kb; ++i)
          FF_CHECK(is_pow2(x.scales[g * sgs + i]),
                   "{}: {} scale #{} of group {} = {} is not a power of two (ue8m0)", fn, name, i,
                   g, x.scales[g * sgs + i]);
    }
  } else {
    FF_CHECK(x.scales == nullptr, "{}: BF16 {} must not have scales", fn, name);
  }
  return v;
}

struct OutView {
  DType dtype;
  uint8_t* data;
  int64_t ld;
  const float* c;
  int64_t ldc;
  void store(int64_t i, int64_t j, float v) const {
    if (c) v += c[i * ldc + j];
    if (dtype == DType::F32)
      reinterpret_cast<float*>(data)[i * ld + j] = v;
    else
      reinterpret_cast<uint16_t*>(data)[i * ld + j] = f32_to_bf16(v);
  }
  OutView rows_from(int64_t i) const {
    return {dtype, data + i * ld * int64_t(dtype_size(dtype)), ld, c ? c + i * ldc : nullptr, ldc};
  }
};

OutView check_output(const char* fn, const Output& d, int64_t m, int64_t n) {
  FF_CHECK(d.dtype == DType::F32 || d.dtype == DType::BF16, "{}: D must be F32 or BF16, not {}", fn,
           dtype_name(d.dtype));
  FF_CHECK(d.data != nullptr || m == 0, "{}: D has no data", fn);
  const int64_t ld = d.ld ? d.ld : n, ldc = d.ldc ? d.ldc : n;
  FF_CHECK(ld >= n, "{}: D leading dimension {} < n {}", fn, ld, n);
  if (d.c) FF_CHECK(ldc >= n, "{}: C leading dimension {} < n {}", fn, ldc, n);
  return {d.dtype, static_cast<uint8_t*>(d.data), ld, d.c, ldc};
}

// ---- backends -----------------------------------------------------------------------------

// Reference: DeepGEMM's numerics in scalar code, output columns split over the pool.
void dense_ref(const View& a, const View& b, const OutView& d) {
  const int64_t m = a.rows, n = b.rows, k = a.k, kb = ceil_div(k, kFp8Block);
  parallel_for(
      n,
      [&](int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = 0; i < m; ++i) {
            float acc = 0.f;
            for (int64_t g = 0; g < kb; ++g) {
              float part = 0.f;
              for (int64_t kk = g * kFp8Block; kk < std::min(k, (g + 1) * kFp8Block); ++kk)
                part += a.value(i, kk) * b.value(j, kk);
              acc += part * (a.scale(i, g) * b.scale(j, g));
            }
            d.store(i, j, acc);
          }
      },
      8);
}

// Row i of A as fp32 with its 1x128 scales applied (the fast path's X).
void dequantize_a_row(const View& a, int64_t i, float* xr) {
  const int64_t k = a.k;
  if (a.dtype == DType::F8_E4M3) {
    const float* t = e4m3_table();
    for (int64_t g = 0; g * kFp8Block < k; ++g) {
      const float s = a.scale(i, g);
      const int64_t e = std::min(k, (g + 1) * kFp8Block);
      if (a.ks == 1)
        for (int64_t kk = g * kFp8Block; kk < e; ++kk) xr[kk] = t[a.bytes[i * a.rs + kk]] * s;
      else
        for (int64_t kk = g * kFp8Block; kk < e; ++kk) xr[kk] = a.value(i, kk) * s;
    }
  } else if (a.ks == 1) {
    convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(a.bytes) + i * a.rs, xr, size_t(k));
  } else {
    for (int64_t kk = 0; kk < k; ++kk) xr[kk] = a.value(i, kk);
  }
}

// B as a gemm::Weight: a K-major B already is one (e4m3 bytes + 128x128 scales, or bf16); an
// N-major B is first transposed to [n, k] into `scratch`.
Weight weight_of(const View& b, std::vector<uint8_t>& scratch) {
  Weight w;
  w.dtype = b.dtype;
  w.data = b.bytes;
  w.n = b.rows;
  w.k = b.k;
  w.ld = b.rs;
  w.scale_inv = b.dtype == DType::F8_E4M3 ? b.scales : nullptr;
  if (b.ks != 1) {
    const int64_t es = int64_t(dtype_size(b.dtype));
    scratch.resize(size_t(b.rows * b.k * es));
    for (int64_t kk = 0; kk < b.k; ++kk)
      for (int64_t j = 0; j < b.rows; ++j)
        std::memcpy(&scratch[size_t((j * b.k + kk) * es)], b.bytes + (kk * b.ks + j) * es,
                    size_t(es));
    w.data = scratch.data();
    w.ld = b.k;
  }
  return w;
}

// One expert's product in a grouped GEMM: A rows (a.rows of them), its K-major B, D rows.
struct GroupJob {
  View a, b;
  OutView d;
};

// FP8 jobs of at most kW8A8MaxRows rows run on the W8A8 kernel where the CPU has AVX512-FP16.
bool use_w8a8(Isa isa, const View& a) {
  return isa == Isa::Avx512 && a.dtype == DType::F8_E4M3 && a.rows <= kW8A8MaxRows &&
         cpu_features().avx512_fp16;
}

// f16 bits of every e4m3 value times kW8A8AScale (exact: e4m3's range and precision, times 8,
// fit in f16's).
const uint16_t* e4m3_f16_table() {
  static const auto table = [] {
    std::array<uint16_t, 256> t{};
    for (int i = 0; i < 256; ++i) t[size_t(i)] = f32_to_f16(e4m3_table()[i] * kW8A8AScale);
    return t;
  }();
  return table.data();
}

// The fast path, for one product (dense) or every expert's (grouped): A rows dequantized to fp32
// (A's 1x128 scale applied) in one parallel pass and all products in one linear_batch (one pool
// wake-up for all experts), B as a gemm::Weight (N-major B transposed first); FP8 jobs of few
// rows instead keep A in e4m3 (as f16 bits, scales apart) for the W8A8 kernel. Then C and the
// output rounding.
void fast_products(Isa isa, const std::vector<GroupJob>& jobs, int64_t n, int64_t k) {
  std::vector<int64_t> row0(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) row0[j + 1] = row0[j] + jobs[j].a.rows;
  const int64_t rows = row0.back();
  if (rows == 0) return;
  const int64_t kb = ceil_div(k, kFp8Block), lda16 = ceil_div(k, 32) * 32;
  std::vector<char> w8a8(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) w8a8[j] = use_w8a8(isa, jobs[j].a);
  // fp32 rows for the linear() jobs, f16 rows and scales for the W8A8 ones (sized for all rows,
  // used by their own jobs' rows only).
  std::vector<float> x, sa;
  std::vector<uint16_t> a16;
  if (std::find(w8a8.begin(), w8a8.end(), 0) != w8a8.end()) x.resize(size_t(rows * k));
  if (std::find(w8a8.begin(), w8a8.end(), 1) != w8a8.end()) {
    a16.assign(size_t(rows * lda16), 0);
    sa.resize(size_t(rows * kb));
  }
  const auto job_of = [&](int64_t r) {
    return size_t(std::upper_bound(row0.begin(), row0.end(), r) - row0.begin()) - 1;
  };
  const auto prepare = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const size_t j = job_of(r);
      const View& a = jobs[j].a;
      const int64_t i = r - row0[j];
      if (!w8a8[j]) {
        dequantize_a_row(a, i, x.data() + r * k);
        continue;
      }
      const uint16_t* t = e4m3_f16_table();
      for (int64_t kk = 0; kk < k; ++kk)
        a16[size_t(r * lda16 + kk)] = t[a.bytes[i * a.rs + kk * a.ks]];
      for (int64_t g = 0; g < kb; ++g) sa[size_t(r * kb + g)] = a.scale(i, g);
    }
  };
  if (rows * k >= (int64_t(1) << 16))
    parallel_for(rows, prepare, 1);
  else
    prepare(0, rows);
  bool direct = true;  // every D is F32 without C: the products write D itself
  for (const GroupJob& g : jobs) direct = direct && g.d.dtype == DType::F32 && g.d.c == nullptr;
  std::vector<float> y(direct ? 0 : size_t(rows * n));
  std::vector<Weight> w(jobs.size());
  std::vector<LinearProblem> problems;
  std::vector<W8A8Rows> w8a8_problems;
  std::vector<BatchShape> w8a8_shapes;
  std::vector<std::vector<uint8_t>> transposed(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    w[j] = weight_of(jobs[j].b, transposed[j]);  // N-major B (the "nn" form) is transposed
    float* yj = direct ? reinterpret_cast<float*>(jobs[j].d.data) : y.data() + row0[j] * n;
    const int64_t ldy = direct ? jobs[j].d.ld : n;
    if (w8a8[j]) {
      w8a8_problems.push_back({a16.data() + row0[j] * lda16, jobs[j].a.rows, lda16,
                               sa.data() + row0[j] * kb, &w[j], yj, ldy});
      w8a8_shapes.push_back({jobs[j].a.rows, n, k, 1.0});
    } else {
      problems.push_back({x.data() + row0[j] * k, jobs[j].a.rows, k, &w[j], yj, ldy});
    }
  }
  if (!problems.empty()) linear_batch_with_isa(isa, problems);
  if (!w8a8_problems.empty())
    for_each_column_run(w8a8_shapes, [&](size_t i, int64_t c0, int64_t c1) {
      w8a8_f16_rows(w8a8_problems[i], c0, c1);
    });
  if (direct) return;
  const auto epilogue = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const size_t j = job_of(r);
      for (int64_t c = 0; c < n; ++c) jobs[j].d.store(r - row0[j], c, y[size_t(r * n + c)]);
    }
  };
  if (rows * n >= (int64_t(1) << 16))
    parallel_for(rows, epilogue, 1);
  else
    epilogue(0, rows);
}

void dense(Isa isa, const View& a, const View& b, const OutView& d) {
  FF_CHECK(int(isa) <= int(best_isa()), "gemm: backend {} not supported by this CPU",
           isa_name(isa));
  if (a.rows == 0) return;
  if (isa == Isa::Scalar)
    dense_ref(a, b, d);
  else
    fast_products(isa, {GroupJob{a, b, d}}, b.rows, a.k);
}

const char* prefix(DType dtype) {
  return dtype == DType::F8_E4M3 ? "fp8" : "bf16";
}

}  // namespace

void gemm_with_isa(Isa isa, Layout layout, DType dtype, const Matrix& a, const Matrix& b,
                   const Output& d, const GemmOptions& opt) {
  char fn[48];
  std::snprintf(fn, sizeof fn, "%s_gemm_%s", prefix(dtype), layout_name(layout));
  const View av = check_operand(fn, "A", a, dtype, a_k_major(layout), false, opt);
  const View bv = check_operand(fn, "B", b, dtype, b_k_major(layout), true, opt);
  FF_CHECK(a.k == b.k, "{}: A is [{}, {}] but B is [{}, {}] (k differs)", fn, a.rows, a.k, b.rows,
           b.k);
  FF_CHECK(b.rows > 0, "{}: B has no rows", fn);
  const OutView dv = check_output(fn, d, a.rows, b.rows);
  dense(isa, av, bv, dv);
}

void m_grouped_contiguous_with_isa(Isa isa, DType dtype, const Matrix& a, const Matrix& b,
                                   int64_t num_groups, const int32_t* m_indices, const Output& d,
                                   const GemmOptions& opt, bool b_k_major) {
  char fn[64];
  std::snprintf(fn, sizeof fn, "m_grouped_%s_gemm_%s_contiguous", prefix(dtype),
                b_k_major ? "nt" : "nn");
  FF_CHECK(num_groups > 0, "{}: num_groups {} must be positive", fn, num_groups);
  FF_CHECK(a.group_stride == 0 && a.scale_group_stride == 0, "{}: A is not grouped", fn);
  const View av = check_operand(fn, "A", a, dtype, true, false, opt);
  const View b0 = check_operand(fn, "B", b, dtype, b_k_major, true, opt, num_groups);
  FF_CHECK(a.k == b.k, "{}: A is [{}, {}] but B is [G, {}, {}] (k differs)", fn, a.rows, a.k,
           b.rows, b.k);
  FF_CHECK(b.rows > 0, "{}: B has no rows", fn);
  const OutView dv = check_output(fn, d, a.rows, b.rows);
  const int64_t m = a.rows, n = b.rows, kb = ceil_div(b.k, kFp8Block);
  FF_CHECK(m % kFp8Block == 0,
           "{}: m_sum {} is not a multiple of the contiguous-layout alignment {}", fn, m,
           kFp8Block);
  FF_CHECK(m == 0 || m_indices != nullptr, "{}: no m_indices", fn);
  for (int64_t blk = 0; blk < m; blk += kFp8Block) {
    int32_t id = -1;
    for (int64_t i = blk; i < blk + kFp8Block; ++i) {
      const int32_t e = m_indices[i];
      FF_CHECK(e >= -1 && e < num_groups, "{}: m_indices[{}] = {} is out of range [-1, {})", fn, i,
               e, num_groups);
      if (e < 0) continue;
      FF_CHECK(id < 0 || e == id,
               "{}: rows {}..{} mix experts {} and {}: each 128-row block must hold one "
               "expert's rows (and -1 padding)",
               fn, blk, blk + kFp8Block - 1, id, e);
      id = e;
    }
  }
  const int64_t gs = b.group_stride ? b.group_stride : (b_k_major ? n : b.k) * b0.ld();
  const int64_t sgs = b.scale_group_stride ? b.scale_group_stride : ceil_div(n, kFp8Block) * kb;
  const int64_t es = int64_t(dtype_size(dtype));
  std::vector<GroupJob> jobs;
  for (int64_t i = 0; i < m;) {
    const int32_t id = m_indices[i];
    int64_t e = i + 1;
    while (e < m && m_indices[e] == id) ++e;
    const OutView dr = dv.rows_from(i);
    if (id < 0) {
      for (int64_t r = 0; r < e - i; ++r)
        std::memset(dr.data + r * dr.ld * int64_t(dtype_size(dr.dtype)), 0,
                    size_t(n) * dtype_size(dr.dtype));
    } else {
      View as = av;
      as.rows = e - i;
      as.bytes += i * av.rs * es;
      if (dtype == DType::F8_E4M3) as.scales += i * kb;
      View bs = b0;
      bs.bytes += id * gs * es;
      if (dtype == DType::F8_E4M3) bs.scales += id * sgs;
      if (isa == Isa::Scalar)
        dense(isa, as, bs, dr);
      else
        jobs.push_back({as, bs, dr});
    }
    i = e;
  }
  if (!jobs.empty()) fast_products(isa, jobs, n, b.k);
}

void m_grouped_masked_with_isa(Isa isa, DType dtype, const Matrix& a, const Matrix& b,
                               int64_t num_groups, const int32_t* masked_m, const Output& d,
                               const GemmOptions& opt) {
  char fn[64];
  std::snprintf(fn, sizeof fn, "m_grouped_%s_gemm_nt_masked", prefix(dtype));
  FF_CHECK(num_groups > 0, "{}: num_groups {} must be positive", fn, num_groups);
  FF_CHECK(masked_m != nullptr, "{}: no masked_m", fn);
  const View a0 = check_operand(fn, "A", a, dtype, true, false, opt, num_groups);
  const View b0 = check_operand(fn, "B", b, dtype, true, true, opt, num_groups);
  FF_CHECK(a.k == b.k, "{}: A is [G, {}, {}] but B is [G, {}, {}] (k differs)", fn, a.rows, a.k,
           b.rows, b.k);
  FF_CHECK(b.rows > 0, "{}: B has no rows", fn);
  const OutView dv = check_output(fn, d, a.rows, b.rows);
  const int64_t max_m = a.rows, n = b.rows, kb = ceil_div(b.k, kFp8Block);
  for (int64_t g = 0; g < num_groups; ++g)
    FF_CHECK(masked_m[g] >= 0 && masked_m[g] <= max_m,
             "{}: masked_m[{}] = {} is outside [0, max_m = {}]", fn, g, masked_m[g], max_m);
  const int64_t es = int64_t(dtype_size(dtype));
  const int64_t ags = a.group_stride ? a.group_stride : max_m * a0.ld();
  const int64_t asgs = a.scale_group_stride ? a.scale_group_stride : max_m * kb;
  const int64_t bgs = b.group_stride ? b.group_stride : n * b0.ld();
  const int64_t bsgs = b.scale_group_stride ? b.scale_group_stride : ceil_div(n, kFp8Block) * kb;
  std::vector<GroupJob> jobs;
  for (int64_t g = 0; g < num_groups; ++g) {
    if (masked_m[g] == 0) continue;
    View as = a0;
    as.rows = masked_m[g];
    as.bytes += g * ags * es;
    View bs = b0;
    bs.bytes += g * bgs * es;
    if (dtype == DType::F8_E4M3) {
      as.scales += g * asgs;
      bs.scales += g * bsgs;
    }
    if (isa == Isa::Scalar)
      dense(isa, as, bs, dv.rows_from(g * max_m));
    else
      jobs.push_back({as, bs, dv.rows_from(g * max_m)});
  }
  if (!jobs.empty()) fast_products(isa, jobs, n, b.k);
}

void k_grouped_with_isa(Isa isa, DType dtype, const void* a_data, const float* sfa, int64_t m,
                        const void* b_data, const float* sfb, int64_t n, const int64_t* ks,
                        int64_t num_groups, float* d, const float* c) {
  const bool fp8 = dtype == DType::F8_E4M3;
  const char* fn = fp8 ? "k_grouped_fp8_gemm_tn_contiguous" : "k_grouped_bf16_gemm_tn_contiguous";
  FF_CHECK(fp8 || dtype == DType::BF16, "{}: dtype {} is neither F8_E4M3 nor BF16", fn,
           dtype_name(dtype));
  FF_CHECK(num_groups > 0 && m > 0 && n > 0, "{}: bad shape: {} groups, m {}, n {}", fn, num_groups,
           m, n);
  FF_CHECK(ks != nullptr && d != nullptr, "{}: null ks or D", fn);
  int64_t sum_k = 0;
  for (int64_t g = 0; g < num_groups; ++g) {
    if (fp8)
      FF_CHECK(ks[g] >= 0 && ks[g] % kFp8Block == 0,
               "{}: ks[{}] = {} is not a non-negative multiple of {} (1D1D scaling groups k by "
               "128)",
               fn, g, ks[g], kFp8Block);
    else
      FF_CHECK(ks[g] >= 0, "{}: ks[{}] = {} is negative", fn, g, ks[g]);
    sum_k += ks[g];
  }
  FF_CHECK(sum_k == 0 || (a_data && b_data && (!fp8 || (sfa && sfb))), "{}: null A, B or scales",
           fn);
  FF_CHECK(int(isa) <= int(best_isa()), "{}: backend {} not supported by this CPU", fn,
           isa_name(isa));
  const float* t = e4m3_table();
  const auto* a8 = static_cast<const uint8_t*>(a_data);
  const auto* b8 = static_cast<const uint8_t*>(b_data);
  const auto* a16 = static_cast<const uint16_t*>(a_data);
  const auto* b16 = static_cast<const uint16_t*>(b_data);
  // Element kk (absolute k) of column r of an operand with `cols` columns, unscaled.
  // (Pointers picked into locals first: GCC 12 with -fsanitize=undefined miscompiles a
  // subscript of a conditional pointer expression, `(c ? p : q)[i]`, inside these lambdas.)
  const auto val = [&](bool is_a, int64_t kk, int64_t r, int64_t cols) {
    const int64_t idx = kk * cols + r;
    if (fp8) {
      const uint8_t* src = is_a ? a8 : b8;
      return t[src[idx]];
    }
    const uint16_t* src = is_a ? a16 : b16;
    return bf16_to_f32(src[idx]);
  };
  // Its scale: the 1D1D per-(128 k, column) scale for FP8, 1 for BF16.
  const auto scale = [&](bool is_a, int64_t kk, int64_t r, int64_t cols) {
    const float* sf = is_a ? sfa : sfb;
    return fp8 ? sf[(kk / kFp8Block) * cols + r] : 1.f;
  };
  int64_t k0 = 0;
  for (int64_t g = 0; g < num_groups; ++g) {
    const int64_t kg = ks[g];
    float* dg = d + g * m * n;
    const float* cg = c ? c + g * m * n : nullptr;
    if (isa == Isa::Scalar) {
      // Per 128 k: an fp32 partial of the raw products, times the two scales (DeepGEMM's
      // promotion; BF16 has no scales, so this is a plain k-ordered fp32 sum in 128-blocks).
      parallel_for(
          n,
          [&](int64_t j0, int64_t j1) {
            for (int64_t j = j0; j < j1; ++j)
              for (int64_t i = 0; i < m; ++i) {
                float acc = 0.f;
                for (int64_t blk = 0; blk * kFp8Block < kg; ++blk) {
                  float part = 0.f;
                  const int64_t b0 = k0 + blk * kFp8Block;
                  const int64_t b1 = std::min(k0 + kg, b0 + kFp8Block);
                  for (int64_t kk = b0; kk < b1; ++kk)
                    part += val(true, kk, i, m) * val(false, kk, j, n);
                  acc += part * (scale(true, b0, i, m) * scale(false, b0, j, n));
                }
                dg[i * n + j] = (cg ? cg[i * n + j] : 0.f) + acc;
              }
          },
          8);
    } else if (kg == 0) {
      for (int64_t i = 0; i < m * n; ++i) dg[i] = cg ? cg[i] : 0.f;
    } else {
      // Both operands dequantized and transposed to K-major fp32 ([m, k_g] and [n, k_g]); the
      // product is gemm::linear's with an F32 weight.
      std::vector<float> x(size_t(m * kg)), w(size_t(n * kg));
      const auto deq = [&](bool is_a, int64_t rows, float* out) {
        parallel_for(
            rows,
            [&](int64_t r0, int64_t r1) {
              for (int64_t r = r0; r < r1; ++r)
                for (int64_t kk = 0; kk < kg; ++kk)
                  out[r * kg + kk] = val(is_a, k0 + kk, r, rows) * scale(is_a, k0 + kk, r, rows);
            },
            16);
      };
      deq(true, m, x.data());
      deq(false, n, w.data());
      Weight wt;
      wt.dtype = DType::F32;
      wt.data = w.data();
      wt.n = n;
      wt.k = kg;
      wt.ld = kg;
      if (cg == nullptr) {
        linear_with_isa(isa, x.data(), m, kg, wt, dg, n);
      } else {
        std::vector<float> y(size_t(m * n));
        linear_with_isa(isa, x.data(), m, kg, wt, y.data(), n);
        for (int64_t i = 0; i < m * n; ++i) dg[i] = cg[i] + y[size_t(i)];
      }
    }
    k0 += kg;
  }
}

// ---- public entry points ------------------------------------------------------------------

void fp8_gemm_nt(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt) {
  gemm_with_isa(active_isa(), Layout::NT, DType::F8_E4M3, a, b, d, opt);
}
void fp8_gemm_nn(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt) {
  gemm_with_isa(active_isa(), Layout::NN, DType::F8_E4M3, a, b, d, opt);
}
void fp8_gemm_tn(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt) {
  gemm_with_isa(active_isa(), Layout::TN, DType::F8_E4M3, a, b, d, opt);
}
void fp8_gemm_tt(const Matrix& a, const Matrix& b, const Output& d, const GemmOptions& opt) {
  gemm_with_isa(active_isa(), Layout::TT, DType::F8_E4M3, a, b, d, opt);
}
void bf16_gemm_nt(const Matrix& a, const Matrix& b, const Output& d) {
  gemm_with_isa(active_isa(), Layout::NT, DType::BF16, a, b, d, {});
}
void bf16_gemm_nn(const Matrix& a, const Matrix& b, const Output& d) {
  gemm_with_isa(active_isa(), Layout::NN, DType::BF16, a, b, d, {});
}
void bf16_gemm_tn(const Matrix& a, const Matrix& b, const Output& d) {
  gemm_with_isa(active_isa(), Layout::TN, DType::BF16, a, b, d, {});
}
void bf16_gemm_tt(const Matrix& a, const Matrix& b, const Output& d) {
  gemm_with_isa(active_isa(), Layout::TT, DType::BF16, a, b, d, {});
}

void m_grouped_fp8_gemm_nt_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                      const int32_t* m_indices, const Output& d,
                                      const GemmOptions& opt) {
  m_grouped_contiguous_with_isa(active_isa(), DType::F8_E4M3, a, b, num_groups, m_indices, d, opt,
                                true);
}
void m_grouped_fp8_gemm_nn_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                      const int32_t* m_indices, const Output& d,
                                      const GemmOptions& opt) {
  m_grouped_contiguous_with_isa(active_isa(), DType::F8_E4M3, a, b, num_groups, m_indices, d, opt,
                                false);
}
void m_grouped_bf16_gemm_nt_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                       const int32_t* m_indices, const Output& d) {
  m_grouped_contiguous_with_isa(active_isa(), DType::BF16, a, b, num_groups, m_indices, d, {},
                                true);
}
void m_grouped_bf16_gemm_nn_contiguous(const Matrix& a, const Matrix& b, int64_t num_groups,
                                       const int32_t* m_indices, const Output& d) {
  m_grouped_contiguous_with_isa(active_isa(), DType::BF16, a, b, num_groups, m_indices, d, {},
                                false);
}
void m_grouped_fp8_gemm_nt_masked(const Matrix& a, const Matrix& b, int64_t num_groups,
                                  const int32_t* masked_m, int64_t /*expected_m*/, const Output& d,
                                  const GemmOptions& opt) {
  m_grouped_masked_with_isa(active_isa(), DType::F8_E4M3, a, b, num_groups, masked_m, d, opt);
}
void m_grouped_bf16_gemm_nt_masked(const Matrix& a, const Matrix& b, int64_t num_groups,
                                   const int32_t* masked_m, int64_t /*expected_m*/,
                                   const Output& d) {
  m_grouped_masked_with_isa(active_isa(), DType::BF16, a, b, num_groups, masked_m, d, {});
}

void k_grouped_fp8_gemm_tn_contiguous(const uint8_t* a, const float* sfa, int64_t m,
                                      const uint8_t* b, const float* sfb, int64_t n,
                                      const int64_t* ks, int64_t num_groups, float* d,
                                      const float* c) {
  k_grouped_with_isa(active_isa(), DType::F8_E4M3, a, sfa, m, b, sfb, n, ks, num_groups, d, c);
}
void k_grouped_bf16_gemm_tn_contiguous(const uint16_t* a, int64_t m, const uint16_t* b, int64_t n,
                                       const int64_t* ks, int64_t num_groups, float* d,
                                       const float* c) {
  k_grouped_with_isa(active_isa(), DType::BF16, a, nullptr, m, b, nullptr, n, ks, num_groups, d, c);
}

}  // namespace ff::gemm
