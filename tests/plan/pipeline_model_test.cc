// The executor's toy model: the matmul against a naive loop (bit for bit), GELU against
// Python's erf, and the hand-written backward against float64 central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "plan/pipeline_kernels.h"
#include "plan/plan.h"

namespace ff::plan {
namespace {

template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<T> v(n);
  for (T& x : v) x = T(u(gen));
  return v;
}

// The operation sequence matmul promises: acc = 0, then acc += a(i,p) * b(p,j) for ascending p.
template <typename T>
void naive_matmul(const T* a, ptrdiff_t rs, ptrdiff_t cs, const T* b, T* c, int m, int n, int k) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      T acc = 0;
      for (int p = 0; p < k; ++p) acc += a[i * rs + p * cs] * b[ptrdiff_t(p) * n + j];
      c[ptrdiff_t(i) * n + j] = acc;
    }
}

template <typename T>
void expect_matmul_matches_naive(int m, int n, int k, bool transposed_a) {
  const auto a = random_vector<T>(size_t(m) * k, 1);
  const auto b = random_vector<T>(size_t(k) * n, 2);
  std::vector<T> got(size_t(m) * n, T(7)), want(size_t(m) * n);
  const ptrdiff_t rs = transposed_a ? 1 : k, cs = transposed_a ? m : 1;
  matmul(a.data(), rs, cs, b.data(), got.data(), m, n, k);
  naive_matmul(a.data(), rs, cs, b.data(), want.data(), m, n, k);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], want[i]) << "m=" << m << " n=" << n << " k=" << k << " at " << i;
}

// Row, column and depth tails, several column and depth blocks, a transposed a: the same bits as
// the plain loop, so the tiling never changes a result.
TEST(PipelineKernels, MatmulIsBitIdenticalToTheNaiveLoop) {
  for (bool t : {false, true})
    for (auto [m, n, k] :
         {std::tuple{1, 1, 1}, {4, 8, 3}, {5, 13, 7}, {7, 300, 513}, {9, 520, 40}, {3, 4, 0}}) {
      expect_matmul_matches_naive<float>(m, n, k, t);
      expect_matmul_matches_naive<double>(m, n, k, t);
    }
}

// The exact (erf) form torch's gelu uses by default, not the tanh approximation.
TEST(PipelineKernels, GeluIsTheErfForm) {
  // 0.5 * x * (1 + math.erf(x / math.sqrt(2))) in Python (float64)
  const double x[] = {-2.0, -0.5, 0.0, 1.0, 3.0};
  const double want[] = {-0.04550026389635842, -0.15426876936299344, 0.0, 0.8413447460685429,
                         2.99595030590511};
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(gelu(x[i]), want[i], 1e-15) << x[i];
    EXPECT_NEAR(gelu(float(x[i])), float(want[i]), 1e-6) << x[i];
  }
  for (double v : {-3.0, -1.0, -0.1, 0.0, 0.7, 2.5}) {
    const double eps = 1e-6;
    EXPECT_NEAR(gelu_grad(v), (gelu(v + eps) - gelu(v - eps)) / (2 * eps), 1e-9) << v;
  }
}

// d/dp of f by central differences, perturbing p in place.
double central_difference(const std::function<double()>& f, double& p) {
  const double eps = 1e-6, saved = p;
  p = saved + eps;
  const double up = f();
  p = saved - eps;
  const double down = f();
  p = saved;
  return (up - down) / (2 * eps);
}

// A tiny stage (H = 3, 5 rows) under the loss sum(y * r): dy = r, and every grad the split
// backward computes (dx, g_w1, g_w2) matches float64 central differences.
TEST(PipelineModel, BackwardMatchesFiniteDifferences) {
  const int H = 3, F = 12, rows = 5;
  MlpStage<double> s = MlpStage<double>::init(H, 7, 0);
  std::vector<double> x = random_vector<double>(size_t(rows) * H, 3);
  const std::vector<double> r = random_vector<double>(size_t(rows) * H, 4);
  std::vector<double> h(size_t(rows) * F), a(h.size()), y(x.size());
  const auto loss = [&] {
    stage_forward(s, x.data(), rows, h.data(), a.data(), y.data());
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * r[i];
    return l;
  };
  loss();
  std::vector<double> dh(h.size()), dx(x.size());
  stage_backward_input(s, h.data(), r.data(), rows, dh.data(), dx.data());
  stage_backward_weight(s, x.data(), a.data(), dh.data(), r.data(), rows);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx[i], central_difference(loss, x[i]), 1e-8) << "dx " << i;
  for (size_t i = 0; i < s.w1.size(); ++i)
    EXPECT_NEAR(s.g_w1[i], central_difference(loss, s.w1[i]), 1e-8) << "g_w1 " << i;
  for (size_t i = 0; i < s.w2.size(); ++i)
    EXPECT_NEAR(s.g_w2[i], central_difference(loss, s.w2[i]), 1e-8) << "g_w2 " << i;
}

