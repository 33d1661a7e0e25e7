// The model the pipeline executor trains (upstream DualPipe's example): S identical stages, each
// Linear(H -> 4H, no bias) -> GELU (exact erf form) -> Linear(4H -> H, no bias), and an MSE loss
// (mean over every element of a micro-batch) after the last stage. Forward and backward are
// written out by hand so that the backward can be split the way zero-bubble schedules need:
// B computes the input grad only, W the weight grads; a full B is both.
//
// Layouts (row-major, T = float or double):
//   activations   [rows, H] with rows = micro_batch * seq (row b*seq + t); the hidden 4H-wide
//                 ones are [rows, 4H].
//   w1  [H, 4H]   x -> h = x w1   (torch's linear1.weight transposed)
//   w2  [4H, H]   a -> y = a w2   (torch's linear2.weight transposed)
//   w1t, w2t      their transposes, kept for the backward's input grad (dx = dh w1t, da = dy w2t)
//   g_w1, g_w2    the weight grads, in w1's and w2's layouts; they accumulate over micro-batches.
//
// Determinism: weights depend only on (seed, stage), a micro-batch's input and label only on
// (seed, chunk), so every rank builds what it holds with no communication and the sequential
// reference builds them all. The executor and the reference call the same functions, in the same
// order per micro-batch, so their activations and losses agree bit for bit; only the order in
// which weight grads of different micro-batches are summed differs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ff::plan {

struct PipelineModelConfig {
  int hidden = 512;
  int seq = 256;
  int micro_batch = 3;
  uint64_t seed = 233;
  int rows() const { return seq * micro_batch; }
  int ffn() const { return 4 * hidden; }
  size_t activation_size() const { return size_t(rows()) * size_t(hidden); }
};

// One copy of one stage: its parameters, their grads and a scratch for one micro-batch's grads.
template <typename T>
struct MlpStage {
  int hidden = 0;
  std::vector<T> w1, w2, w1t, w2t;
  std::vector<T> g_w1, g_w2;
  std::vector<T> scratch;  // one micro-batch's weight grad, added to g_w* once complete

  // nn.Linear's default init, uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from (seed, stage).
  static MlpStage init(int hidden, uint64_t seed, int stage);
  void zero_grads();
};

// Forward of `rows` rows: h = x w1, a = gelu(h), y = a w2. h and a are what the backward needs.
template <typename T>
void stage_forward(const MlpStage<T>& s, const T* x, int rows, T* h, T* a, T* y);

// The input-grad half of the backward (a zero-bubble B): dh = (dy w2t) * gelu'(h) and, when dx is
// not null, dx = dh w1t (the first stage has no one to send dx to and skips it).
template <typename T>
void stage_backward_input(const MlpStage<T>& s, const T* h, const T* dy, int rows, T* dh, T* dx);

// The weight-grad half (W): g_w2 += a^T dy, g_w1 += x^T dh, each micro-batch's grad complete in
// `scratch` before it is added.
template <typename T>
void stage_backward_weight(MlpStage<T>& s, const T* x, const T* a, const T* dh, const T* dy,
                           int rows);

// mean((y - label)^2) over n elements, summed in double in index order.
template <typename T>
T mse_loss(const T* y, const T* label, size_t n);
// d loss / d y = 2 (y - label) / n.
template <typename T>
void mse_loss_grad(const T* y, const T* label, size_t n, T* dy);

// A micro-batch's input (standard normal) and label (standard normal, an independent stream).
template <typename T>
void chunk_input(const PipelineModelConfig& c, int chunk, T* out);
template <typename T>
void chunk_label(const PipelineModelConfig& c, int chunk, T* out);

// The sequential reference: the whole model, micro-batch by micro-batch (forward, loss, full
// backward), as upstream's example ref_step does.
template <typename T>
struct ReferenceResult {
  std::vector<T> losses;                // [num_chunks]
  std::vector<std::vector<T>> outputs;  // [num_chunks][rows * H], the last stage's y
  std::vector<MlpStage<T>> stages;      // [num_stages], with their accumulated grads
};

// forward_only: no backward, grads stay zero (outputs and losses are still computed).
template <typename T>
ReferenceResult<T> reference_step(const PipelineModelConfig& c, int num_stages, int num_chunks,
                                  bool forward_only);

}  // namespace ff::plan
