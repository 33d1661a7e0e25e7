// fireflyer model: DeepSeek-V3 / V2 / V2-Lite architecture on CPU, from HF checkpoints.
//
// The module's public header. A Model binds an HF checkpoint directory (config.json +
// safetensors, BF16 / FP8 / F32) and runs a batch of sequences forward over a paged latent KV
// cache: prompts in the compute-friendly MLA form (per-head K/V up-projected from the latents),
// single decode tokens in the absorbed form (MQA over the 576-value latents, FlashMLA's layout).
#pragma once
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/core.h"
#include "model/config.h"
#include "model/gguf_file.h"
#include "model/kv_cache.h"
#include "model/rope.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace ff {

class Model {
 public:
  // Loads DIR/config.json and DIR's safetensors; throws ff::Error naming the file or tensor.
  static std::unique_ptr<Model> load(const std::string& dir);
  Model(ModelConfig config, std::unique_ptr<ModelWeights> weights);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return *weights_; }
  // F32 for F32 checkpoints (exact), else BF16 (FlashMLA's cache type).
  DType default_cache_dtype() const;

  struct Request {
    KVSequence* seq = nullptr;
    std::span<const int32_t> tokens;  // new tokens, appended at positions seq->length...
    bool all_logits = false;          // logits for every new token, else for the last one
    std::string_view id = {};         // the caller's request id: the model.forward fault key
  };
  // Runs the batch, appends the new tokens' latents to the cache (reserving pages) and writes the
  // logits rows (per request: all_logits ? tokens.size() : 1; in request order) to `logits`.
  // A request with one token uses the absorbed decode form, one with more the prefill form.
  // When it throws, no request's seq->length has changed (latents already written for the new
  // positions are rewritten by a retry).
  void forward(std::span<const Request> batch, KVCache& cache, std::vector<float>* logits);

 private:
  struct Workspace;
  void attention(int layer, const float* h, int64_t T, std::span<const Request> batch,
                 KVCache& cache, float* out);
  void attention_prefill(int layer, const Request& r, int64_t row0, KVCache& cache);
  void attention_decode(int layer, std::span<const int64_t> rows,
                        std::span<const Request* const> reqs, KVCache& cache);
  void mlp(const MlpWeights& w, const float* x, int64_t T, float* out);
  void moe(const MoeWeights& w, const float* x, int64_t T, float* out);
  void route(const MoeWeights& w, const float* logits, int32_t* idx, float* weight) const;

  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  Rope rope_;
  float softmax_scale_;
  std::unique_ptr<Workspace> ws_;

 public:
  ~Model();
};

// RMSNorm of `rows` rows of length n (row stride ld), in place, with weight w.
void rms_norm(float* x, int64_t rows, int64_t n, int64_t ld, const float* w, double eps);

}  // namespace ff
