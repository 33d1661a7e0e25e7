// The one generation loop (text/generation.h): the request rules both `fireflyer generate` and the
// engine apply, and how forced tokens become text (stop strings, EOS, length, UTF-8 tails).
#include "text/generation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"

namespace ff {
namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer t = Tokenizer::from_dir(std::string(FF_FIXTURES_DIR) + "/default-model");
  return t;
}

ModelLimits limits(int64_t context = 64) {
  return {context, int64_t(tokenizer().vocab_size()), {1}};
}

// A logits row that makes `id` the greedy choice, and `runner_up` the second most likely.
std::vector<float> forcing(int32_t id, int32_t runner_up = -1) {
  std::vector<float> row(tokenizer().vocab_size(), -5.f);
  if (runner_up >= 0) row[size_t(runner_up)] = 2.f;
  row[size_t(id)] = 4.f;
  return row;
}

int32_t id_of(const std::string& token) {
  const auto id = tokenizer().token_to_id(token);
  EXPECT_TRUE(id.has_value()) << token;
  return id.value_or(0);
}

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ff::Error";
  return "";
}

// Feeds forced tokens until the generation finishes; returns the concatenated text.
std::string run(Generation& g, const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) {
    if (g.finished()) break;
    std::vector<float> row = forcing(id);
    const Generation::Token t = g.next(row);
    EXPECT_EQ(t.id, id);
    text += t.text;
  }
  return text;
}

TEST(Generation, RequestRules) {
  const std::vector<int32_t> prompt = {0, 5, 6};
  GenerationParams p;
  EXPECT_EQ(expect_error([&] { Generation(tokenizer(), {}, p, limits()); }), "the prompt is empty");
  const int64_t vocab = limits().vocab_size;
  EXPECT_EQ(expect_error([&] {
              Generation(tokenizer(), {0, int32_t(vocab)}, p, limits());
            }),
            "prompt token id " + std::to_string(vocab) + " is outside the vocabulary [0, " +
                std::to_string(vocab) + ")");
  EXPECT_EQ(
      expect_error([&] { Generation(tokenizer(), std::vector<int32_t>(8, 5), p, limits(8)); }),
      "the prompt has 8 tokens, which leaves no room in the context of 8");
  p.stop.max_tokens = 62;
  EXPECT_EQ(expect_error([&] { Generation(tokenizer(), prompt, p, limits()); }),
            "the context is 64 tokens, but 65 were requested (3 in the prompt, 62 max_tokens)");
  p.stop.max_tokens = 61;
  EXPECT_EQ(Generation(tokenizer(), prompt, p, limits()).params().stop.max_tokens, 61);
  p.stop.max_tokens = -1;  // the rest of the context
  EXPECT_EQ(Generation(tokenizer(), prompt, p, limits()).params().stop.max_tokens, 61);
  p.stop.max_tokens = 0;
  EXPECT_EQ(expect_error([&] { Generation(tokenizer(), prompt, p, limits()); }),
            "max_tokens must be >= 1, got 0");
  p.stop.max_tokens = -1;
  p.top_logprobs = 21;
  EXPECT_EQ(expect_error([&] { Generation(tokenizer(), prompt, p, limits()); }),
            "top_logprobs must be in [0, 20], got 21");
  p.top_logprobs = 0;
  p.sampling.temperature = -1;
  EXPECT_NE(expect_error([&] { Generation(tokenizer(), prompt, p, limits()); }).find("temperature"),
            std::string::npos);
}

TEST(Generation, EosIdsDefaultToTheModelsAndTheTokenizers) {
  GenerationParams p;
  ModelLimits l = limits();
  l.eos_ids = {7};
  Generation g(tokenizer(), {0, 5}, p, l);
  EXPECT_EQ(g.params().stop.eos_ids, (std::vector<int32_t>{7, tokenizer().eos_id()}));
  p.stop.eos_ids = {9};  // the caller's own list is kept
  EXPECT_EQ(Generation(tokenizer(), {0, 5}, p, l).params().stop.eos_ids, std::vector<int32_t>{9});
  p.ignore_eos = true;
  EXPECT_TRUE(Generation(tokenizer(), {0, 5}, p, l).params().stop.eos_ids.empty());
}

