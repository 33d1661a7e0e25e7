#include "text/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ff {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Independent reference in double: the filtered, renormalized distribution, written the obvious
// way (full sort, softmax, cut, renormalize after each filter).
std::vector<double> reference_distribution(const std::vector<float>& logits,
                                           const SamplingParams& p) {
  const size_t n = logits.size();
  std::vector<double> prob(n, 0.0);
  double mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, double(l));
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp((double(logits[i]) - mx) / p.temperature);
  auto normalize = [&] {
    const double s = std::accumulate(prob.begin(), prob.end(), 0.0);
    for (double& x : prob) x /= s;
  };
  normalize();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return prob[a] > prob[b]; });
  if (p.top_k > 0) {
    for (size_t r = size_t(p.top_k); r < n; ++r) prob[order[r]] = 0.0;
    normalize();
  }
  if (p.top_p < 1.f) {
    double before = 0.0;
    for (size_t r = 0; r < n; ++r) {
      const double x = prob[order[r]];
      if (before >= p.top_p) prob[order[r]] = 0.0;
      before += x;
    }
    normalize();
  }
  if (p.min_p > 0.f) {
    const double pmax = *std::max_element(prob.begin(), prob.end());
    for (double& x : prob)
      if (x < p.min_p * pmax) x = 0.0;
    normalize();
  }
  return prob;
}

std::vector<int> draw_counts(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler sampler(p);
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> work;
  for (int i = 0; i < draws; ++i) {
    work = logits;
    ++counts.at(size_t(sampler.sample(work, {})));
  }
  return counts;
}

// Empirical frequencies against the reference: tokens with probability 0 are never drawn, every
// other token is within 5 standard deviations of its expected frequency (binomial), and Pearson's
// chi-square stays below the 99.9% quantile for its degrees of freedom.
void expect_matches_reference(const std::vector<float>& logits, const SamplingParams& p,
                              int kDraws = 200000) {
  const std::vector<double> expected = reference_distribution(logits, p);
  const std::vector<int> counts = draw_counts(logits, p, kDraws);
  double chi2 = 0.0;
  int nonzero = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double e = expected[i];
    if (e == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " was filtered out but drawn";
      continue;
    }
    ++nonzero;
    const double freq = double(counts[i]) / kDraws;
    const double sigma = std::sqrt(e * (1.0 - e) / kDraws);
    EXPECT_NEAR(freq, e, 5.0 * sigma + 1e-9) << "token " << i;
    chi2 += (counts[i] - kDraws * e) * (counts[i] - kDraws * e) / (kDraws * e);
  }
  // 99.9% quantiles of chi-square with 1..8 degrees of freedom.
  constexpr double kQuantile999[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12};
  ASSERT_TRUE(nonzero >= 2 && nonzero <= 9) << nonzero;
  EXPECT_LT(chi2, kQuantile999[nonzero - 1])
      << "chi-square over " << nonzero - 1 << " degrees of freedom";
}

// Hand-made. At T=1 the mass before each rank is 0 .337 .542 .666 .778 .853 .915 .961 .983 and
// p / p_max is .33 (id 8) and .22 (id 5) around min_p 0.3, so no test sits on a cut point.
const std::vector<float> kLogits = {1.0f, 2.0f, 0.3f, -1.0f, 1.5f, 0.5f, 0.f, -0.7f, 0.9f};

SamplingParams with(float temperature, int top_k = 0, float top_p = 1.f, float min_p = 0.f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = 1234;
  return p;
}

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  Sampler sampler(SamplingParams{});
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits(1000);
    for (float& l : logits) l = normal(gen);
    const size_t expect = size_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(sampler.sample(logits, {}), int32_t(expect));
  }
  std::vector<float> tied = {0.f, 3.f, 1.f, 3.f, 3.f};
  EXPECT_EQ(sampler.sample(tied, {}), 1);
}

TEST(Sampler, GreedyIgnoresFiltersAndSeed) {
  SamplingParams p;
  p.top_k = 2;
  p.top_p = 0.1f;
  p.min_p = 0.5f;
  p.seed = 99;
  Sampler sampler(p);
  std::vector<float> logits = kLogits;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sampler.sample(logits, {}), 1);
}

