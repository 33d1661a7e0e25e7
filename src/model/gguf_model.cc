// DeepSeek-V2 / V3 models from GGUF files of llama.cpp's `deepseek2` architecture: the config from
// the metadata keys and the tensors under the HF names the weight binder knows. See model.h.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>

#include "model/model.h"

namespace ff {

namespace {

std::string key(const char* k) {
  return fmt::format("deepseek2.{}", k);
}

int get_int(const GgufFile& f, const char* k) {
  const uint64_t v = f.get_u64(key(k));
  FF_CHECK(v <= uint64_t(INT32_MAX), "{}: metadata key {} = {} is too large", f.path(), key(k), v);
  return int(v);
}
int get_int_or(const GgufFile& f, const char* k, int fallback) {
  return f.find(key(k)) ? get_int(f, k) : fallback;
}
double get_f64_or(const GgufFile& f, const char* k, double fallback) {
  return f.find(key(k)) ? f.get_f64(key(k)) : fallback;
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  FF_CHECK(arch == "deepseek2",
           "{}: general.architecture is '{}', expected 'deepseek2' (DeepSeek-V2 / V3)", f.path(),
           printable(arch));
  ModelConfig c;
  const bool noaux =
      f.find_tensor("blk." + std::to_string(get_int_or(f, "leading_dense_block_count", 0)) +
                    ".exp_probs_b.bias") != nullptr;
  const int gating = get_int_or(f, "expert_gating_func", 1);  // 1 softmax, 2 sigmoid
  FF_CHECK(gating == 1 || gating == 2,
           "{}: metadata key {} = {} is not supported (1 softmax, 2 sigmoid)", f.path(),
           key("expert_gating_func"), gating);
  // HF's DeepSeek-V3 router is sigmoid + noaux_tc (exp_probs_b); V2's has neither.
  const bool v3 = noaux;
  c.architecture = v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM";
  c.model_type = v3 ? "deepseek_v3" : "deepseek_v2";
  c.hidden_size = get_int(f, "embedding_length");
  c.num_hidden_layers = get_int(f, "block_count");
  c.intermediate_size = get_int(f, "feed_forward_length");
  c.num_attention_heads = get_int(f, "attention.head_count");
  c.num_key_value_heads = c.num_attention_heads;
  c.q_lora_rank = get_int_or(f, "attention.q_lora_rank", 0);
  c.kv_lora_rank = get_int(f, "attention.kv_lora_rank");
  c.qk_rope_head_dim = get_int(f, "rope.dimension_count");
  // Files converted for MLA absorption store the latent lengths in key_length / value_length and
  // the per-head ones in *_mla; older files store the per-head ones in key_length / value_length.
  const bool mla = f.find(key("attention.key_length_mla")) != nullptr;
  const int k_len = get_int(f, mla ? "attention.key_length_mla" : "attention.key_length");
  c.v_head_dim = get_int(f, mla ? "attention.value_length_mla" : "attention.value_length");
  FF_CHECK(k_len > c.qk_rope_head_dim, "{}: key length {} is not larger than the rope dimension {}",
           f.path(), k_len, c.qk_rope_head_dim);
  c.qk_nope_head_dim = k_len - c.qk_rope_head_dim;
  c.n_routed_experts = get_int_or(f, "expert_count", 0);
  c.num_experts_per_tok = get_int_or(f, "expert_used_count", 0);
  c.n_shared_experts = get_int_or(f, "expert_shared_count", 0);
  c.moe_intermediate_size = get_int_or(f, "expert_feed_forward_length", c.intermediate_size);
  c.first_k_dense_replace = get_int_or(f, "leading_dense_block_count", 0);
  c.moe_layer_freq = 1;
  c.n_group = get_int_or(f, "expert_group_count", 1);
  c.topk_group = get_int_or(f, "expert_group_used_count", c.n_group);
  c.scoring = gating == 2 ? Scoring::Sigmoid : Scoring::Softmax;
  c.topk_method = noaux           ? TopkMethod::NoauxTc
                  : c.n_group > 1 ? TopkMethod::GroupLimitedGreedy
                                  : TopkMethod::Greedy;
  c.norm_topk_prob = f.find(key("expert_weights_norm")) && f.get_bool(key("expert_weights_norm"));
  c.routed_scaling_factor = get_f64_or(f, "expert_weights_scale", 1.0);
  c.rms_norm_eps = f.get_f64(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = get_f64_or(f, "rope.freq_base", 10000.0);
  c.rope_interleave = true;  // llama.cpp's deepseek2 ropes adjacent pairs, as the HF models do
  c.max_position_embeddings = get_int_or(f, "context_length", 4096);
  if (f.find(key("rope.scaling.type")) && f.get_string(key("rope.scaling.type")) == "yarn") {
    c.yarn.enabled = true;
    c.yarn.factor = f.get_f64(key("rope.scaling.factor"));
    c.yarn.original_max_position_embeddings =
        double(get_int(f, "rope.scaling.original_context_length"));
    c.yarn.beta_fast = get_f64_or(f, "rope.scaling.yarn_beta_fast", 32);
    c.yarn.beta_slow = get_f64_or(f, "rope.scaling.yarn_beta_slow", 1);
    // The converter stores 0.1 * mscale_all_dim; llama.cpp takes mscale equal to it (true of
    // every DeepSeek-V2 / V3 config), so the rotation itself is not rescaled.
    // The value is an f32: its shortest decimal form is what the converter was given
    // (0.0707 for mscale_all_dim 0.707), which makes the result the config's value to the ulp.
    const double log_mul = get_f64_or(f, "rope.scaling.yarn_log_multiplier", 0);
    c.yarn.mscale_all_dim = std::strtod(fmt::format("{}", float(log_mul)).c_str(), nullptr) * 10;
    c.yarn.mscale = c.yarn.mscale_all_dim;
    c.yarn.attention_factor = get_f64_or(f, "rope.scaling.attn_factor", 0);
  }
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  const int vocab_default = tokens ? int(tokens->items.size()) : 0;
  c.vocab_size = get_int_or(f, "vocab_size", vocab_default);
  if (c.vocab_size == 0) {
    const GgufTensor& e = f.get_tensor("token_embd.weight");
    FF_CHECK(e.dims.size() == 2, "{}: tensor token_embd.weight has dims {}, expected 2", f.path(),
             e.dims_str());
    c.vocab_size = int(e.dims[1]);
  }
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  if (f.find("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = int(f.get_u32("tokenizer.ggml.bos_token_id"));
  if (f.find("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {int(f.get_u32("tokenizer.ggml.eos_token_id"))};
  c.validate(f.path());
  return c;
}

namespace {

// HF names of the per-layer GGUF tensors of one projection each.
struct NameMap {
  const char* gguf;
  const char* hf;
};
constexpr NameMap kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
    {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
    {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
    {"attn_k_b.weight", "self_attn.k_b_proj.weight"},  // [H, kv_lora, nope]: W_UK(h)^T
    {"attn_v_b.weight", "self_attn.v_b_proj.weight"},  // [H, v, kv_lora]: W_UV(h)
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_gate_inp.weight", "mlp.gate.weight"},
    {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
};
constexpr NameMap kExpertNames[] = {
    {"ffn_gate_exps.weight", "gate_proj"},
    {"ffn_up_exps.weight", "up_proj"},
    {"ffn_down_exps.weight", "down_proj"},
};

TensorInfo info_of(const GgufFile& f, const GgufTensor& t) {
  TensorInfo i;
  i.name = t.name;
  i.shape.assign(t.dims.rbegin(), t.dims.rend());
  i.data = t.data;
  i.nbytes = size_t(t.nbytes);
  i.file = &f.path();
  switch (t.type) {
    case gemm::GgufType::F32:
      i.dtype = DType::F32;
      break;
    case gemm::GgufType::F16:
      i.dtype = DType::F16;
      break;
    case gemm::GgufType::BF16:
      i.dtype = DType::BF16;
      break;
    default:
      FF_CHECK(gemm::gguf_dequantize_supported(t.type),
               "{}: tensor {} has GGUF type {}, which fireflyer does not read", f.path(), t.name,
               gemm::gguf_type_name(t.type));
      i.dtype = DType::U8;
      i.gguf_type = t.type;
  }
  return i;
}

// The GGUF name of an HF tensor name (for messages): the inverse of the mapping below.
std::string gguf_name_of(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::regex expert_re(R"(model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+)\.weight)");
  static const std::regex layer_re(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (std::regex_match(hf, m, expert_re)) {
    for (const NameMap& n : kExpertNames)
      if (m[3].str() == n.hf) return fmt::format("blk.{}.{}[{}]", m[1].str(), n.gguf, m[2].str());
  } else if (std::regex_match(hf, m, layer_re)) {
    for (const NameMap& n : kLayerNames)
      if (m[2].str() == n.hf) return fmt::format("blk.{}.{}", m[1].str(), n.gguf);
  }
  return hf;
}

}  // namespace

Checkpoint gguf_checkpoint(std::shared_ptr<const GgufFile> file) {
  const GgufFile& f = *file;
  std::vector<std::pair<std::string, TensorInfo>> out;
  static const std::regex layer_re(R"(blk\.(\d+)\.(.+))");
  for (const GgufTensor& t : f.tensors()) {
    if (t.name == "token_embd.weight") {
      out.emplace_back("model.embed_tokens.weight", info_of(f, t));
    } else if (t.name == "output_norm.weight") {
      out.emplace_back("model.norm.weight", info_of(f, t));
    } else if (t.name == "output.weight") {
      out.emplace_back("lm_head.weight", info_of(f, t));
    }
    std::smatch m;
    if (!std::regex_match(t.name, m, layer_re)) continue;  // rope_freqs etc.: not used
    const std::string prefix = fmt::format("model.layers.{}.", m[1].str());
    const std::string rest = m[2].str();
    for (const NameMap& n : kLayerNames)
      if (rest == n.gguf) out.emplace_back(prefix + n.hf, info_of(f, t));
    for (const NameMap& n : kExpertNames) {
      if (rest != n.gguf) continue;
      // [E, rows, k] in HF order: expert e is the e-th slab, a [rows, k] matrix of its own.
      const TensorInfo all = info_of(f, t);
      FF_CHECK(all.shape.size() == 3, "{}: tensor {} has dims {}, expected 3 (k, rows, experts)",
               f.path(), t.name, t.dims_str());
      const int64_t experts = all.shape[0];
      const size_t slab = experts > 0 ? all.nbytes / size_t(experts) : 0;
      for (int64_t e = 0; e < experts; ++e) {
        TensorInfo one = all;
        one.shape = {all.shape[1], all.shape[2]};
        one.data = all.data + size_t(e) * slab;
        one.nbytes = slab;
        one.name = fmt::format("{}[{}]", t.name, e);
        out.emplace_back(fmt::format("{}mlp.experts.{}.{}.weight", prefix, e, n.hf),
                         std::move(one));
      }
    }
  }
  const std::string source = f.path();
  return Checkpoint::from_tensors(source, std::move(out), std::move(file), gguf_name_of);
}

bool is_gguf_path(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) return false;
  char magic[4] = {};
  const size_t n = std::fread(magic, 1, 4, fp);
  std::fclose(fp);
  return n == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace ff
