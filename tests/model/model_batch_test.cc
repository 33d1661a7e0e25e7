// Batched forward passes give the same logits as running each sequence alone.
#include <gtest/gtest.h>

#include "model/model.h"
#include "model_test_util.h"

namespace ff {
namespace {

using testing::argmax;
using testing::fixture;
using testing::max_rel_err;

std::vector<int32_t> synthetic_prompt(int len, int seed, int vocab) {
  std::vector<int32_t> p;
  uint32_t s = uint32_t(seed) * 2654435761u + 1;
  for (int i = 0; i < len; ++i) {
    s = s * 1664525u + 1013904223u;
    p.push_back(int32_t((s >> 8) % uint32_t(vocab)));
  }
  return p;
}

// Decoding 4 sequences of different lengths in one batch equals decoding each alone. The batched
// GEMMs sum each row in the same order as single-row ones, so differences are at most a few ulps.
TEST(ModelBatch, BatchedDecodeMatchesSingle) {
  if (!testing::fixture_exists("tiny-v3")) GTEST_SKIP() << "fixture tiny-v3 missing";
  auto model = Model::load(fixture("tiny-v3"));
  const int V = model->config().vocab_size;
  const std::vector<int> lens = {1, 17, 64, 70};
  const int steps = 6;

  // Alone: each sequence its own cache.
  std::vector<std::vector<std::vector<float>>> alone(lens.size());
  std::vector<std::vector<int32_t>> tokens(lens.size());
  for (size_t s = 0; s < lens.size(); ++s) {
    KVCache cache(model->config(), 4, DType::F32);
    KVSequence seq;
    auto prompt = synthetic_prompt(lens[s], int(s), V);
    std::vector<float> logits;
    Model::Request r{&seq, prompt, false};
    model->forward({&r, 1}, cache, &logits);
    for (int j = 0; j < steps; ++j) {
      tokens[s].push_back(argmax(logits.data(), V));
      Model::Request d{&seq, std::span<const int32_t>(&tokens[s].back(), 1), false};
      model->forward({&d, 1}, cache, &logits);
      alone[s].push_back(logits);
    }
  }
  // Together: one shared cache; prefill in one mixed batch, then batched decode steps.
  KVCache cache(model->config(), 16, DType::F32);
  std::vector<KVSequence> seqs(lens.size());
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Model::Request> batch;
  for (size_t s = 0; s < lens.size(); ++s) prompts.push_back(synthetic_prompt(lens[s], int(s), V));
  for (size_t s = 0; s < lens.size(); ++s) batch.push_back({&seqs[s], prompts[s], false});
  std::vector<float> logits;
  model->forward(batch, cache, &logits);
  for (int j = 0; j < steps; ++j) {
    batch.clear();
    for (size_t s = 0; s < lens.size(); ++s)
      batch.push_back({&seqs[s], std::span<const int32_t>(&tokens[s][size_t(j)], 1), false});
    model->forward(batch, cache, &logits);
    for (size_t s = 0; s < lens.size(); ++s) {
      EXPECT_LT(max_rel_err(&logits[s * V], alone[s][size_t(j)].data(), V), 1e-5)
          << "sequence " << s << " step " << j;
      if (j + 1 < steps) {
        EXPECT_EQ(argmax(&logits[s * V], V), tokens[s][size_t(j) + 1]);
      }
    }
  }
  for (size_t s = 0; s < lens.size(); ++s) EXPECT_EQ(seqs[s].length, lens[s] + steps);
}

// Chunked prefill (a prompt fed in pieces, then decode) equals a whole-prompt prefill.
TEST(ModelBatch, ChunkedPrefillMatchesWhole) {
  if (!testing::fixture_exists("tiny-v3")) GTEST_SKIP() << "fixture tiny-v3 missing";
  auto model = Model::load(fixture("tiny-v3"));
  const int V = model->config().vocab_size;
  auto prompt = synthetic_prompt(100, 7, V);
  std::vector<float> whole, chunked;
  {
    KVCache cache(model->config(), 4, DType::F32);
    KVSequence seq;
    Model::Request r{&seq, prompt, false};
    model->forward({&r, 1}, cache, &whole);
  }
  KVCache cache(model->config(), 4, DType::F32);
  KVSequence seq;
  for (size_t b = 0; b < prompt.size(); b += 30) {
    const size_t e = std::min(prompt.size(), b + 30);
    Model::Request r{&seq, std::span<const int32_t>(prompt.data() + b, e - b), false};
    model->forward({&r, 1}, cache, &chunked);
  }
  EXPECT_LT(max_rel_err(chunked.data(), whole.data(), V), 1e-5);
}

TEST(ModelBatch, CacheFullIsAnErrorNotACrash) {
  if (!testing::fixture_exists("tiny-v3")) GTEST_SKIP() << "fixture tiny-v3 missing";
  auto model = Model::load(fixture("tiny-v3"));
  KVCache cache(model->config(), 1, DType::F32);
  KVSequence seq;
  auto prompt = synthetic_prompt(65, 1, model->config().vocab_size);
  std::vector<float> logits;
  Model::Request r{&seq, prompt, false};
  try {
    model->forward({&r, 1}, cache, &logits);
    FAIL() << "expected ff::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv cache full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(seq.length, 0);
  const std::vector<int32_t> bad = {model->config().vocab_size};
  Model::Request rb{&seq, bad, false};
  EXPECT_THROW(model->forward({&rb, 1}, cache, &logits), Error);
}

// With the stage profile on, a prefill and a decode step record the model's stages (the
// profile is how bench_model_decode and FF_PROFILE=1 report where a step's time goes).
TEST(ModelBatch, ProfileRecordsTheStages) {
  if (!testing::fixture_exists("tiny-v3")) GTEST_SKIP() << "fixture tiny-v3 missing";
  auto model = Model::load(fixture("tiny-v3"));
  const bool was_on = profile::enabled();
  profile::set_enabled(true);
  profile::reset();
  KVCache cache(model->config(), 4, DType::F32);
  KVSequence seq;
  const auto prompt = synthetic_prompt(10, 3, model->config().vocab_size);
  std::vector<float> logits;
  Model::Request r{&seq, prompt, false};
  model->forward({&r, 1}, cache, &logits);
  const int32_t tok = 1;
  Model::Request d{&seq, std::span<const int32_t>(&tok, 1), false};
  model->forward({&d, 1}, cache, &logits);
  const auto es = profile::entries();
  profile::set_enabled(was_on);
  profile::reset();

  auto calls = [&](const std::string& name) -> int64_t {
    for (const auto& e : es)
      if (e.name == name) return e.calls;
    return 0;
  };
  const int64_t layers = model->config().num_hidden_layers;
  int64_t moe_layers = 0;
  for (const auto& l : model->weights().layers) moe_layers += l.is_moe ? 1 : 0;
  EXPECT_EQ(calls("forward"), 2);
  EXPECT_EQ(calls("head"), 2);
  EXPECT_EQ(calls("attn.in_proj"), 2 * layers);
  EXPECT_EQ(calls("attn.o_proj"), 2 * layers);
  EXPECT_EQ(calls("attn.prefill"), layers);
  EXPECT_EQ(calls("attn.decode.q_latent"), layers);
  EXPECT_EQ(calls("attn.decode.mla"), layers);
  EXPECT_EQ(calls("attn.decode.out_latent"), layers);
  EXPECT_EQ(calls("moe.route"), 2 * moe_layers);
  EXPECT_EQ(calls("moe.gate_up"), 2 * moe_layers);
  EXPECT_EQ(calls("moe.down"), 2 * moe_layers);
  EXPECT_EQ(calls("mlp"), 2 * (layers - moe_layers));
  EXPECT_GT(moe_layers, 0);
}

}  // namespace
}  // namespace ff
