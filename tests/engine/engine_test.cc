// The serving engine against the single-sequence reference path (model/generate.h): greedy
// tokens identical whether requests run alone, batched, chunked, from the prefix cache, or after
// preemption; pages all returned at the end.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "engine/engine.h"

namespace ff::engine {
namespace {

std::string fixture(const std::string& name) {
  return std::string(FF_FIXTURES_DIR) + "/" + name;
}

struct Loaded {
  std::unique_ptr<Model> model;
  Tokenizer tok;
};

Loaded& default_model() {
  static Loaded* m = [] {
    auto* l = new Loaded{Model::load(fixture("default-model")),
                         Tokenizer::from_dir(fixture("default-model"))};
    return l;
  }();
  return *m;
}

struct Result {
  std::vector<int32_t> ids;    // with logprobs on
  std::vector<float> margins;  // top-1 minus top-2 logprob at each step (top_logprobs >= 2)
  std::string text;
  int64_t tokens = 0;
  FinishReason finish = FinishReason::None;
  int64_t cached = 0;
  std::string error;
};

Result drain(Stream& s) {
  Result r;
  for (;;) {
    StreamOutput o = s.take(std::chrono::milliseconds(100));
    r.text += o.text;
    for (const LogprobEntry& e : o.logprobs) {
      r.ids.push_back(e.id);
      r.margins.push_back(e.top.size() >= 2 ? e.top[0].logprob - e.top[1].logprob : 1e9f);
    }
    if (o.finished) {
      r.tokens = o.completion_tokens;
      r.finish = o.finish;
      r.cached = o.cached_prompt_tokens;
      r.error = o.error;
      return r;
    }
  }
}

GenerationParams greedy(int max_tokens) {
  GenerationParams p;
  p.stop.max_tokens = max_tokens;
  return p;
}

// Greedy with the two most likely tokens reported, to tell near ties apart.
GenerationParams greedy_traced(int max_tokens) {
  GenerationParams p = greedy(max_tokens);
  p.ignore_eos = true;
  p.logprobs = true;
  p.top_logprobs = 2;
  return p;
}

// Batched GEMMs and chunked prefill may sum in another order than a lone decode step, so logits
// can differ in the last bits (and a BF16 cache rounds such a difference up). The tokens must be
// the same until the reference itself was a near tie between its top two tokens. With the BF16
// dot kernel (the default on AMD Zen 4 / 5, gemm.h) activations are rounded to bf16, which can
// turn such last bits into a bf16 step: these tests pass with it because decode steps of up to
// 16 rows sum each row alike whatever the batch (fp32 kernels over the rounded X); a decode
// kernel that sums differently at m = 1 than in a batch flipped a 0.0208 gap here (issue 20's
// fourth session). Where that cannot hold, pin the fp32 kernel as tests/server does.
constexpr float kNearTie = 0.02f;  // logprob (= logit) units

void expect_same_greedy(const Result& got, const Result& alone, const std::string& what) {
  ASSERT_EQ(got.ids.size(), alone.ids.size()) << what;
  for (size_t i = 0; i < alone.ids.size(); ++i) {
    if (got.ids[i] == alone.ids[i]) continue;
    EXPECT_LT(alone.margins[i], kNearTie)
        << what << ": token " << i << " differs (" << got.ids[i] << " vs " << alone.ids[i]
        << ") where the reference's top two were " << alone.margins[i] << " apart";
    return;  // after a tie the continuations legitimately differ
  }
}

std::vector<std::string> prompts() {
  return {"It is a truth universally acknowledged", "Mr. Darcy",
          "Elizabeth Bennet was walking to Netherfield when",
          "The ladies of Longbourn soon waited on those of Netherfield. The visit was soon "
          "returned in due form. Miss Bennet's pleasing manners grew on the goodwill of Mrs. "
          "Hurst and Miss Bingley; and though the mother was found to be intolerable, and the "
          "younger sisters not worth speaking to, a wish of being better acquainted with them",
          "Mrs. Bennet said"};
}

std::string reference(const std::string& prompt, int max_tokens) {
  Loaded& m = default_model();
  GenerateOptions opt;
  opt.stop.max_tokens = max_tokens;
  return generate(*m.model, m.tok, m.tok.encode(prompt, true), opt).text;
}

TEST(Engine, GreedyMatchesGenerate) {
  Loaded& m = default_model();
  std::vector<std::string> expected;
  for (const auto& p : prompts()) expected.push_back(reference(p, 24));
  Engine engine(*m.model, m.tok);  // the Model is not thread-safe: references first
  for (size_t i = 0; i < prompts().size(); ++i) {
    Result r = drain(*engine.submit(m.tok.encode(prompts()[i], true), greedy(24)));
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.text, expected[i]) << prompts()[i];
    EXPECT_GE(r.tokens, 1);
  }
  EXPECT_EQ(engine.stats().pages_used, 0);
}

// N concurrent requests give the same tokens as each alone (up to near ties), through batched
// decode and with small prefill chunks mixed into decode steps.
TEST(Engine, ConcurrentEqualsAlone) {
  Loaded& m = default_model();
  std::vector<Result> alone;
  {
    Engine engine(*m.model, m.tok);
    for (const auto& p : prompts())
      alone.push_back(drain(*engine.submit(m.tok.encode(p, true), greedy_traced(24))));
  }
  for (int64_t budget : {int64_t(512), int64_t(7)}) {
    EngineOptions o;
    o.max_batch_tokens = budget;
    Engine engine(*m.model, m.tok, o);
    std::vector<std::shared_ptr<Stream>> streams;
    for (const auto& p : prompts())
      streams.push_back(engine.submit(m.tok.encode(p, true), greedy_traced(24)));
    for (size_t i = 0; i < streams.size(); ++i)
      expect_same_greedy(drain(*streams[i]), alone[i],
                         "budget " + std::to_string(budget) + " prompt " + std::to_string(i));
    EXPECT_EQ(engine.stats().pages_used, 0);
  }
}

// A repeated long prompt starts from the prefix cache and gives the same output.
TEST(Engine, PrefixCacheHitSameOutput) {
  Loaded& m = default_model();
  Engine engine(*m.model, m.tok);
  std::string prompt;
  while (prompt.size() < 1200) prompt += prompts()[3] + " ";
  auto ids = m.tok.encode(prompt, true);
  ASSERT_GT(ids.size(), 130u);
  ids.resize(300);
  Result first = drain(*engine.submit(ids, greedy(16)));
  Result second = drain(*engine.submit(ids, greedy(16)));
  EXPECT_EQ(first.cached, 0);
  EXPECT_EQ(second.cached, int64_t(ids.size() - 1) / 64 * 64);
  EXPECT_EQ(first.text, second.text);
  // A prompt sharing only the first page hits exactly one page.
  auto other = ids;
  other[70] = (other[70] + 1) % 100 + 3;
  Result third = drain(*engine.submit(other, greedy(4)));
  EXPECT_EQ(third.cached, 64);
  EngineStats st = engine.stats();
  EXPECT_EQ(st.pages_used, 0);
  EXPECT_GT(st.prefix_hit_tokens, 0);
}

// A cache too small for all requests at once preempts and resumes; the tokens are those of an
// uncontended run (up to near ties: a resumed request re-prefills its generated tokens).
TEST(Engine, PreemptionResumesWithSameOutput) {
  Loaded& m = default_model();
  EngineOptions o;
  o.num_pages = 16;  // one full context (1024 tokens)
  o.prefix_caching = false;
  std::vector<std::vector<int32_t>> inputs;
  std::string base;
  while (base.size() < 2000) base += prompts()[3] + " ";
  auto ids = m.tok.encode(base, true);
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p(ids.begin() + i, ids.begin() + i + 180);
    p[0] = m.tok.bos_id();
    inputs.push_back(p);
  }
  std::vector<Result> alone;
  {
    Engine roomy(*m.model, m.tok);
    for (auto& p : inputs) alone.push_back(drain(*roomy.submit(p, greedy_traced(100))));
  }
  Engine engine(*m.model, m.tok, o);
  std::vector<std::shared_ptr<Stream>> streams;
  for (auto& p : inputs) streams.push_back(engine.submit(p, greedy_traced(100)));
  for (size_t i = 0; i < streams.size(); ++i) {
    Result r = drain(*streams[i]);
    EXPECT_EQ(r.tokens, 100);
    expect_same_greedy(r, alone[i], "request " + std::to_string(i));
  }
  EngineStats st = engine.stats();
  EXPECT_GT(st.preemptions, 0);
  EXPECT_EQ(st.pages_used, 0);
  EXPECT_EQ(st.pages_free, 16);
}