TEST(Sampler, SameSeedSameSequenceOtherSeedDiffers) {
  auto run = [](uint64_t seed) {
    SamplingParams p = with(1.0f);
    p.seed = seed;
    Sampler sampler(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) {
      std::vector<float> logits = kLogits;
      out.push_back(sampler.sample(logits, {}));
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, RngIsPortable) {
  // xoshiro256** seeded with splitmix64(0), from an independent (Python) implementation of the
  // published algorithms: the stream must not depend on the compiler or standard library.
  Rng golden(0);
  EXPECT_EQ(golden.next_u64(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(golden.next_u64(), 0xbf6e1f784956452aull);
  EXPECT_EQ(golden.next_u64(), 0x1a5f849d4933e6e0ull);
  EXPECT_EQ(Rng(0).uniform(), 0.6012629994179048);
  Rng a(0), b(0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  Rng c(0);
  const uint64_t first = c.next_u64();
  Rng d(1);
  EXPECT_NE(first, d.next_u64());
  Rng e(5);
  double lo = 1.0, hi = 0.0, sum = 0.0;
  for (int i = 0; i < 100000; ++i) {
    const double u = e.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
  }
  EXPECT_LT(lo, 1e-3);
  EXPECT_GT(hi, 1.0 - 1e-3);
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

TEST(Sampler, TemperatureOneMatchesSoftmax) {
  expect_matches_reference(kLogits, with(1.0f));
}
TEST(Sampler, LowTemperatureMatches) {
  expect_matches_reference(kLogits, with(0.6f));
}
TEST(Sampler, HighTemperatureMatches) {
  expect_matches_reference(kLogits, with(1.7f));
}
TEST(Sampler, TopKMatches) {
  expect_matches_reference(kLogits, with(1.0f, 3));
}
TEST(Sampler, SmallTopKMatches) {
  expect_matches_reference(kLogits, with(1.0f, 2));
}  // heap path
TEST(Sampler, TopPMatches) {
  expect_matches_reference(kLogits, with(1.0f, 0, 0.8f));
}
TEST(Sampler, MinPMatches) {
  expect_matches_reference(kLogits, with(1.0f, 0, 1.f, 0.3f));
}
// More candidates than top-p sorts outright, so the nucleus is found through the histogram: the
// hand-made logits plus 1100 tokens at -30 (mass 1e-10 in all, never inside the nucleus). Fewer
// draws: each costs a pass over 1109 logits.
std::vector<float> padded_logits() {
  std::vector<float> logits(1109, -30.f);
  std::copy(kLogits.begin(), kLogits.end(), logits.begin());
  return logits;
}
TEST(Sampler, TopPMatchesOnManyCandidates) {
  expect_matches_reference(padded_logits(), with(1.0f, 0, 0.8f), 50000);
}
TEST(Sampler, TopPAndMinPMatchOnManyCandidates) {
  expect_matches_reference(padded_logits(), with(0.8f, 0, 0.9f, 0.27f), 50000);
}

TEST(Sampler, CombinedFiltersMatch) {
  // T=0.8, then top-5; top-p 0.9 over those five drops the fifth (mass before it .931); min-p
  // 0.27 then drops id 8 (p / p_max .253) and keeps id 0 (.287).
  const SamplingParams p = with(0.8f, 5, 0.9f, 0.27f);
  const std::vector<double> ref = reference_distribution(kLogits, p);
  int kept = 0;
  for (double x : ref) kept += x > 0.0;
  ASSERT_EQ(kept, 3);  // every filter bites and leaves a distribution to test
  expect_matches_reference(kLogits, p);
}

TEST(Sampler, FilteredTokensAreNeverDrawnLargeVocab) {
  // Production vocab: every draw must lie in the set an independent full sort allows.
  constexpr size_t kVocab = 129280;
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = normal(gen);
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });

  SamplingParams p = with(1.0f, 40);
  Sampler top_k(p);
  std::vector<bool> in_top_k(kVocab, false);
  for (int r = 0; r < 40; ++r) in_top_k[order[r]] = true;
  for (int i = 0; i < 300; ++i) {
    std::vector<float> work = logits;
    EXPECT_TRUE(in_top_k[top_k.sample(work, {})]);
  }

  // Nucleus over the whole vocab (no top-k): the reference allowed set from a full sort.
  p = with(1.0f, 0, 0.5f);
  const std::vector<double> ref = reference_distribution(logits, p);
  Sampler nucleus(p);
  size_t allowed = 0;
  for (double x : ref) allowed += x > 0.0;
  EXPECT_GT(allowed, 1000u);  // the nucleus spans many histogram buckets
  for (int i = 0; i < 300; ++i) {
    std::vector<float> work = logits;
    EXPECT_GT(ref[size_t(nucleus.sample(work, {}))], 0.0);
  }
}

TEST(Sampler, RepetitionPenaltyMatchesFormula) {
  SamplingParams p;
  p.repetition_penalty = 1.3f;
  Sampler sampler(p);
  const std::vector<float> original = {2.0f, -1.0f, 0.5f, 0.f, -3.0f, 4.0f};
  std::vector<float> logits = original;
  const std::vector<int32_t> history = {0, 1, 1, 3, 4, 0};  // 2 and 5 unseen; repeats count once
  sampler.sample(logits, history);
  EXPECT_EQ(logits[0], 2.0f / 1.3f);
  EXPECT_EQ(logits[1], -1.0f * 1.3f);
  EXPECT_EQ(logits[2], 0.5f);
  EXPECT_EQ(logits[3], 0.f);
  EXPECT_EQ(logits[4], -3.0f * 1.3f);
  EXPECT_EQ(logits[5], 4.0f);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  SamplingParams p;
  p.frequency_penalty = 0.25f;
  p.presence_penalty = 0.5f;
  p.repetition_penalty = 2.0f;
  Sampler sampler(p);
  const std::vector<float> original = {1.0f, 1.0f, -1.0f, 3.0f};
  std::vector<float> logits = original;
  // Prompt {3, 0}; generated {0, 0, 2}: token 3 gets only the repetition penalty.
  const std::vector<int32_t> history = {3, 0, 0, 0, 2};
  sampler.sample(logits, history, /*num_prompt_tokens=*/2);
  EXPECT_EQ(logits[0], 1.0f / 2.0f - 0.25f * 2.0f - 0.5f);
  EXPECT_EQ(logits[1], 1.0f);
  EXPECT_EQ(logits[2], -1.0f * 2.0f - 0.25f * 1.0f - 0.5f);
  EXPECT_EQ(logits[3], 3.0f / 2.0f);

  // The scratch counts reset between calls: the same input gives the same output.
  std::vector<float> again = original;
  sampler.sample(again, history, 2);
  EXPECT_EQ(again, logits);
}

TEST(Sampler, PenaltyChangesGreedyChoice) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sampler sampler(p);
  std::vector<float> logits = {1.0f, 1.5f, 0.2f};
  const std::vector<int32_t> history = {1};
  EXPECT_EQ(sampler.sample(logits, history), 0);  // 1.5 / 2 = 0.75 < 1.0
}

TEST(Sampler, OnlyOneFiniteLogit) {
  std::vector<float> base(50, -kInf);
  base[17] = -5.0f;
  for (const SamplingParams& p :
       {SamplingParams{}, with(1.0f), with(2.0f, 10, 0.3f, 0.5f), with(1.0f, 0, 1e-6f)}) {
    Sampler sampler(p);
    for (int i = 0; i < 20; ++i) {
      std::vector<float> logits = base;
      EXPECT_EQ(sampler.sample(logits, {}), 17);
    }
  }
}

TEST(Sampler, VocabOfOne) {
  Sampler sampler(with(1.0f, 5, 0.5f, 0.5f));
  std::vector<float> logits = {0.3f};
  EXPECT_EQ(sampler.sample(logits, {}), 0);
  std::vector<float> none;
  EXPECT_THROW(sampler.sample(none, {}), Error);
}

TEST(Sampler, TopKLargerThanVocabIsOff) {
  auto run = [](int top_k) {
    Sampler sampler(with(1.0f, top_k));
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) {
      std::vector<float> logits = kLogits;
      out.push_back(sampler.sample(logits, {}));
    }
    return out;
  };
  EXPECT_EQ(run(1000), run(0));
  EXPECT_EQ(run(int(kLogits.size())), run(0));
}

TEST(Sampler, TinyTopPKeepsTheTopToken) {
  Sampler sampler(with(1.0f, 0, 1e-7f));
  for (int i = 0; i < 100; ++i) {
    std::vector<float> logits = kLogits;
    EXPECT_EQ(sampler.sample(logits, {}), 1);
  }
}

TEST(Sampler, MinPOneKeepsOnlyTheMaximum) {
  Sampler sampler(with(1.0f, 0, 1.f, 1.f));
  for (int i = 0; i < 100; ++i) {
    std::vector<float> logits = kLogits;
    EXPECT_EQ(sampler.sample(logits, {}), 1);
  }
}

TEST(Sampler, NanIsTreatedAsMinusInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Sampler sampler(with(1.0f));
  for (int i = 0; i < 200; ++i) {
    std::vector<float> logits = {nan, 0.f, nan, 0.f, nan};
    const int32_t id = sampler.sample(logits, {});
    EXPECT_TRUE(id == 1 || id == 3) << id;
    EXPECT_EQ(logits[0], -kInf);  // written back for top_logprobs
  }
  Sampler greedy(SamplingParams{});
  std::vector<float> logits = {nan, -1.f, nan};
  EXPECT_EQ(greedy.sample(logits, {}), 1);
}

TEST(Sampler, NothingToSampleThrows) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const SamplingParams& p : {SamplingParams{}, with(1.0f)}) {
    Sampler sampler(p);
    std::vector<float> logits = {nan, -kInf, nan};
    EXPECT_THROW(sampler.sample(logits, {}), Error);
  }
}

