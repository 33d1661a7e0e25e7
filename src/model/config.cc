#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/core.h"

namespace ff {

namespace {

using json = nlohmann::json;

struct Reader {
  const json& j;
  const std::string& path;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  int get_int(const char* key, int def, bool required = false) const {
    if (!has(key)) {
      FF_CHECK(!required, "{}: missing required field \"{}\"", path, key);
      return def;
    }
    const json& v = j[key];
    FF_CHECK(v.is_number_integer(), "{}: field \"{}\" must be an integer, got {}", path, key,
             v.dump());
    const auto x = v.get<int64_t>();
    FF_CHECK(x >= 0 && x < (int64_t(1) << 31), "{}: field \"{}\" out of range: {}", path, key, x);
    return int(x);
  }
  double get_num(const json& obj, const char* key, double def) const {
    if (!obj.contains(key) || obj[key].is_null()) return def;
    FF_CHECK(obj[key].is_number(), "{}: field \"{}\" must be a number, got {}", path, key,
             obj[key].dump());
    return obj[key].get<double>();
  }
  double get_num(const char* key, double def) const { return get_num(j, key, def); }
  bool get_bool(const char* key, bool def) const {
    if (!has(key)) return def;
    FF_CHECK(j[key].is_boolean(), "{}: field \"{}\" must be true or false", path, key);
    return j[key].get<bool>();
  }
  std::string get_str(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    FF_CHECK(j[key].is_string(), "{}: field \"{}\" must be a string", path, key);
    return j[key].get<std::string>();
  }
};

void parse_rope(const json& j, const std::string& path, ModelConfig& c) {
  // Real checkpoints spell it rope_scaling; transformers 5 writes rope_parameters.
  const json* rs = nullptr;
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    rs = &j["rope_scaling"];
  else if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    rs = &j["rope_parameters"];
  Reader r{j, path};
  c.rope_theta = r.get_num("rope_theta", 10000.0);
  if (!rs) return;
  if (rs->contains("rope_theta")) c.rope_theta = r.get_num(*rs, "rope_theta", c.rope_theta);
  std::string type;
  if (rs->contains("type") && (*rs)["type"].is_string()) type = (*rs)["type"];
  if (rs->contains("rope_type") && (*rs)["rope_type"].is_string()) type = (*rs)["rope_type"];
  if (type.empty() || type == "default") return;
  FF_CHECK(type == "yarn", "{}: rope scaling type \"{}\" is not supported (expected yarn)", path,
           type);
  auto& y = c.yarn;
  y.enabled = true;
  FF_CHECK(rs->contains("factor"), "{}: rope_scaling.factor missing", path);
  y.factor = r.get_num(*rs, "factor", 1.0);
  y.original_max_position_embeddings =
      r.get_num(*rs, "original_max_position_embeddings", c.max_position_embeddings);
  y.beta_fast = r.get_num(*rs, "beta_fast", 32);
  y.beta_slow = r.get_num(*rs, "beta_slow", 1);
  if (y.beta_fast == 0) y.beta_fast = 32;
  if (y.beta_slow == 0) y.beta_slow = 1;
  y.mscale = r.get_num(*rs, "mscale", 0);
  y.mscale_all_dim = r.get_num(*rs, "mscale_all_dim", 0);
  y.attention_factor = r.get_num(*rs, "attention_factor", 0);
  FF_CHECK(y.factor > 0, "{}: rope_scaling.factor must be positive", path);
}

}  // namespace

ModelConfig ModelConfig::parse(const std::string& text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  FF_CHECK(j.is_object(), "{}: expected a JSON object", path);
  ModelConfig c;
  Reader r{j, path};
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  c.model_type = r.get_str("model_type", "");
  const bool v3 = c.model_type == "deepseek_v3" || c.architecture == "DeepseekV3ForCausalLM";
  const bool v2 = c.model_type == "deepseek_v2" || c.architecture == "DeepseekV2ForCausalLM";
  FF_CHECK(v3 || v2,
           "{}: unknown architecture (model_type \"{}\", architectures \"{}\"): expected "
           "DeepseekV3ForCausalLM or DeepseekV2ForCausalLM",
           path, c.model_type, c.architecture);
  if (c.model_type.empty()) c.model_type = v3 ? "deepseek_v3" : "deepseek_v2";

  c.vocab_size = r.get_int("vocab_size", 0, true);
  c.hidden_size = r.get_int("hidden_size", 0, true);
  c.intermediate_size = r.get_int("intermediate_size", 0, true);
  c.moe_intermediate_size = r.get_int("moe_intermediate_size", 0);
  c.num_hidden_layers = r.get_int("num_hidden_layers", 0, true);
  c.num_attention_heads = r.get_int("num_attention_heads", 0, true);
  c.num_key_value_heads = r.get_int("num_key_value_heads", c.num_attention_heads);
  c.q_lora_rank = r.get_int("q_lora_rank", 0);
  c.kv_lora_rank = r.get_int("kv_lora_rank", 0, true);
  c.qk_nope_head_dim = r.get_int("qk_nope_head_dim", 0, true);
  c.qk_rope_head_dim = r.get_int("qk_rope_head_dim", 0, true);
  c.v_head_dim = r.get_int("v_head_dim", 0, true);
  c.n_routed_experts = r.get_int("n_routed_experts", 0);
  c.n_shared_experts = r.get_int("n_shared_experts", 0);
  c.num_experts_per_tok = r.get_int("num_experts_per_tok", 0);
  c.n_group = r.get_int("n_group", 1);
  c.topk_group = r.get_int("topk_group", 1);
  c.first_k_dense_replace = r.get_int("first_k_dense_replace", 0);
  c.moe_layer_freq = r.get_int("moe_layer_freq", 1);
  c.max_position_embeddings = r.get_int("max_position_embeddings", 4096);
  c.norm_topk_prob = r.get_bool("norm_topk_prob", false);
  c.routed_scaling_factor = r.get_num("routed_scaling_factor", 1.0);
  c.rms_norm_eps = r.get_num("rms_norm_eps", 1e-6);
  c.rope_interleave = r.get_bool("rope_interleave", true);
  c.attention_bias = r.get_bool("attention_bias", false);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", false);
  c.bos_token_id = r.get_int("bos_token_id", 0);
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_array()) {
      for (const auto& x : e) c.eos_token_ids.push_back(x.get<int>());
    } else if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int>());
    }
  }
  if (c.eos_token_ids.empty()) c.eos_token_ids.push_back(1);

  const std::string scoring = r.get_str("scoring_func", v3 ? "sigmoid" : "softmax");
  if (scoring == "sigmoid")
    c.scoring = Scoring::Sigmoid;
  else if (scoring == "softmax")
    c.scoring = Scoring::Softmax;
  else
    fail("{}: scoring_func \"{}\" is not supported (sigmoid or softmax)", path, scoring);
  const std::string method = r.get_str("topk_method", v3 ? "noaux_tc" : "greedy");
  if (method == "noaux_tc")
    c.topk_method = TopkMethod::NoauxTc;
  else if (method == "greedy")
    c.topk_method = TopkMethod::Greedy;
  else if (method == "group_limited_greedy")
    c.topk_method = TopkMethod::GroupLimitedGreedy;
  else
    fail("{}: topk_method \"{}\" is not supported", path, method);
  // transformers' DeepseekV3 router is always sigmoid + noaux_tc whatever the config says.
  if (v3) {
    c.scoring = Scoring::Sigmoid;
    c.topk_method = TopkMethod::NoauxTc;
  }

  parse_rope(j, path, c);

  if (j.contains("quantization_config") && j["quantization_config"].is_object()) {
    const json& q = j["quantization_config"];
    const std::string qm = q.value("quant_method", "");
    FF_CHECK(qm == "fp8", "{}: quantization_config.quant_method \"{}\" is not supported (fp8)",
             path, qm);
    c.fp8 = true;
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      FF_CHECK(b.is_array() && b.size() == 2 && b[0] == 128 && b[1] == 128,
               "{}: weight_block_size {} is not supported (expected [128, 128])", path, b.dump());
    }
    c.scale_fmt = q.value("scale_fmt", r.get_str("scale_fmt", ""));
  }

  c.validate(path);
  return c;
}