TEST(Generation, TextStopsAndFinishReasons) {
  const std::vector<int32_t> hello = tokenizer().encode(" the lady said no", false);
  ASSERT_GE(hello.size(), 3u);
  const std::string full = tokenizer().decode(hello);
  {  // length: every token's text, the last one finishing
    GenerationParams p;
    p.stop.max_tokens = int(hello.size());
    Generation g(tokenizer(), {0}, p, limits());
    EXPECT_EQ(run(g, hello), full);
    EXPECT_EQ(g.finish_reason(), FinishReason::Length);
    EXPECT_EQ(g.generated(), int64_t(hello.size()));
    EXPECT_EQ(g.tokens().size(), hello.size() + 1);
    EXPECT_EQ(g.prompt_length(), 1u);
  }
  {  // a stop string: the text before it, nothing after
    GenerationParams p;
    p.stop.stop_strings = {"lady"};
    Generation g(tokenizer(), {0}, p, limits());
    EXPECT_EQ(run(g, hello), full.substr(0, full.find("lady")));
    EXPECT_EQ(g.finish_reason(), FinishReason::Stop);
  }
  {  // EOS: the text so far; the EOS piece is not text
    GenerationParams p;
    Generation g(tokenizer(), {0}, p, limits());
    std::vector<int32_t> ids = hello;
    ids.insert(ids.begin() + 2, tokenizer().eos_id());
    EXPECT_EQ(run(g, ids),
              tokenizer().decode(std::vector<int32_t>(hello.begin(), hello.begin() + 2)));
    EXPECT_EQ(g.finish_reason(), FinishReason::Stop);
    EXPECT_EQ(g.generated(), 3);
  }
  {
    GenerationParams p;
    p.stop.max_tokens = 1;
    Generation g(tokenizer(), {0}, p, limits());
    run(g, hello);
    std::vector<float> row = forcing(5);
    EXPECT_THROW(g.next(row), Error);  // after it finished
  }
}

// A character split across tokens is held back until it completes; a generation that ends by
// length in the middle of one flushes U+FFFD, one that ends by EOS drops the partial bytes.
TEST(Generation, Utf8TailsAtTheEnd) {
  const int32_t lead = id_of("Ã"), cont = id_of("©");  // bytes C3 A9: "é"
  {
    GenerationParams p;
    p.stop.max_tokens = 3;
    Generation g(tokenizer(), {0}, p, limits());
    std::vector<float> a = forcing(lead), b = forcing(cont), c = forcing(lead);
    EXPECT_EQ(g.next(a).text, "");
    EXPECT_EQ(g.next(b).text, "\xC3\xA9");
    EXPECT_EQ(g.next(c).text, "\xEF\xBF\xBD");  // length in mid-character
  }
  {
    GenerationParams p;
    Generation g(tokenizer(), {0}, p, limits());
    EXPECT_EQ(run(g, {lead, tokenizer().eos_id()}), "");
    EXPECT_EQ(g.finish_reason(), FinishReason::Stop);
  }
}

TEST(Generation, LogprobsAreThePenalizedDistribution) {
  GenerationParams p;
  p.logprobs = true;
  p.top_logprobs = 2;
  Generation g(tokenizer(), {0}, p, limits());
  std::vector<float> row = forcing(40, 41);
  const Generation::Token t = g.next(row);
  ASSERT_TRUE(t.logprob.has_value());
  EXPECT_EQ(t.logprob->id, 40);
  ASSERT_EQ(t.logprob->top.size(), 2u);
  EXPECT_EQ(t.logprob->top[0].id, 40);
  EXPECT_EQ(t.logprob->top[1].id, 41);
  double z = 0;
  for (float v : row) z += std::exp(double(v));
  EXPECT_NEAR(t.logprob->logprob, 4.0 - std::log(z), 1e-5);
  EXPECT_NEAR(t.logprob->top[1].logprob, 2.0 - std::log(z), 1e-5);
  GenerationParams q;
  Generation h(tokenizer(), {0}, q, limits());
  std::vector<float> row2 = forcing(40);
  EXPECT_FALSE(h.next(row2).logprob.has_value());
}

TEST(Generation, NothingToSampleIsAnError) {
  GenerationParams p;
  Generation g(tokenizer(), {0}, p, limits());
  std::vector<float> row(tokenizer().vocab_size(), -std::numeric_limits<float>::infinity());
  EXPECT_THROW(g.next(row), Error);
}

}  // namespace
}  // namespace ff
