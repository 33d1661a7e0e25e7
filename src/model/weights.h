// The weights of a DeepSeek-V3/V2 model, bound to a checkpoint's tensors (HF names).
// Linear weights point into the mmap'd checkpoint in their stored dtype (F32, BF16, F16 or FP8
// e4m3 with 128x128 `weight_scale_inv`). Small vectors (norms, scales, router bias) are copied to
// fp32. The only derived large tensors are MLA's absorbed per-head matrices for decode.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace ff {

// Quantization of a checkpoint's linear weights at load (`--quantize`), into storage the weights
// own. Q8: GGUF Q8_0 (8.5 bits a weight). Q4: GGUF Q4_K (4.5 bits), Q8_0 for a weight whose rows
// are not a multiple of 256 (as llama.cpp falls back). Fp8: e4m3 with 128 x 128 block scales
// (DeepSeek's FP8 format). Every linear layer is quantized, the output layer included; the
// router, norms and embeddings are kept; weights already in a GGUF block type stay as they are,
// FP8 stays FP8 under Fp8. Rows that fit no block (k % 32 != 0) keep their format.
enum class Quantize { None, Q8, Q4, Fp8 };
// "none", "q8", "q4", "fp8" (ff::Error for anything else) and back.
Quantize parse_quantize(const std::string& s);
const char* quantize_name(Quantize q);

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
  // nope part to the latent space; uv[h] = W_UV(h) [v, kv_lora] maps the latent output back
  // (a view of kv_b's own rows unless kv_b is FP8).
  std::vector<gemm::Weight> uk_t, uv;
  // uk_t (and FP8's uv) built from kv_b, or kv_b from split k_b / v_b.
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
  Checkpoint checkpoint;              // safetensors, or a GGUF file's tensors under HF names
  const TensorInfo* embed = nullptr;  // [vocab, hidden]; any dtype or GGUF block type
  std::vector<float> final_norm;
  gemm::Weight lm_head;
  std::vector<LayerWeights> layers;
  std::vector<std::vector<float>> owned_scales;  // fp32 copies of non-F32 scales
  // fp32 values of GGUF block types gemm has no kernel for (dequantized once at load).
  std::vector<std::vector<float>> owned_f32;
  // Weights quantized at load (Quantize), and their FP8 scales.
  std::vector<std::vector<uint8_t>> owned_bytes;

  // Binds every tensor, checking names, shapes and dtypes against the config. keep_expert
  // (layer, expert), when given, says which routed experts to bind; the others stay empty
  // (expert parallelism: another process holds them).
  static std::unique_ptr<ModelWeights> load(const ModelConfig& c, Checkpoint ckpt,
                                            Quantize quantize = Quantize::None,
                                            const std::function<bool(int, int)>& keep_expert = {});
  void embed_row(int32_t token, float* out) const;
  // Weight bytes one decoded token reads: every dense weight, the absorbed MLA matrices, the
  // shared experts and num_experts_per_tok routed experts per MoE layer (lm_head included).
  size_t bytes_per_token_decode(const ModelConfig& c) const;
};

}  // namespace ff
