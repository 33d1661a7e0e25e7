#include "plan/pipeline_model.h"

#include <cmath>

#include "core/error.h"
#include "plan/pipeline_kernels.h"

namespace ff::plan {
namespace {

// splitmix64: a counter-based stream per (seed, purpose, index), so any rank can draw any
// stage's weights or any chunk's data without drawing the others first.
class Stream {
 public:
  Stream(uint64_t seed, uint64_t purpose, uint64_t index)
      : state_(mix(seed ^ mix(purpose * 0x9E3779B97F4A7C15ull + index))) {}
  uint64_t next() { return mix(state_ += 0x9E3779B97F4A7C15ull); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

enum Purpose : uint64_t { kW1 = 1, kW2 = 2, kInput = 3, kLabel = 4 };

template <typename T>
void fill_uniform(Stream s, double bound, std::vector<T>& out) {
  for (T& v : out) v = T((2 * s.uniform() - 1) * bound);
}

// Box-Muller, both values of each pair used.
template <typename T>
void fill_normal(Stream s, T* out, size_t n) {
  for (size_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2 * std::log(1 - s.uniform()));
    const double theta = 2 * M_PI * s.uniform();
    out[i] = T(r * std::cos(theta));
    if (i + 1 < n) out[i + 1] = T(r * std::sin(theta));
  }
}

template <typename T>
std::vector<T> transpose(const std::vector<T>& w, int rows, int cols) {
  std::vector<T> t(w.size());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) t[size_t(j) * rows + i] = w[size_t(i) * cols + j];
  return t;
}

}  // namespace

template <typename T>
MlpStage<T> MlpStage<T>::init(int hidden, uint64_t seed, int stage) {
  FF_CHECK(hidden >= 1, "hidden size must be at least 1, got {}", hidden);
  MlpStage s;
  s.hidden = hidden;
  const size_t n = size_t(hidden) * 4 * hidden;
  s.w1.resize(n);
  s.w2.resize(n);
  fill_uniform(Stream(seed, kW1, uint64_t(stage)), 1 / std::sqrt(double(hidden)), s.w1);
  fill_uniform(Stream(seed, kW2, uint64_t(stage)), 1 / std::sqrt(4.0 * hidden), s.w2);
  s.w1t = transpose(s.w1, hidden, 4 * hidden);
  s.w2t = transpose(s.w2, 4 * hidden, hidden);
  s.g_w1.assign(n, T(0));
  s.g_w2.assign(n, T(0));
  s.scratch.assign(n, T(0));
  return s;
}

template <typename T>
void MlpStage<T>::zero_grads() {
  std::fill(g_w1.begin(), g_w1.end(), T(0));
  std::fill(g_w2.begin(), g_w2.end(), T(0));
}

template <typename T>
void stage_forward(const MlpStage<T>& s, const T* x, int rows, T* h, T* a, T* y) {
  const int H = s.hidden, F = 4 * s.hidden;
  matmul(x, H, 1, s.w1.data(), h, rows, F, H);
  for (size_t i = 0; i < size_t(rows) * F; ++i) a[i] = gelu(h[i]);
  matmul(a, F, 1, s.w2.data(), y, rows, H, F);
}

template <typename T>
void stage_backward_input(const MlpStage<T>& s, const T* h, const T* dy, int rows, T* dh, T* dx) {
  const int H = s.hidden, F = 4 * s.hidden;
  matmul(dy, H, 1, s.w2t.data(), dh, rows, F, H);
  for (size_t i = 0; i < size_t(rows) * F; ++i) dh[i] *= gelu_grad(h[i]);
  if (dx) matmul(dh, F, 1, s.w1t.data(), dx, rows, H, F);
}

template <typename T>
void stage_backward_weight(MlpStage<T>& s, const T* x, const T* a, const T* dh, const T* dy,
                           int rows) {
  const int H = s.hidden, F = 4 * s.hidden;
  const size_t n = size_t(H) * F;
  // g_w2 [F, H] += a^T [F, rows] dy [rows, H]: a read transposed.
  matmul(a, 1, F, dy, s.scratch.data(), F, H, rows);
  for (size_t i = 0; i < n; ++i) s.g_w2[i] += s.scratch[i];
  // g_w1 [H, F] += x^T [H, rows] dh [rows, F].
  matmul(x, 1, H, dh, s.scratch.data(), H, F, rows);
  for (size_t i = 0; i < n; ++i) s.g_w1[i] += s.scratch[i];
}

template <typename T>
T mse_loss(const T* y, const T* label, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(y[i]) - double(label[i]);
    sum += d * d;
  }
  return T(sum / double(n));
}