TEST(PipelineModel, MseGradMatchesFiniteDifferences) {
  std::vector<double> y = random_vector<double>(6, 5);
  const std::vector<double> label = random_vector<double>(6, 6);
  std::vector<double> dy(6);
  mse_loss_grad(y.data(), label.data(), 6, dy.data());
  for (size_t i = 0; i < y.size(); ++i)
    EXPECT_NEAR(
        dy[i], central_difference([&] { return mse_loss(y.data(), label.data(), 6); }, y[i]), 1e-9);
}

// Weights depend on (seed, stage) only and follow nn.Linear's bound; data on (seed, chunk) only.
TEST(PipelineModel, InitIsKeyedBySeedAndStage) {
  const auto a = MlpStage<float>::init(8, 233, 1), b = MlpStage<float>::init(8, 233, 1);
  const auto c = MlpStage<float>::init(8, 233, 2), d = MlpStage<float>::init(8, 234, 1);
  EXPECT_EQ(a.w1, b.w1);
  EXPECT_EQ(a.w2, b.w2);
  EXPECT_NE(a.w1, c.w1);
  EXPECT_NE(a.w1, d.w1);
  for (float w : a.w1) EXPECT_LE(std::fabs(w), 1 / std::sqrt(8.f));
  for (float w : a.w2) EXPECT_LE(std::fabs(w), 1 / std::sqrt(32.f));
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 32; ++j) EXPECT_EQ(a.w1[i * 32 + j], a.w1t[j * 8 + i]);

  PipelineModelConfig cfg{.hidden = 4, .seq = 3, .micro_batch = 2, .seed = 1};
  std::vector<double> x0(cfg.activation_size()), x0b(x0.size()), x1(x0.size()), l0(x0.size());
  chunk_input(cfg, 0, x0.data());
  chunk_input(cfg, 0, x0b.data());
  chunk_input(cfg, 1, x1.data());
  chunk_label(cfg, 0, l0.data());
  EXPECT_EQ(x0, x0b);
  EXPECT_NE(x0, x1);
  EXPECT_NE(x0, l0);
}

// The reference equals running the stages by hand, and forward-only leaves the grads at zero.
TEST(PipelineModel, ReferenceStep) {
  PipelineModelConfig cfg{.hidden = 4, .seq = 2, .micro_batch = 3, .seed = 9};
  const auto train = reference_step<double>(cfg, 3, 2, false);
  const auto infer = reference_step<double>(cfg, 3, 2, true);
  ASSERT_EQ(train.losses.size(), 2u);
  EXPECT_EQ(train.losses, infer.losses);
  EXPECT_EQ(train.outputs, infer.outputs);
  for (const auto& s : infer.stages)
    for (double g : s.g_w1) EXPECT_EQ(g, 0);
  double norm = 0;
  for (const auto& s : train.stages)
    for (double g : s.g_w2) norm += g * g;
  EXPECT_GT(norm, 0);

  const size_t n = cfg.activation_size();
  std::vector<double> x(n), h(n * 4), a(n * 4), y(n), label(n);
  chunk_input(cfg, 1, x.data());
  for (const auto& s : train.stages) {
    stage_forward(s, x.data(), cfg.rows(), h.data(), a.data(), y.data());
    x = y;
  }
  chunk_label(cfg, 1, label.data());
  EXPECT_EQ(train.outputs[1], y);
  EXPECT_EQ(train.losses[1], mse_loss(y.data(), label.data(), n));
}

}  // namespace
}  // namespace ff::plan