TEST(Engine, CancelFreesPages) {
  Loaded& m = default_model();
  Engine engine(*m.model, m.tok);
  GenerationParams p = greedy(900);
  p.ignore_eos = true;
  auto s = engine.submit(m.tok.encode(prompts()[0], true), p);
  StreamOutput o = s->take(std::chrono::milliseconds(2000));
  EXPECT_FALSE(o.finished);
  s->cancel();
  Result r = drain(*s);
  EXPECT_EQ(r.finish, FinishReason::Cancelled);
  EXPECT_EQ(r.error, "cancelled");
  EXPECT_LT(r.tokens, 900);
  for (int i = 0; i < 100 && engine.stats().pages_used != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(engine.stats().pages_used, 0);
  EXPECT_EQ(engine.stats().requests_cancelled, 1);
}

TEST(Engine, RejectsBadRequests) {
  Loaded& m = default_model();
  Engine engine(*m.model, m.tok);
  EXPECT_THROW(engine.submit({}, greedy(4)), Error);
  EXPECT_THROW(engine.submit({1, 999999}, greedy(4)), Error);
  EXPECT_THROW(engine.submit(std::vector<int32_t>(1024, 5), greedy(4)), Error);
  EXPECT_THROW(engine.submit(std::vector<int32_t>(1000, 5), greedy(100)), Error);
  GenerationParams p = greedy(4);
  p.sampling.temperature = -1;
  EXPECT_THROW(engine.submit({0, 5}, p), Error);
  // Still serving.
  EXPECT_EQ(drain(*engine.submit({0, 5, 6}, greedy(3))).error, "");
}

// Seeded sampling is reproducible and independent of batching.
TEST(Engine, SeededSamplingReproducible) {
  Loaded& m = default_model();
  Engine engine(*m.model, m.tok);
  GenerationParams p = greedy(32);
  p.sampling.temperature = 0.9f;
  p.sampling.top_p = 0.95f;
  p.sampling.seed = 42;
  auto ids = m.tok.encode(prompts()[2], true);
  Result alone = drain(*engine.submit(ids, p));
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(engine.submit(ids, p));
  for (auto& s : streams) EXPECT_EQ(drain(*s).text, alone.text);
}

// The engine's failure paths: each fault-injection point, armed for one request of a batch, fails
// that request alone (FinishReason::Error with the fault named); the others give the tokens they
// give without the fault, every page comes back, and the engine keeps serving.
class EngineFaults : public ::testing::Test {
 protected:
  void TearDown() override { fault::disarm_all(); }
};

// Runs prompts() concurrently with ids "r0".."rN" (one of them the victim) and checks the rest.
void run_with_fault(const char* point, const std::string& victim, EngineOptions o = {}) {
  Loaded& m = default_model();
  std::vector<Result> alone;
  {
    Engine engine(*m.model, m.tok, o);
    for (const auto& p : prompts())
      alone.push_back(drain(*engine.submit(m.tok.encode(p, true), greedy_traced(24))));
  }
  fault::arm(point, {victim, -1});
  Engine engine(*m.model, m.tok, o);
  std::vector<std::shared_ptr<Stream>> streams;
  for (size_t i = 0; i < prompts().size(); ++i)
    streams.push_back(engine.submit(m.tok.encode(prompts()[i], true), greedy_traced(24),
                                    "r" + std::to_string(i)));
  int failed = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    EXPECT_EQ(streams[i]->id(), "r" + std::to_string(i));
    Result r = drain(*streams[i]);
    if (streams[i]->id() == victim) {
      ++failed;
      EXPECT_EQ(r.finish, FinishReason::Error) << point;
      EXPECT_NE(r.error.find(std::string("fault injected at ") + point + " (" + victim + ")"),
                std::string::npos)
          << r.error;
    } else {
      EXPECT_EQ(r.error, "") << point << " " << i;
      EXPECT_EQ(r.finish, FinishReason::Length) << point << " " << i;
      expect_same_greedy(r, alone[i], std::string(point) + " request " + std::to_string(i));
    }
  }
  EXPECT_EQ(failed, 1);
  EXPECT_GE(fault::fired(point), 1);
  fault::disarm_all();
  // Still serving, and nothing leaked.
  EXPECT_EQ(drain(*engine.submit(m.tok.encode(prompts()[0], true), greedy(4))).error, "");
  for (int i = 0; i < 100 && engine.stats().pages_used != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const EngineStats st = engine.stats();
  EXPECT_EQ(st.pages_used, 0) << point;
  EXPECT_EQ(st.requests_failed, 1) << point;
  EXPECT_EQ(st.invariant_violations, 0) << point;
}

TEST_F(EngineFaults, ForwardPassFailsOneRequestOfTheBatch) {
  run_with_fault("model.forward", "r2");
}

TEST_F(EngineFaults, StepFailsOneRequestOfTheBatch) {
  run_with_fault("engine.step", "r1");
}

TEST_F(EngineFaults, PageAllocationFailsOneRequest) {
  run_with_fault("kv.alloc", "r3");
}

// With small chunks the victim fails in the middle of its prefill, holding pages.
TEST_F(EngineFaults, FailureInAChunkedPrefill) {
  EngineOptions o;
  o.max_batch_tokens = 7;
  run_with_fault("model.forward", "r3", o);
}

// A fault that fires once, for whichever request: the batch is rerun request by request and
// every request completes with its usual tokens.
TEST_F(EngineFaults, TransientForwardFaultIsRetried) {
  Loaded& m = default_model();
  std::vector<Result> alone;
  {
    Engine engine(*m.model, m.tok);
    for (const auto& p : prompts())
      alone.push_back(drain(*engine.submit(m.tok.encode(p, true), greedy_traced(16))));
  }
  Engine engine(*m.model, m.tok);
  // Armed once the batch is running, so the fault hits a batched pass.
  std::vector<std::shared_ptr<Stream>> streams;
  for (const auto& p : prompts())
    streams.push_back(engine.submit(m.tok.encode(p, true), greedy_traced(16)));
  for (int i = 0; i < 1000 && engine.stats().steps < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  fault::arm("model.forward", {"", 1});
  for (size_t i = 0; i < streams.size(); ++i) {
    Result r = drain(*streams[i]);
    EXPECT_EQ(r.error, "");
    expect_same_greedy(r, alone[i], "request " + std::to_string(i));
  }
  EXPECT_EQ(fault::fired("model.forward"), 1);
  EXPECT_EQ(engine.stats().requests_failed, 0);
}

TEST_F(EngineFaults, EngineStopEndsUnfinishedRequestsWithAnError) {
  Loaded& m = default_model();
  std::shared_ptr<Stream> s;
  {
    Engine engine(*m.model, m.tok);
    GenerationParams p = greedy(900);
    p.ignore_eos = true;
    s = engine.submit(m.tok.encode(prompts()[0], true), p);
    s->take(std::chrono::milliseconds(2000));
  }
  Result r = drain(*s);
  EXPECT_EQ(r.finish, FinishReason::Error);
  EXPECT_EQ(r.error, "engine stopped");
}

TEST(FaultPoints, ArmingParsingAndCounts) {
  fault::disarm_all();
  EXPECT_NO_THROW(fault::point("x.y", "k"));
  fault::arm_from_string("x.y=k*2,z");
  EXPECT_NO_THROW(fault::point("x.y", "other"));
  EXPECT_THROW(fault::point("x.y", "k"), InternalError);
  EXPECT_THROW(fault::point("x.y", "k"), InternalError);
  EXPECT_NO_THROW(fault::point("x.y", "k"));  // its two firings are spent
  EXPECT_EQ(fault::fired("x.y"), 2);
  try {
    fault::point("z", "any");
    ADD_FAILURE() << "z did not fire";
  } catch (const InternalError& e) {
    EXPECT_STREQ(e.what(), "fault injected at z (any)");
  }
  EXPECT_THROW(fault::arm_from_string("a*0"), Error);
  EXPECT_THROW(fault::arm_from_string("a*x"), Error);
  EXPECT_THROW(fault::arm_from_string("=k"), Error);
  fault::disarm_all();
  EXPECT_NO_THROW(fault::point("z"));
}

}  // namespace
}  // namespace ff::engine
