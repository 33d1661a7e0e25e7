// Models from GGUF files (tests/fixtures/gguf-models/, written by tools/make_gguf_model.py with
// llama.cpp's converter conventions) against the same weights loaded from the HF checkpoints:
// the config field by field, then the logits of prefill and decode. Lossless types (BF16, F32)
// must give bitwise the same logits: the layouts (split k_b / v_b, stacked experts, reversed
// dims) are then exactly right. The Q8_0 file must give the HF model's greedy tokens wherever
// the HF top-2 logits are not near a tie. Then damaged copies: one-line ff::Error, never a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "gemm/linear_kernels.h"
#include "model/model.h"
#include "model_test_util.h"

namespace ff {
namespace {

using testing::fixture;

std::string gguf_fixture(const std::string& name) {
  return fixture("gguf-models/" + name);
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
#define FF_SAME(f) EXPECT_EQ(a.f, b.f) << #f
  FF_SAME(model_type);
  FF_SAME(vocab_size);
  FF_SAME(hidden_size);
  FF_SAME(intermediate_size);
  FF_SAME(num_hidden_layers);
  FF_SAME(num_attention_heads);
  FF_SAME(q_lora_rank);
  FF_SAME(kv_lora_rank);
  FF_SAME(qk_nope_head_dim);
  FF_SAME(qk_rope_head_dim);
  FF_SAME(v_head_dim);
  FF_SAME(n_routed_experts);
  FF_SAME(n_shared_experts);
  FF_SAME(num_experts_per_tok);
  FF_SAME(first_k_dense_replace);
  FF_SAME(scoring);
  FF_SAME(topk_method);
  FF_SAME(max_position_embeddings);
  FF_SAME(tie_word_embeddings);
  FF_SAME(bos_token_id);
  FF_SAME(yarn.enabled);
  FF_SAME(yarn.factor);
  FF_SAME(yarn.original_max_position_embeddings);
  FF_SAME(yarn.beta_fast);
  FF_SAME(yarn.beta_slow);
#undef FF_SAME
  if (a.n_routed_experts > 0) {
    if (a.topk_method != TopkMethod::Greedy) {
      EXPECT_EQ(a.n_group, b.n_group);
      EXPECT_EQ(a.topk_group, b.topk_group);
    }
    EXPECT_EQ(a.moe_intermediate_size, b.moe_intermediate_size);
    EXPECT_EQ(a.norm_topk_prob, b.norm_topk_prob);
    EXPECT_FLOAT_EQ(float(a.routed_scaling_factor), float(b.routed_scaling_factor));
  }
  // The file stores these as f32.
  EXPECT_FLOAT_EQ(float(a.rms_norm_eps), float(b.rms_norm_eps));
  EXPECT_FLOAT_EQ(float(a.rope_theta), float(b.rope_theta));
  EXPECT_FLOAT_EQ(float(a.yarn.mscale_all_dim), float(b.yarn.mscale_all_dim));
  EXPECT_FLOAT_EQ(float(a.yarn.mscale), float(b.yarn.mscale));
  EXPECT_FLOAT_EQ(float(a.softmax_scale()), float(b.softmax_scale()));
  ASSERT_FALSE(b.eos_token_ids.empty());
  EXPECT_EQ(a.eos_token_ids.at(0), b.eos_token_ids.at(0));
}

// Prefill of `prompt`, then `steps` greedy decode steps: every logits row, in order.
std::vector<std::vector<float>> run(Model& m, const std::vector<int32_t>& prompt, int steps,
                                    DType cache_dtype) {
  const int64_t V = m.config().vocab_size;
  KVCache cache(m.config(), 8, cache_dtype);
  KVSequence seq;
  std::vector<float> logits;
  std::vector<std::vector<float>> rows;
  Model::Request req{&seq, prompt, true};
  m.forward({&req, 1}, cache, &logits);
  for (size_t t = 0; t < prompt.size(); ++t)
    rows.emplace_back(logits.begin() + int64_t(t) * V, logits.begin() + int64_t(t + 1) * V);
  for (int s = 0; s < steps; ++s) {
    const int32_t next = testing::argmax(rows.back().data(), size_t(V));
    Model::Request r{&seq, std::span<const int32_t>(&next, 1), false};
    m.forward({&r, 1}, cache, &logits);
    rows.push_back(logits);
  }
  return rows;
}

struct LosslessCase {
  const char* gguf;
  const char* hf;
};

class GgufLossless : public ::testing::TestWithParam<LosslessCase> {};

// The HF model with YaRN's mscale set to mscale_all_dim: GGUF files store only the latter
// (yarn_log_multiplier), and llama.cpp takes mscale equal to it, as the official DeepSeek configs
// have it. tiny-v2-lite's config differs on purpose (mscale 1.0, mscale_all_dim 0.707).
std::unique_ptr<Model> hf_model_as_gguf_sees_it(const std::string& dir) {
  ModelConfig c = ModelConfig::load(dir + "/config.json");
  c.yarn.mscale = c.yarn.mscale_all_dim;
  auto w = ModelWeights::load(c, Checkpoint::open(dir));
  return std::make_unique<Model>(std::move(c), std::move(w));
}

TEST_P(GgufLossless, ConfigAndLogitsMatchTheHfCheckpointBitwise) {
  const LosslessCase& c = GetParam();
  // fp32 products: the loaders' results are the same weights, but a GGUF may store a small
  // tensor as F32 where the checkpoint has BF16, and the BF16 dot kernel (the default on Zen 4 /
  // 5) rounds X for BF16 weights only.
  const gemm::ScopedBf16GemmKernel fma(gemm::Bf16Kernel::Fma);
  auto g = Model::load(gguf_fixture(c.gguf));
  auto h = hf_model_as_gguf_sees_it(fixture(c.hf));
  expect_same_config(g->config(), h->config());
  EXPECT_EQ(g->default_cache_dtype(), h->default_cache_dtype());
  const std::vector<int32_t> prompt = {1, 17, 5, 99, 250, 3, 42, 7, 300, 11, 64};
  for (DType cache : {DType::F32, DType::BF16}) {
    const auto a = run(*g, prompt, 6, cache), b = run(*h, prompt, 6, cache);
    ASSERT_EQ(a.size(), b.size());
    for (size_t r = 0; r < a.size(); ++r)
      ASSERT_EQ(0, std::memcmp(a[r].data(), b[r].data(), a[r].size() * 4))
          << c.gguf << ": logits row " << r << " differ (cache " << dtype_name(cache) << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufLossless,
                         ::testing::Values(LosslessCase{"tiny-v3-bf16.gguf", "tiny-v3-bf16"},
                                           // Before MLA absorption converters kept attn_kv_b
                                           // whole, with per-head key / value lengths.
                                           LosslessCase{"tiny-v3-bf16-legacy.gguf", "tiny-v3-bf16"},
                                           LosslessCase{"tiny-v2-lite-f32.gguf", "tiny-v2-lite"},
                                           LosslessCase{"tiny-v2-glg-f32.gguf", "tiny-v2-glg"}),
                         [](const auto& info) {
                           std::string s = info.param.gguf;
                           s = s.substr(0, s.find(".gguf"));
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(GgufModel, Q8_0GreedyTokensMatchTheBf16ModelAwayFromTies) {
  auto q = Model::load(gguf_fixture("default-model-q8_0.gguf"));
  auto h = Model::load(fixture("default-model"));
  expect_same_config(q->config(), h->config());
  // "It is a truth universally acknowledged" with BOS, as the default model's tokenizer gives it.
  const std::vector<int32_t> prompt = {0, 1424, 366, 260, 1917, 475, 74, 1179, 556, 2761};
  const int64_t V = h->config().vocab_size;
  const auto a = run(*q, prompt, 24, DType::F32), b = run(*h, prompt, 24, DType::F32);
  int compared = 0;
  double worst = 0;
  for (size_t r = 0; r < a.size(); ++r) {
    const float* ref = b[r].data();
    const int32_t top = testing::argmax(ref, size_t(V));
    float second = -1e30f, scale = 0;
    for (int64_t i = 0; i < V; ++i) {
      if (i != top) second = std::max(second, ref[i]);
      scale = std::max(scale, std::abs(ref[i]));
    }
    worst = std::max(worst, testing::max_rel_err(a[r].data(), ref, size_t(V)));
    if (ref[top] - second < 0.02f * scale) continue;  // near a tie: either token is right
    ++compared;
    EXPECT_EQ(testing::argmax(a[r].data(), size_t(V)), top) << "row " << r;
  }
  EXPECT_GT(compared, int(a.size()) / 2);
  // Q8_0 (8-bit values, one f16 scale per 32) moves logits by ~1% of their scale.
  EXPECT_LT(worst, 0.05) << "worst relative logit error of Q8_0 against BF16";
}

// llama.cpp's own greedy tokens on the GGUF fixtures (tools/make_llamacpp_goldens.py, committed):
// fireflyer, teacher-forced with llama.cpp's tokens, picks the same token at every step where
// llama.cpp's top-2 gap is at least 2% of the row's scale (closer ones may flip on summation
// order), and on more than half of the steps in all.
TEST(GgufModel, GreedyTokensMatchLlamaCppAwayFromTies) {
  const auto goldens = nlohmann::json::parse(read_text_file(gguf_fixture("llamacpp_goldens.json")));
  for (const auto& [name, g] : goldens["cases"].items()) {
    auto m = Model::load(gguf_fixture(name));
    const auto prompt = g["prompt"].get<std::vector<int32_t>>();
    const auto want = g["greedy"].get<std::vector<int32_t>>();
    const auto gaps = g["gaps"].get<std::vector<double>>();
    ASSERT_EQ(want.size(), gaps.size());
    const int64_t V = m->config().vocab_size;
    KVCache cache(m->config(), 8, m->default_cache_dtype());
    KVSequence seq;
    std::vector<float> logits;
    Model::Request req{&seq, prompt, false};
    m->forward({&req, 1}, cache, &logits);
    int compared = 0;
    for (size_t s = 0; s < want.size(); ++s) {
      if (gaps[s] >= 0.02) {
        ++compared;
        EXPECT_EQ(testing::argmax(logits.data(), size_t(V)), want[s]) << name << " step " << s;
      }
      Model::Request r{&seq, std::span<const int32_t>(&want[s], 1), false};
      m->forward({&r, 1}, cache, &logits);
    }
    EXPECT_GT(compared, int(want.size()) / 2) << name;
    std::printf("[ %s ] %d of %zu llama.cpp greedy steps away from ties, all matched\n",
                name.c_str(), compared, want.size());
  }
}

// Q4_0 and Q5_0 (llama.cpp's fallback where rows do not fit Q4_K's 256) are d * q with |q| <= 16:
// bound as Q8_0 blocks of the same d and q, exactly (not widened to fp32).
TEST(GgufModel, Q4_0AndQ5_0BindAsExactQ8_0) {
  for (const char* name : {"micro-q4_0.gguf", "micro-q5_0.gguf"}) {
    const GgufFile f(gguf_fixture(name));
    auto m = Model::load(gguf_fixture(name));
    const MlpWeights& mlp = m->weights().layers[0].mlp;
    const MlpWeights& ex = m->weights().layers[1].moe.experts[3];
    const struct {
      const gemm::Weight* w;
      const char* tensor;
      int64_t slab;  // expert index of a stacked tensor, else 0
    } cases[] = {{&mlp.gate, "blk.0.ffn_gate.weight", 0},
                 {&mlp.down, "blk.0.ffn_down.weight", 0},
                 {&ex.up, "blk.1.ffn_up_exps.weight", 3},
                 {&m->weights().lm_head, "output.weight", 0}};
    for (const auto& c : cases) {
      EXPECT_EQ(c.w->block, gemm::Block::Q8_0) << name << " " << c.tensor;
      const GgufTensor& t = f.get_tensor(c.tensor);
      const int64_t k = t.dims[0], rows = t.dims[1];
      const int64_t rb = gemm::row_bytes(t.type, k);
      std::vector<float> want(static_cast<size_t>(k)), got(static_cast<size_t>(k));
      for (int64_t r = 0; r < rows; ++r) {
        gemm::dequantize_gguf(t.type, t.data + (c.slab * rows + r) * rb, k, want.data());
        gemm::dequantize_row(*c.w, r, got.data());
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), size_t(k) * 4))
            << name << " " << c.tensor << " row " << r;
      }
    }
    KVCache cache(m->config(), 4, DType::F32);
    KVSequence seq;
    std::vector<float> logits;
    const std::vector<int32_t> ids = {27, 1, 2, 3};
    Model::Request req{&seq, ids, false};
    m->forward({&req, 1}, cache, &logits);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

// ---- damaged files ----------------------------------------------------------------------

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Replaces the first occurrence of `from` by `to` (same length) after `after` (a unique anchor).
void patch(std::vector<uint8_t>& b, const std::string& anchor, const std::string& from,
           const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  const auto a = std::search(b.begin(), b.end(), anchor.begin(), anchor.end());
  ASSERT_NE(a, b.end()) << anchor;
  const auto it = std::search(a, b.end(), from.begin(), from.end());
  ASSERT_NE(it, b.end()) << from;
  std::copy(to.begin(), to.end(), it);
}

std::string load_error(const std::vector<uint8_t>& bytes, const char* name) {
  const std::string path = ::testing::TempDir() + "/" + name + ".gguf";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  try {
    Model::load(path);
  } catch (const Error& e) {
    std::filesystem::remove(path);
    return e.what();
  }
  std::filesystem::remove(path);
  return "(no error)";
}

std::string le32(uint32_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 4);
}

TEST(GgufModel, DamagedFilesGiveOneLineErrorsNamingTheKeyOrTensor) {
  const auto good = read_bytes(gguf_fixture("tiny-v3-bf16.gguf"));
  ASSERT_FALSE(good.empty());
  struct Case {
    const char* name;
    std::function<void(std::vector<uint8_t>&)> damage;
    const char* expect;
  };
  const std::string arch_key = "general.architecture";
  const Case cases[] = {
      {"arch", [&](auto& b) { patch(b, arch_key, "deepseek2", "deepseek3"); },
       "general.architecture is 'deepseek3', expected 'deepseek2'"},
      {"arch_newline", [&](auto& b) { patch(b, arch_key, "deepseek2", "deep\nseek"); },
       "general.architecture is 'deep\\x0aseek', expected 'deepseek2'"},
      {"missing_key", [&](auto& b) { patch(b, "kv_lora_rank", "kv_lora_rank", "kv_lora_ranX"); },
       "missing metadata key deepseek2.attention.kv_lora_rank"},
      {"wrong_key_type",
       [&](auto& b) {
         // block_count's value type u32 (4) -> f32 (6): same size, so the file stays well-formed.
         patch(b, "deepseek2.block_count", le32(4), le32(6));
       },
       "deepseek2.block_count"},
      {"shape",
       [&](auto& b) {
         // hidden 96 -> 97: every hidden-sized tensor then has the wrong shape.
         patch(b, "deepseek2.embedding_length", le32(96), le32(97));
       },
       "tensor token_embd.weight has shape [384, 96], expected [384, 97]"},
      {"missing_tensor",
       [&](auto& b) { patch(b, "blk.1.attn_q_a.weight", "attn_q_a.", "attn_q_x."); },
       "missing tensor blk.1.attn_q_a.weight"},
      {"unsupported_type",
       [&](auto& b) {
         // blk.0.attn_norm.weight: F32 (0) -> I32 (26), the same 4 bytes an element.
         const std::string name = "blk.0.attn_norm.weight";
         const auto it = std::search(b.begin(), b.end(), name.begin(), name.end());
         ASSERT_NE(it, b.end());
         const size_t type_at = size_t(it - b.begin()) + name.size() + 4 + 8;  // n_dims, dims[0]
         ASSERT_EQ(b[type_at], 0);
         b[type_at] = 26;
       },
       "tensor blk.0.attn_norm.weight has GGUF type I32, which fireflyer does not read"},
  };
  for (const Case& c : cases) {
    auto b = good;
    c.damage(b);
    const std::string msg = load_error(b, c.name);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.name << ": " << msg;
  }
  // Truncated anywhere: an error naming the file, never a crash.
  for (size_t cut :
       {size_t(3), size_t(20), size_t(200), size_t(5000), good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> b(good.begin(), good.begin() + int64_t(cut));
    const std::string msg = load_error(b, "truncated");
    EXPECT_NE(msg, "(no error)") << "cut at " << cut;
    EXPECT_NE(msg.find("truncated.gguf"), std::string::npos) << msg;
  }
}

TEST(GgufModel, PathThatIsNeitherADirectoryNorAGgufFile) {
  const std::string path = ::testing::TempDir() + "/not_a_model.txt";
  {
    std::ofstream f(path);
    f << "hello";
  }
  try {
    Model::load(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a directory or a GGUF file"), std::string::npos)
        << e.what();
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace ff