TEST(Sampler, PinnedSequenceForASeed) {
  // Regression pin, not a reference: a change here changes what seeded requests return, which
  // needs a reason (the RNG, the exp and the candidate order are all our own code on purpose).
  const std::pair<SamplingParams, std::string> cases[] = {
      {with(1.0f), "050151114048715104514111"},
      {with(0.7f, 4), "101101114148010114014111"},
      {with(1.2f, 0, 0.9f, 0.1f), "151181410182248118540114"},
  };
  for (const auto& [base, expected] : cases) {
    SamplingParams p = base;
    p.seed = 2024;
    Sampler sampler(p);
    std::string seq;
    for (int i = 0; i < 24; ++i) {
      std::vector<float> logits = kLogits;
      seq += char('0' + sampler.sample(logits, {}));
    }
    EXPECT_EQ(seq, expected);
  }
}

TEST(Sampler, SubnormalTemperatureIsUniformOverTheMaxima) {
  Sampler sampler(with(1e-40f));
  int count[4] = {0, 0, 0, 0};
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> logits = {1.f, 2.f, 2.f, 1.99999f};
    ++count[sampler.sample(logits, {})];
  }
  EXPECT_EQ(count[0] + count[3], 0);
  EXPECT_NEAR(count[1] / 2000.0, 0.5, 0.06);
}

