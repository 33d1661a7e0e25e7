// Token sampling: penalties, temperature, top-k, top-p (nucleus), min-p, then a draw from the
// renormalized distribution, with a seeded, portable RNG so a request with a seed is reproducible
// on any machine and standard library.
//
// Order of operations (as HF transformers' logits processors and vLLM's sampler):
//   1. penalties, written into the logits in place:
//        repetition (HF/CTRL): for every distinct id in `history`,
//                              logit > 0 ? logit / repetition_penalty : logit * repetition_penalty
//        frequency / presence (OpenAI): for every id generated so far
//        (history[num_prompt_tokens:]),
//                              logit -= frequency_penalty * count; logit -= presence_penalty
//   2. temperature == 0: greedy, the argmax of the penalized logits (lowest id on ties); the
//   filters
//      below and the RNG are not used (the argmax survives every filter anyway).
//   3. temperature: z = (logit - max) / temperature, so p ∝ exp(z) and the top token has z = 0.
//   4. top-k: keep the k largest (ties broken towards the lower id).
//   5. top-p: over the tokens left, sorted by probability (ties: lower id first), keep token i when
//      the renormalized mass of the tokens before it is < top_p. The top token is always kept.
//   6. min-p: keep tokens with p >= min_p * p_max, i.e. z >= log(min_p) (renormalization does not
//      change the ratio, and the top token is always kept).
//   7. draw one token from what is left, renormalized. Exactly one uniform number is drawn per
//      sample() call when temperature > 0, even when only one token is left, so the random stream
//      does not depend on earlier steps' logits.
//
// Non-finite logits: NaN is treated as -inf (never sampled; written back as -inf). -inf tokens are
// never sampled. If some logits are +inf, the draw is uniform over them. If no logit is above -inf
// (all -inf or NaN) sample() throws ff::Error: there is nothing to sample.
//
// Weights exp(z) come from our own vectorized exp (relative error ~1e-7), not libm, so a seed gives
// the same tokens on every x86-64 system; tokens with z < -87 (probability below e^-87 of the top
// one's) get weight 0 and are never drawn. The candidates are walked in a fixed order (by id, or by
// likelihood with ties by id), never in an order an std algorithm leaves unspecified.
//
// Cost per step for vocab V: O(V + history) for penalties and the max, vectorized exp over the
// vocab (or only over the k survivors for k <= V/4, found in one pass with a k-heap). top-p sorts
// only the tokens near the nucleus edge, found with a histogram of the mass over z (buckets 1/16
// wide; only a vocab whose z are nearly all within 1/16 of each other degrades to a full sort).
// Scratch buffers live in the Sampler and are reused, so a warm Sampler does not
// allocate. One Sampler per sequence (it holds the RNG); not thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ff {

struct SamplingParams {
  float temperature = 0.f;         // 0 => greedy (argmax, lowest id on ties); finite, >= 0
  int top_k = 0;                   // 0 => off; >= vocab is the same as off
  float top_p = 1.f;               // nucleus, in (0, 1]; 1 => off
  float min_p = 0.f;               // in [0, 1]; keep tokens with p >= min_p * p_max; 0 => off
  float repetition_penalty = 1.f;  // > 0; 1 => off
  float presence_penalty = 0.f;  // finite; 0 => off (OpenAI allows [-2, 2]; the server checks that)
  float frequency_penalty = 0.f;  // finite; 0 => off
  uint64_t seed = 0;

  // Throws ff::Error naming the first bad field (NaN counts as bad for every float field).
  void validate() const;
  bool greedy() const { return temperature == 0.f; }
};

// Portable PRNG: xoshiro256** seeded through splitmix64. Same seed, same stream, everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();
  double uniform();  // in [0, 1), 53 random bits
 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  // Validates `params` (ff::Error on bad ones) and seeds the RNG from params.seed.
  explicit Sampler(const SamplingParams& params);

  // Picks the next token. `logits` has one entry per vocab id; on return it holds the logits after
  // penalties, with NaN replaced by -inf (temperature and the filters are not written back), which
  // is what top_logprobs() should be given for the API's logprobs. `history` is prompt + generated
  // ids so far; the first `num_prompt_tokens` of it are the prompt, which the repetition penalty
  // counts but the frequency / presence penalties do not (vLLM's rule). Throws ff::Error on an
  // empty vocab, a history id outside [0, vocab), or when no logit is above -inf.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history,
                 size_t num_prompt_tokens = 0);

  const SamplingParams& params() const { return params_; }

  // Logprobs as reported to API clients: log_softmax of `logits` as given, i.e. the model's
  // distribution after penalties but before temperature and the filters (vLLM's default "raw"
  // logprobs). NaN counts as -inf. Writes the n most likely ids, most likely first (ties: lower id
  // first; n is clamped to the vocab size) to *out, and log(sum(exp(logits))) to *logsumexp_out
  // (optional), so the chosen token's logprob is logits[id] - logsumexp. Throws ff::Error for n <
  // 0, an empty vocab, or when no logit is above -inf.
  struct TopLogprob {
    int32_t id;
    float logprob;
  };
  static void top_logprobs(std::span<const float> logits, int n, std::vector<TopLogprob>* out,
                           float* logsumexp_out = nullptr);

 private:
  struct Candidate {
    float z;       // (logit - max) / temperature, <= 0
    float weight;  // exp(z), filled once top-p or the draw needs it
    int32_t id;
  };
  void apply_penalties(std::span<float> logits, std::span<const int32_t> history,
                       size_t num_prompt_tokens);
  int32_t draw(std::span<const float> logits, float max_logit);
  double weigh_candidates();  // sets candidates_[i].weight = exp(z), returns their sum
  // Top-p: keep the nucleus in candidates_, return its mass.
  double keep_nucleus_sorted(double threshold);    // from candidates_ sorted by likelihood
  double keep_nucleus_bucketed(double threshold);  // from z_ / weights_ over the whole vocab

  static constexpr size_t kSortAllBelow = 1024;  // top-p sorts fewer candidates outright
  static constexpr int kBuckets = 1024;          // top-p histogram over z in [-64, 0]
  static constexpr int kBucketsPerUnit = 16;

  SamplingParams params_;
  Rng rng_;
  std::vector<Candidate> candidates_;
  std::vector<float> z_;          // per vocab id
  std::vector<float> weights_;    // per vocab id, then per candidate for the final draw
  std::vector<uint16_t> bucket_;  // per vocab id: top-p histogram bucket
  std::vector<double> bucket_mass_;
  std::vector<Candidate> crossing_;       // top-p: the bucket where the nucleus ends
  std::vector<int32_t> generated_count_;  // per vocab id; all zero between calls
  std::vector<uint8_t> seen_;             // per vocab id; all zero between calls
  std::vector<int32_t> touched_;          // ids set in the two arrays above during one call
};

}  // namespace ff
