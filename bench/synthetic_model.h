// A synthetic DeepSeek-V3-shaped checkpoint with random weights, for the benchmarks
// (bench_model_decode, bench_serve): config.json + model.safetensors, real MLA dims (q_lora 1536,
// kv_lora 512, rope 64, nope 128, v 128), noaux_tc MoE with shared experts, linear layers in BF16
// or FP8 (e4m3, 128x128 block scales). Deterministic: the same config writes the same bytes.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/core.h"

namespace ff::synth {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype;
};

// The defaults are bench_model_decode's checkpoint (1.08 GB in BF16, 0.68 GB in FP8).
struct SynthConfig {
  int hidden = 2048, layers = 4, dense_layers = 1, heads = 16, q_lora = 1536, kv_lora = 512,
      nope = 128, rope = 64, v = 128, inter = 5632, moe_inter = 512, experts = 32, topk = 8,
      groups = 4, topk_group = 2, shared = 1, vocab = 32768;
  int max_position = 16384;  // max_position_embeddings (the yarn original is a quarter)
};

inline nlohmann::json config_json(const SynthConfig& s, bool fp8) {
  nlohmann::json j = {{"architectures", {"DeepseekV3ForCausalLM"}},
                      {"model_type", "deepseek_v3"},
                      {"vocab_size", s.vocab},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.inter},
                      {"moe_intermediate_size", s.moe_inter},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.heads},
                      {"q_lora_rank", s.q_lora},
                      {"kv_lora_rank", s.kv_lora},
                      {"qk_nope_head_dim", s.nope},
                      {"qk_rope_head_dim", s.rope},
                      {"v_head_dim", s.v},
                      {"n_routed_experts", s.experts},
                      {"n_shared_experts", s.shared},
                      {"num_experts_per_tok", s.topk},
                      {"n_group", s.groups},
                      {"topk_group", s.topk_group},
                      {"first_k_dense_replace", s.dense_layers},
                      {"norm_topk_prob", true},
                      {"routed_scaling_factor", 2.5},
                      {"topk_method", "noaux_tc"},
                      {"scoring_func", "sigmoid"},
                      {"max_position_embeddings", s.max_position},
                      {"rope_scaling",
                       {{"type", "yarn"},
                        {"factor", 4.0},
                        {"original_max_position_embeddings", s.max_position / 4},
                        {"beta_fast", 32},
                        {"beta_slow", 1},
                        {"mscale", 1.0},
                        {"mscale_all_dim", 1.0}}},
                      {"rms_norm_eps", 1e-6},
                      {"bos_token_id", 0},
                      {"eos_token_id", 1}};
  if (fp8)
    j["quantization_config"] = {{"quant_method", "fp8"},
                                {"fmt", "e4m3"},
                                {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}}};
  return j;
}

// Writes config.json and model.safetensors with random weights (linear layers in `lin`).
inline void write_synthetic(const std::string& dir, const SynthConfig& s, bool fp8) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config_json(s, fp8).dump(2);
  std::vector<Spec> specs;
  const DType lin = fp8 ? DType::F8_E4M3 : DType::BF16;
  auto linear = [&](const std::string& n, int64_t out, int64_t in) {
    specs.push_back({n + ".weight", {out, in}, lin});
    if (fp8)
      specs.push_back({n + ".weight_scale_inv", {(out + 127) / 128, (in + 127) / 128}, DType::F32});
  };
  auto vec = [&](const std::string& n, int64_t len, DType t = DType::BF16) {
    specs.push_back({n, {len}, t});
  };
  specs.push_back({"model.embed_tokens.weight", {s.vocab, s.hidden}, DType::BF16});
  specs.push_back({"lm_head.weight", {s.vocab, s.hidden}, DType::BF16});
  vec("model.norm.weight", s.hidden);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    vec(p + ".input_layernorm.weight", s.hidden);
    vec(p + ".post_attention_layernorm.weight", s.hidden);
    linear(p + ".self_attn.q_a_proj", s.q_lora, s.hidden);
    vec(p + ".self_attn.q_a_layernorm.weight", s.q_lora);
    linear(p + ".self_attn.q_b_proj", s.heads * (s.nope + s.rope), s.q_lora);
    linear(p + ".self_attn.kv_a_proj_with_mqa", s.kv_lora + s.rope, s.hidden);
    vec(p + ".self_attn.kv_a_layernorm.weight", s.kv_lora);
    linear(p + ".self_attn.kv_b_proj", s.heads * (s.nope + s.v), s.kv_lora);
    linear(p + ".self_attn.o_proj", s.hidden, s.heads * s.v);
    auto mlp = [&](const std::string& q, int64_t inter) {
      linear(q + ".gate_proj", inter, s.hidden);
      linear(q + ".up_proj", inter, s.hidden);
      linear(q + ".down_proj", s.hidden, inter);
    };
    if (l < s.dense_layers) {
      mlp(p + ".mlp", s.inter);
      continue;
    }
    specs.push_back({p + ".mlp.gate.weight", {s.experts, s.hidden}, DType::BF16});
    vec(p + ".mlp.gate.e_score_correction_bias", s.experts, DType::F32);
    for (int e = 0; e < s.experts; ++e) mlp(p + ".mlp.experts." + std::to_string(e), s.moe_inter);
    mlp(p + ".mlp.shared_experts", int64_t(s.moe_inter) * s.shared);
  }
  nlohmann::json header = nlohmann::json::object();
  size_t off = 0;
  for (const auto& sp : specs) {
    size_t n = dtype_size(sp.dtype);
    for (int64_t d : sp.shape) n *= size_t(d);
    header[sp.name] = {
        {"dtype", dtype_name(sp.dtype)}, {"shape", sp.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream out(dir + "/model.safetensors", std::ios::binary);
  const uint64_t hl = h.size();
  out.write(reinterpret_cast<const char*>(&hl), 8);
  out << h;
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  std::vector<uint8_t> buf;
  for (const auto& sp : specs) {
    int64_t n = 1;
    for (int64_t d : sp.shape) n *= d;
    buf.resize(size_t(n) * dtype_size(sp.dtype));
    const bool is_norm = sp.name.find("norm") != std::string::npos;
    if (sp.dtype == DType::BF16) {
      auto* p = reinterpret_cast<uint16_t*>(buf.data());
      for (int64_t i = 0; i < n; ++i) {
        const float u = float(next() >> 40) / float(1 << 24) - 0.5f;  // [-0.5, 0.5)
        p[i] = f32_to_bf16(is_norm ? 1.0f + 0.1f * u : 0.06f * u);
      }
    } else if (sp.dtype == DType::F8_E4M3) {
      for (int64_t i = 0; i < n; ++i) {
        uint8_t b = uint8_t(next() >> 56);
        if ((b & 0x7f) == 0x7f) b &= 0xfe;   // no NaN
        buf[size_t(i)] = uint8_t(b & 0xb7);  // |x| <= 1.875 * 2^-? keeps magnitudes small
      }
    } else {
      auto* p = reinterpret_cast<float*>(buf.data());
      for (int64_t i = 0; i < n; ++i)
        p[i] = sp.name.find("scale_inv") != std::string::npos ? 0.03f : 0.0f;
    }
    out.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
  }
}

}  // namespace ff::synth