TEST(Sampler, PositiveInfinityIsUniformOverThoseTokens) {
  Sampler sampler(with(1.0f));
  int count[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> logits = {kInf, 100.f, kInf, 0.f};
    ++count[sampler.sample(logits, {})];
  }
  EXPECT_EQ(count[1] + count[3], 0);
  EXPECT_NEAR(count[0] / 4000.0, 0.5, 0.05);
}

TEST(Sampler, HistoryIdsAreChecked) {
  SamplingParams p;
  p.repetition_penalty = 1.2f;
  Sampler sampler(p);
  std::vector<float> logits = {1.f, 2.f, 3.f};
  const std::vector<int32_t> bad = {0, 3};
  try {
    sampler.sample(logits, bad);
    FAIL() << "expected ff::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("history token id 3"), std::string::npos) << e.what();
  }
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(sampler.sample(logits, negative), Error);
  const std::vector<int32_t> good = {2};
  EXPECT_THROW(sampler.sample(logits, good, 2), Error);  // num_prompt_tokens > history
  std::vector<float> fresh = {1.f, 2.f, 3.f};
  sampler.sample(fresh, good);  // a failed call left no state behind
  EXPECT_EQ(fresh[0], 1.f);
  EXPECT_EQ(fresh[2], 3.f / 1.2f);
}

void expect_invalid(const SamplingParams& p, const std::string& field) {
  try {
    p.validate();
    FAIL() << "expected ff::Error for " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler{p}, Error);
}

