#include "model/model.h"
#include "model/expert_parallel.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "model/workspace.h"

namespace ff {

void rms_norm(float* x, int64_t rows, int64_t n, int64_t ld, const float* w, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    float* p = x + r * ld;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(p[i]) * p[i];
    const float inv = float(1.0 / std::sqrt(ss / double(n) + eps));
    for (int64_t i = 0; i < n; ++i) p[i] = w[i] * (p[i] * inv);
  }
}

namespace {

void check_model_path(const std::string& dir) {
  namespace fs = std::filesystem;
  FF_CHECK(fs::exists(dir),
           "{}: no such file or directory (expected an HF checkpoint directory or a GGUF file)",
           dir);
  FF_CHECK(
      fs::is_directory(dir),
      "{}: not a directory or a GGUF file (expected an HF checkpoint directory or a GGUF file)",
      dir);
}

// "model.layers.L.mlp.experts.E.*": (L, E); else (-1, -1).
std::pair<int, int> expert_of(const std::string& name) {
  int layer = -1, expert = -1, used = 0;
  if (std::sscanf(name.c_str(), "model.layers.%d.mlp.experts.%d.%n", &layer, &expert, &used) == 2 &&
      used > 0)
    return {layer, expert};
  return {-1, -1};
}

}  // namespace

ModelConfig Model::load_config(const std::string& dir) {
  if (is_gguf_path(dir)) return gguf_model_config(GgufFile(dir));
  check_model_path(dir);
  return ModelConfig::load((std::filesystem::path(dir) / "config.json").string());
}

std::unique_ptr<Model> Model::load(const std::string& dir, Quantize quantize,
                                   const ExpertFilter& keep_expert) {
  ModelConfig config;
  Checkpoint ckpt;
  if (is_gguf_path(dir)) {
    auto file = std::make_shared<const GgufFile>(dir);
    config = gguf_model_config(*file);
    ckpt = gguf_checkpoint(std::move(file));
  } else {
    check_model_path(dir);
    config = ModelConfig::load((std::filesystem::path(dir) / "config.json").string());
    ckpt = Checkpoint::open(dir);
  }
  auto weights = ModelWeights::load(config, std::move(ckpt), quantize, keep_expert);
  if (quantize == Quantize::None)
    weights->checkpoint.prefault([&](const std::string& name) {
      const auto [layer, expert] = expert_of(name);
      return layer < 0 || !keep_expert || keep_expert(layer, expert);
    });
  return std::make_unique<Model>(std::move(config), std::move(weights));
}

Model::Model(ModelConfig config, std::unique_ptr<ModelWeights> weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      rope_(config_),
      softmax_scale_(float(config_.softmax_scale())),
      ws_(std::make_unique<Workspace>()) {}

Model::~Model() = default;

DType Model::default_cache_dtype() const {
  const gemm::Weight& kv_a = weights_->layers[0].attn.kv_a;
  return kv_a.block == gemm::Block::None && kv_a.dtype == DType::F32 ? DType::F32 : DType::BF16;
}

void Model::forward(std::span<const Request> batch, KVCache& cache, std::vector<float>* logits) {
  profile::Scope prof("forward");
  const ModelConfig& c = config_;
  FF_CHECK(cache.latent_dim() == c.latent_dim() && cache.num_layers() == c.num_hidden_layers,
           "kv cache shape ({} layers x {}) does not match the model ({} x {})", cache.num_layers(),
           cache.latent_dim(), c.num_hidden_layers, c.latent_dim());
  int64_t T = 0, out_rows = 0;
  for (const Request& r : batch) {
    FF_CHECK(r.seq != nullptr && !r.tokens.empty(), "forward: request without tokens");
    for (int32_t t : r.tokens)
      FF_CHECK(t >= 0 && t < c.vocab_size, "token id {} out of range [0, {})", t, c.vocab_size);
    T += int64_t(r.tokens.size());
    out_rows += r.all_logits ? int64_t(r.tokens.size()) : 1;
  }
  for (const Request& r : batch) cache.reserve(*r.seq, r.seq->length + int64_t(r.tokens.size()));
  if (ep_) ep_->announce(T);  // the other ranks run this pass's MoE layers with us

  Workspace& ws = *ws_;
  const int64_t hid = c.hidden_size;
  float* x = Workspace::get(ws.x, size_t(T * hid));
  float* h = Workspace::get(ws.h, size_t(T * hid));
  float* tmp = Workspace::get(ws.tmp, size_t(T * hid));
  ws.pos.resize(size_t(T));
  {
    int64_t row = 0;
    for (const Request& r : batch)
      for (size_t i = 0; i < r.tokens.size(); ++i, ++row) {
        weights_->embed_row(r.tokens[i], x + row * hid);
        ws.pos[size_t(row)] = r.seq->length + int64_t(i);
      }
  }
  for (int l = 0, moe_layer = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_->layers[size_t(l)];
    std::memcpy(h, x, size_t(T * hid) * 4);
    rms_norm(h, T, hid, hid, L.attn_norm.data(), c.rms_norm_eps);
    attention(l, h, T, batch, cache, tmp);
    for (int64_t i = 0; i < T * hid; ++i) x[i] += tmp[i];
    std::memcpy(h, x, size_t(T * hid) * 4);
    rms_norm(h, T, hid, hid, L.ffn_norm.data(), c.rms_norm_eps);
    if (L.is_moe && ep_)
      moe_ep(moe_layer++, L.moe, h, T, T, tmp);
    else if (L.is_moe)
      moe(L.moe, h, T, tmp);
    else
      mlp(L.mlp, h, T, tmp);
    for (int64_t i = 0; i < T * hid; ++i) x[i] += tmp[i];
    // Mid-pass, after latents were written: where a kernel failure would surface.
    if (l == 0)
      for (const Request& r : batch) fault::point("model.forward", r.id);
  }
  for (const Request& r : batch) r.seq->length += int64_t(r.tokens.size());

  // Final norm and head on the rows whose logits are wanted.
  profile::Scope prof_head("head");
  float* last = Workspace::get(ws.last, size_t(out_rows * hid));
  int64_t row = 0, o = 0;
  for (const Request& r : batch) {
    const int64_t n = int64_t(r.tokens.size());
    const int64_t first = r.all_logits ? 0 : n - 1;
    for (int64_t i = first; i < n; ++i, ++o)
      std::memcpy(last + o * hid, x + (row + i) * hid, size_t(hid) * 4);
    row += n;
  }
  rms_norm(last, out_rows, hid, hid, weights_->final_norm.data(), c.rms_norm_eps);
  logits->resize(size_t(out_rows) * size_t(c.vocab_size));
  gemm::linear(last, out_rows, hid, weights_->lm_head, logits->data(), c.vocab_size);
}

void Model::follow() {
  FF_CHECK(ep_ && !ep_->leader(), "Model::follow: not a follower rank of expert parallelism");
  const ModelConfig& c = config_;
  for (int64_t step = ep_->next_step(); step >= 0; step = ep_->next_step())
    for (int l = 0, moe_layer = 0; l < c.num_hidden_layers; ++l)
      if (weights_->layers[size_t(l)].is_moe)
        moe_ep(moe_layer++, weights_->layers[size_t(l)].moe, nullptr, 0, step, nullptr);
}

}  // namespace ff
