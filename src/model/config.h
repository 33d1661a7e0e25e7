// ModelConfig: the fields of an HF config.json that define a DeepSeek-V3 / V2 / V2-Lite model.
// Field names and defaults follow the official checkpoints and transformers' configuration
// classes; a variant is selected by the fields (q_lora_rank null -> q_proj; topk_method /
// scoring_func -> routing), not by a hard-coded model name.
#pragma once
#include <string>
#include <vector>

namespace ff {

enum class Scoring { Softmax, Sigmoid };
enum class TopkMethod { Greedy, GroupLimitedGreedy, NoauxTc };

struct YarnConfig {
  bool enabled = false;
  double factor = 1.0;
  double original_max_position_embeddings = 4096;
  double beta_fast = 32;
  double beta_slow = 1;
  double mscale = 0;            // 0: absent
  double mscale_all_dim = 0;    // 0: absent
  double attention_factor = 0;  // 0: derived from mscale / mscale_all_dim
};

struct ModelConfig {
  std::string architecture;  // "DeepseekV3ForCausalLM" / "DeepseekV2ForCausalLM"
  std::string model_type;    // "deepseek_v3" / "deepseek_v2"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int moe_intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int q_lora_rank = 0;  // 0: no query compression (V2-Lite), q_proj instead
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  int n_routed_experts = 0;  // 0: every layer dense
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  Scoring scoring = Scoring::Softmax;
  TopkMethod topk_method = TopkMethod::Greedy;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  bool rope_interleave = true;  // V3: adjacent pairs; V2 always uses adjacent pairs
  bool attention_bias = false;
  bool tie_word_embeddings = false;
  int max_position_embeddings = 4096;
  YarnConfig yarn;
  int bos_token_id = 0;
  std::vector<int> eos_token_ids;
  bool fp8 = false;       // quantization_config.quant_method == "fp8"
  std::string scale_fmt;  // "" or "ue8m0"

  // Parses config.json text; `path` names the file in error messages.
  static ModelConfig parse(const std::string& json_text, const std::string& path);
  static ModelConfig load(const std::string& path);
  // The consistency checks parse() runs (shapes the engine relies on); ff::Error naming `where`.
  void validate(const std::string& where) const;

  bool is_moe_layer(int layer) const;
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cache values per token
  // Softmax scale of MLA: qk_head_dim^-0.5, times mscale^2 under YaRN (mscale_all_dim).
  double softmax_scale() const;
};

}  // namespace ff