void ModelConfig::validate(const std::string& where) const {
  FF_CHECK(num_hidden_layers > 0 && hidden_size > 0 && vocab_size > 0,
           "{}: num_hidden_layers, hidden_size and vocab_size must be positive", where);
  FF_CHECK(num_attention_heads > 0 && kv_lora_rank > 0 && qk_nope_head_dim > 0 && v_head_dim > 0,
           "{}: attention dimensions must be positive", where);
  FF_CHECK(qk_rope_head_dim > 0 && qk_rope_head_dim % 2 == 0,
           "{}: qk_rope_head_dim must be positive and even, got {}", where, qk_rope_head_dim);
  if (n_routed_experts > 0) {
    FF_CHECK(moe_intermediate_size > 0, "{}: moe_intermediate_size must be positive", where);
    FF_CHECK(num_experts_per_tok > 0 && num_experts_per_tok <= n_routed_experts,
             "{}: num_experts_per_tok {} must be in [1, n_routed_experts={}]", where,
             num_experts_per_tok, n_routed_experts);
    FF_CHECK(moe_layer_freq > 0, "{}: moe_layer_freq must be positive", where);
    if (topk_method != TopkMethod::Greedy) {
      FF_CHECK(n_group > 0 && n_routed_experts % n_group == 0,
               "{}: n_routed_experts {} not divisible by n_group {}", where, n_routed_experts,
               n_group);
      FF_CHECK(topk_group > 0 && topk_group <= n_group,
               "{}: topk_group {} must be in [1, n_group={}]", where, topk_group, n_group);
      // noaux_tc's group score is the sum of the top-2 experts of a group.
      FF_CHECK(topk_method != TopkMethod::NoauxTc || n_routed_experts / n_group >= 2,
               "{}: noaux_tc needs at least 2 experts per group", where);
    }
  }
}

ModelConfig ModelConfig::load(const std::string& path) {
  return parse(read_text_file(path), path);
}

bool ModelConfig::is_moe_layer(int layer) const {
  return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

namespace {
double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}
}  // namespace

double ModelConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn.enabled && yarn.mscale_all_dim != 0) {
    const double m = yarn_get_mscale(yarn.factor, yarn.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

}  // namespace ff
