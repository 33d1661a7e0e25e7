// The fp32-activation grouped layouts (m_grouped_linear_contiguous / _masked): checks, then one
// linear_batch over the experts that have rows.
#include <algorithm>
#include <vector>

#include "core/core.h"
#include "gemm/gemm.h"

namespace ff::gemm {
namespace {

void check_experts(const char* fn, std::span<const Weight> experts) {
  FF_CHECK(!experts.empty(), "{}: no experts", fn);
  for (size_t g = 0; g < experts.size(); ++g) {
    validate(experts[g], fn);
    FF_CHECK(experts[g].n == experts[0].n && experts[g].k == experts[0].k,
             "{}: expert {} is [{}, {}] but expert 0 is [{}, {}] (experts must share a shape)", fn,
             g, experts[g].n, experts[g].k, experts[0].n, experts[0].k);
  }
}

}  // namespace

void m_grouped_linear_contiguous(const float* x, int64_t m_sum, int64_t ldx,
                                 const int32_t* m_indices, std::span<const Weight> experts,
                                 float* y, int64_t ldy) {
  const char* fn = "m_grouped_linear_contiguous";
  FF_CHECK(m_sum >= 0, "{}: negative m_sum {}", fn, m_sum);
  check_experts(fn, experts);
  if (m_sum == 0) return;
  const int64_t n = experts[0].n, k = experts[0].k, G = int64_t(experts.size());
  FF_CHECK(x != nullptr && y != nullptr && m_indices != nullptr, "{}: null X, Y or m_indices", fn);
  FF_CHECK(ldx >= k && ldy >= n, "{}: row strides ldx {} / ldy {} below k {} / n {}", fn, ldx, ldy,
           k, n);
  for (int64_t i = 0; i < m_sum; ++i)
    FF_CHECK(m_indices[i] >= -1 && m_indices[i] < G,
             "{}: m_indices[{}] = {} is out of range [-1, {})", fn, i, m_indices[i], G);
  std::vector<LinearProblem> problems;
  for (int64_t i = 0; i < m_sum;) {
    const int32_t id = m_indices[i];
    int64_t e = i + 1;
    while (e < m_sum && m_indices[e] == id) ++e;
    if (id < 0) {
      for (int64_t r = i; r < e; ++r) std::fill(y + r * ldy, y + r * ldy + n, 0.f);
    } else {
      problems.push_back({x + i * ldx, e - i, ldx, &experts[size_t(id)], y + i * ldy, ldy});
    }
    i = e;
  }
  linear_batch(problems);
}

void m_grouped_linear_masked(const float* x, int64_t max_m, int64_t ldx,
                             std::span<const Weight> experts, const int32_t* masked_m, float* y,
                             int64_t ldy) {
  const char* fn = "m_grouped_linear_masked";
  FF_CHECK(max_m >= 0, "{}: negative max_m {}", fn, max_m);
  check_experts(fn, experts);
  FF_CHECK(masked_m != nullptr, "{}: no masked_m", fn);
  const int64_t n = experts[0].n, k = experts[0].k;
  for (size_t g = 0; g < experts.size(); ++g)
    FF_CHECK(masked_m[g] >= 0 && masked_m[g] <= max_m,
             "{}: masked_m[{}] = {} is outside [0, max_m = {}]", fn, g, masked_m[g], max_m);
  if (max_m == 0) return;
  FF_CHECK(x != nullptr && y != nullptr, "{}: null X or Y", fn);
  FF_CHECK(ldx >= k && ldy >= n, "{}: row strides ldx {} / ldy {} below k {} / n {}", fn, ldx, ldy,
           k, n);
  std::vector<LinearProblem> problems;
  for (size_t g = 0; g < experts.size(); ++g)
    if (masked_m[g] > 0)
      problems.push_back({x + int64_t(g) * max_m * ldx, masked_m[g], ldx, &experts[g],
                          y + int64_t(g) * max_m * ldy, ldy});
  linear_batch(problems);
}

}  // namespace ff::gemm
