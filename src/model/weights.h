// The weights of a DeepSeek-V3/V2 model, bound to a checkpoint's tensors (HF names).
// Linear weights point into the mmap'd checkpoint in their stored dtype (F32, BF16, F16 or FP8
// e4m3 with 128x128 `weight_scale_inv`). Small vectors (norms, scales, router bias) are copied to
// fp32. The only derived large tensors are MLA's absorbed per-head matrices for decode.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace ff {

struct MlpWeights {
  gemm::Weight gate, up, down;  // SwiGLU: down(silu(gate x) * up x)
};

struct MlaWeights {
  gemm::Weight q_a, q_b;  // with q_lora_rank
  gemm::Weight q_proj;    // without
  std::vector<float> q_a_norm;
  gemm::Weight kv_a;  // hidden -> kv_lora_rank + qk_rope_head_dim
  std::vector<float> kv_a_norm;
  gemm::Weight kv_b;  // kv_lora_rank -> heads * (qk_nope + v)
  gemm::Weight o;     // heads * v -> hidden
  // Absorbed form for decode, one per head: uk_t[h] = W_UK(h)^T [kv_lora, qk_nope] maps a query's
  // nope part to the latent space; uv[h] = W_UV(h) [v, kv_lora] maps the latent output back.
  std::vector<gemm::Weight> uk_t, uv;
  std::vector<uint8_t> absorbed_storage;
};

struct MoeWeights {
  gemm::Weight router;            // [n_routed_experts, hidden]
  std::vector<float> score_bias;  // e_score_correction_bias (noaux_tc), else empty
  std::vector<MlpWeights> experts;
  bool has_shared = false;
  MlpWeights shared;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  MlaWeights attn;
  bool is_moe = false;
  MlpWeights mlp;
  MoeWeights moe;
};

struct ModelWeights {
  Checkpoint checkpoint;
  const TensorInfo* embed = nullptr;  // [vocab, hidden]
  std::vector<float> final_norm;
  gemm::Weight lm_head;
  std::vector<LayerWeights> layers;
  std::vector<std::vector<float>> owned_scales;  // fp32 copies of non-F32 scales

  // Binds every tensor, checking names, shapes and dtypes against the config.
  static std::unique_ptr<ModelWeights> load(const ModelConfig& c, Checkpoint ckpt);
  void embed_row(int32_t token, float* out) const;
  // Weight bytes one decoded token reads: every dense weight, the absorbed MLA matrices, the
  // shared experts and num_experts_per_tok routed experts per MoE layer (lm_head included).
  size_t bytes_per_token_decode(const ModelConfig& c) const;
};

}  // namespace ff