TEST(Sampler, ValidationNamesTheBadParameter) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SamplingParams p;
  EXPECT_NO_THROW(p.validate());
  p = {};
  p.temperature = -0.1f;
  expect_invalid(p, "temperature");
  p = {};
  p.temperature = nan;
  expect_invalid(p, "temperature");
  p = {};
  p.temperature = kInf;
  expect_invalid(p, "temperature");
  p = {};
  p.top_k = -1;
  expect_invalid(p, "top_k");
  p = {};
  p.top_p = 0.f;
  expect_invalid(p, "top_p");
  p = {};
  p.top_p = 1.01f;
  expect_invalid(p, "top_p");
  p = {};
  p.top_p = nan;
  expect_invalid(p, "top_p");
  p = {};
  p.min_p = -0.01f;
  expect_invalid(p, "min_p");
  p = {};
  p.min_p = 1.5f;
  expect_invalid(p, "min_p");
  p = {};
  p.min_p = nan;
  expect_invalid(p, "min_p");
  p = {};
  p.repetition_penalty = 0.f;
  expect_invalid(p, "repetition_penalty");
  p = {};
  p.repetition_penalty = nan;
  expect_invalid(p, "repetition_penalty");
  p = {};
  p.presence_penalty = nan;
  expect_invalid(p, "presence_penalty");
  p = {};
  p.frequency_penalty = -kInf;
  expect_invalid(p, "frequency_penalty");
  p = {};
  p.top_p = 1.f;
  p.min_p = 1.f;
  p.top_k = 1;
  p.temperature = 100.f;
  EXPECT_NO_THROW(p.validate());
}

TEST(Sampler, TopLogprobsMatchLogSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.3f, 2.0f, -kInf, 1.5f};
  double mx = 2.0, sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  const double lse = mx + std::log(sum);

  std::vector<Sampler::TopLogprob> top;
  float got_lse = 0.f;
  Sampler::top_logprobs(logits, 3, &top, &got_lse);
  EXPECT_NEAR(got_lse, lse, 1e-6);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].id, 1);  // tie with id 3: lower id first
  EXPECT_EQ(top[1].id, 3);
  EXPECT_EQ(top[2].id, 5);
  for (const auto& t : top) EXPECT_NEAR(t.logprob, double(logits[size_t(t.id)]) - lse, 1e-6);

  Sampler::top_logprobs(logits, 100, &top, nullptr);  // clamped to the vocab
  ASSERT_EQ(top.size(), logits.size());
  EXPECT_EQ(top.back().id, 4);
  EXPECT_EQ(top.back().logprob, -kInf);
  double total = 0.0;
  for (const auto& t : top) total += std::exp(double(t.logprob));
  EXPECT_NEAR(total, 1.0, 1e-6);

  Sampler::top_logprobs(logits, 0, &top, &got_lse);
  EXPECT_TRUE(top.empty());
  EXPECT_NEAR(got_lse, lse, 1e-6);
  EXPECT_THROW(Sampler::top_logprobs(logits, -1, &top, nullptr), Error);
  const std::vector<float> dead = {-kInf, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(Sampler::top_logprobs(dead, 1, &top, nullptr), Error);
}

TEST(Sampler, TopLogprobsLargeVocabAgreesWithFullSort) {
  constexpr size_t kVocab = 129280;
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = normal(gen);
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  double mx = logits[size_t(order[0])], sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  const double lse = mx + std::log(sum);
  std::vector<Sampler::TopLogprob> top;
  Sampler::top_logprobs(logits, 20, &top, nullptr);
  ASSERT_EQ(top.size(), 20u);
  for (size_t r = 0; r < 20; ++r) {
    EXPECT_EQ(top[r].id, order[r]);
    EXPECT_NEAR(top[r].logprob, double(logits[size_t(order[r])]) - lse, 1e-5);
  }
}

TEST(Sampler, LogprobsOfSampledTokenUsePenalizedLogits) {
  SamplingParams p = with(0.5f);
  p.repetition_penalty = 1.5f;
  Sampler sampler(p);
  std::vector<float> logits = {3.0f, 2.9f, 0.f};
  const std::vector<int32_t> history = {0};
  const int32_t id = sampler.sample(logits, history);
  float lse = 0.f;
  std::vector<Sampler::TopLogprob> top;
  Sampler::top_logprobs(logits, 1, &top, &lse);
  EXPECT_EQ(top[0].id, 1);  // 3.0 / 1.5 = 2.0 < 2.9
  const double ref_lse = std::log(std::exp(2.0) + std::exp(2.9) + 1.0);
  EXPECT_NEAR(lse, ref_lse, 1e-6);
  EXPECT_NEAR(logits[size_t(id)] - lse, double(logits[size_t(id)]) - ref_lse, 1e-6);
}

}  // namespace
}  // namespace ff