template <typename T>
void mse_loss_grad(const T* y, const T* label, size_t n, T* dy) {
  const T scale = T(2.0 / double(n));
  for (size_t i = 0; i < n; ++i) dy[i] = scale * (y[i] - label[i]);
}

template <typename T>
void chunk_input(const PipelineModelConfig& c, int chunk, T* out) {
  fill_normal(Stream(c.seed, kInput, uint64_t(chunk)), out, c.activation_size());
}

template <typename T>
void chunk_label(const PipelineModelConfig& c, int chunk, T* out) {
  fill_normal(Stream(c.seed, kLabel, uint64_t(chunk)), out, c.activation_size());
}

template <typename T>
ReferenceResult<T> reference_step(const PipelineModelConfig& c, int num_stages, int num_chunks,
                                  bool forward_only) {
  ReferenceResult<T> r;
  for (int s = 0; s < num_stages; ++s) r.stages.push_back(MlpStage<T>::init(c.hidden, c.seed, s));
  const int rows = c.rows();
  const size_t act = c.activation_size(), wide = act * 4;
  // Per stage: its input x, h, a; x of stage s+1 is y of stage s.
  std::vector<std::vector<T>> xs(num_stages + 1, std::vector<T>(act));
  std::vector<std::vector<T>> hs(num_stages, std::vector<T>(wide)), as = hs;
  std::vector<T> label(act), dy(act), dx(act), dh(wide);
  for (int chunk = 0; chunk < num_chunks; ++chunk) {
    chunk_input(c, chunk, xs[0].data());
    for (int s = 0; s < num_stages; ++s)
      stage_forward(r.stages[s], xs[s].data(), rows, hs[s].data(), as[s].data(), xs[s + 1].data());
    const std::vector<T>& y = xs[num_stages];
    chunk_label(c, chunk, label.data());
    r.losses.push_back(mse_loss(y.data(), label.data(), act));
    r.outputs.push_back(y);
    if (forward_only) continue;
    mse_loss_grad(y.data(), label.data(), act, dy.data());
    for (int s = num_stages - 1; s >= 0; --s) {
      stage_backward_input(r.stages[s], hs[s].data(), dy.data(), rows, dh.data(),
                           s > 0 ? dx.data() : nullptr);
      stage_backward_weight(r.stages[s], xs[s].data(), as[s].data(), dh.data(), dy.data(), rows);
      std::swap(dx, dy);
    }
  }
  return r;
}

#define FF_PLAN_MODEL_INSTANTIATE(T)                                                           \
  template struct MlpStage<T>;                                                                 \
  template void stage_forward<T>(const MlpStage<T>&, const T*, int, T*, T*, T*);               \
  template void stage_backward_input<T>(const MlpStage<T>&, const T*, const T*, int, T*, T*);  \
  template void stage_backward_weight<T>(MlpStage<T>&, const T*, const T*, const T*, const T*, \
                                         int);                                                 \
  template T mse_loss<T>(const T*, const T*, size_t);                                          \
  template void mse_loss_grad<T>(const T*, const T*, size_t, T*);                              \
  template void chunk_input<T>(const PipelineModelConfig&, int, T*);                           \
  template void chunk_label<T>(const PipelineModelConfig&, int, T*);                           \
  template ReferenceResult<T> reference_step<T>(const PipelineModelConfig&, int, int, bool);
FF_PLAN_MODEL_INSTANTIATE(float)
FF_PLAN_MODEL_INSTANTIATE(double)
#undef FF_PLAN_MODEL_INSTANTIATE

}  // namespace ff::plan
