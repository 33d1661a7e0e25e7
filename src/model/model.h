// fireflyer model: DeepSeek-V3 / V2 / V2-Lite architecture on CPU, from HF checkpoints.
//
// The module's public header. A Model binds an HF checkpoint directory (config.json +
// safetensors, BF16 / FP8 / F32) and runs a batch of sequences forward over a paged latent KV
// cache: prompts in the compute-friendly MLA form (per-head K/V up-projected from the latents),
// single decode tokens in the absorbed form (MQA over the 576-value latents, FlashMLA's layout).
#pragma once
#include <functional>
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

class ExpertParallel;  // model/expert_parallel.h

class Model {
 public:
  // Loads an HF checkpoint directory (DIR/config.json and DIR's safetensors) or a GGUF file of
  // llama.cpp's deepseek2 architecture (is_gguf_path);
  // throws ff::Error naming the file and the key or tensor. `quantize` converts the linear
  // weights at load (weights.h); without it the mapped weights are faulted in at load
  // (Checkpoint::prefault) so the first forward pass does not pay for it.
  // keep_expert(layer, expert), when given: the routed experts this process holds (expert
  // parallelism); the others are not bound, faulted in or quantized.
  using ExpertFilter = std::function<bool(int layer, int expert)>;
  static std::unique_ptr<Model> load(const std::string& path, Quantize quantize = Quantize::None,
                                     const ExpertFilter& keep_expert = {});
  // The config alone (config.json, or a GGUF file's metadata).
  static ModelConfig load_config(const std::string& path);
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

  // Expert parallelism (model/expert_parallel.h): the routed experts run on the ranks of `ep`
  // (not owned; it must outlive the model's use of it). On the leader forward() then moves each
  // MoE layer's tokens to their experts' ranks and back; the other ranks call follow(), which
  // serves the leader's forward passes until it finishes (ExpertParallel::finish).
  void set_expert_parallel(ExpertParallel* ep) { ep_ = ep; }
  void follow();

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
  // The MoE layer `moe_layer` (its index among the MoE layers) expert-parallel, in chunks of at
  // most ep_->max_tokens() of the leader's `step_tokens` tokens; T: this rank's (0 on followers).
  void moe_ep(int moe_layer, const MoeWeights& w, const float* x, int64_t T, int64_t step_tokens,
              float* out);
  void moe_ep_chunk(int moe_layer, const MoeWeights& w, const float* x, int64_t T, float* out);
  void moe_ep_low_latency(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                          float* out);
  // The routed picks of this rank's T tokens as slot ids (rw: their weights); the shared
  // experts' output added to out.
  void ep_route(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                std::vector<int64_t>& slot_idx, float* rw);
  void ep_shared(const MoeWeights& w, const float* x, int64_t T, float* out);

  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  Rope rope_;
  float softmax_scale_;
  std::unique_ptr<Workspace> ws_;
  ExpertParallel* ep_ = nullptr;

 public:
  ~Model();
};

// ---- GGUF (llama.cpp's `deepseek2` architecture: DeepSeek-V2, V2-Lite, V3, R1) -------------
// The config from the metadata keys convert_hf_to_gguf.py writes (deepseek2.block_count,
// .attention.kv_lora_rank, .expert_gating_func, ...). The router is V3's (sigmoid + noaux_tc)
// when the file has exp_probs_b tensors, else V2's (softmax; group-limited when
// expert_group_count > 1). YaRN: mscale = mscale_all_dim = yarn_log_multiplier / 0.1, as
// llama.cpp reads it. ff::Error for another architecture or a missing / malformed key.
ModelConfig gguf_model_config(const GgufFile& file);
// The file's tensors under the HF names ModelWeights binds (token_embd -> model.embed_tokens,
// blk.N.attn_q_a -> model.layers.N.self_attn.q_a_proj, ...; each stacked expert tensor becomes
// one tensor per expert; the split attn_k_b / attn_v_b keep their own names k_b_proj /
// v_b_proj). Tensors keep their GGUF names (for messages), types and data; nothing is copied.
Checkpoint gguf_checkpoint(std::shared_ptr<const GgufFile> file);
// True when `path` is a regular file that ends in .gguf or starts with the GGUF magic.
bool is_gguf_path(const std::string& path);

// RMSNorm of `rows` rows of length n (row stride ld), in place, with weight w.
void rms_norm(float* x, int64_t rows, int64_t n, int64_t ld, const float* w, double eps);

}  // namespace ff
