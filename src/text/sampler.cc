#include "text/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/vec4.h"

namespace ff {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// Strict order "a is more likely than b": higher z (logit) first, lower id on ties. A total order,
// so nth_element / sort give the same result on every standard library.
template <typename T>
bool more_likely(const T& a, const T& b) {
  if (a.z != b.z) return a.z > b.z;
  return a.id < b.id;
}

double sum_lanes(f4 v) {
  return double((v[0] + v[1]) + (v[2] + v[3]));
}

// w[i] = exp(z[i]), or 0 where z[i] < min_z; returns the sum of w. Float partial sums are moved
// into a double every 64 tokens, so the total keeps about 1e-6 relative accuracy at any vocab.
double exp_weights(std::span<const float> z, std::span<float> w, float min_z) {
  const size_t n = z.size();
  double total = 0.0;
  f4 partial = {};
  size_t i = 0;
  auto weigh4 = [min_z](f4 zv) { return zv < min_z ? f4{} : exp_nonpositive(zv); };
  for (; i + 4 <= n; i += 4) {
    const f4 wv = weigh4(load4(&z[i]));
    std::memcpy(&w[i], &wv, sizeof(wv));
    partial += wv;
    if (i % 64 == 60) {
      total += sum_lanes(partial);
      partial = f4{};
    }
  }
  if (i < n) {
    float lanes[4] = {kNegInf, kNegInf, kNegInf, kNegInf};
    std::memcpy(lanes, &z[i], (n - i) * sizeof(float));
    const f4 wv = weigh4(load4(lanes));
    std::memcpy(&w[i], &wv, (n - i) * sizeof(float));
    partial += wv;
  }
  return total + sum_lanes(partial);
}

// Max of x, ignoring NaN (a NaN never compares greater); sets *any_nan.
float max_ignoring_nan(std::span<const float> x, bool* any_nan) {
  const size_t n = x.size();
  f4 m0 = f4{} + kNegInf, m1 = m0;
  i4 nan = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {  // two chains so the max does not wait on itself
    const f4 a = load4(&x[i]), b = load4(&x[i + 4]);
    nan |= (a != a) | (b != b);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  float m = std::max(std::max(m0[0], m0[1]), std::max(m0[2], m0[3]));
  bool found_nan = (nan[0] | nan[1] | nan[2] | nan[3]) != 0;
  for (; i < n; ++i) {
    found_nan |= x[i] != x[i];
    m = x[i] > m ? x[i] : m;
  }
  *any_nan = found_nan;
  return m;
}

// z[i] = (x[i] - max) * scale.
void shift_scale(std::span<const float> x, float max, float scale, std::span<float> z) {
  const size_t n = x.size();
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const f4 v = (load4(&x[i]) - max) * scale;
    std::memcpy(&z[i], &v, sizeof(v));
  }
  for (; i < n; ++i) z[i] = (x[i] - max) * scale;
}

// Index of the token u falls on in the cumulative mass of w (u in [0, sum w)): 16 at a time,
// then one by one inside the block. If rounding puts u past the end, the last token with mass.
size_t pick(std::span<const float> w, double u) {
  const size_t n = w.size();
  double cumulative = 0.0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const f4 block = (load4(&w[i]) + load4(&w[i + 4])) + (load4(&w[i + 8]) + load4(&w[i + 12]));
    const double mass = sum_lanes(block);
    if (u < cumulative + mass) break;
    cumulative += mass;
  }
  for (; i < n; ++i) {
    cumulative += w[i];
    if (u < cumulative) return i;
  }
  for (i = n; i-- > 0;)
    if (w[i] > 0.f) return i;
  return 0;  // unreachable: the top token weighs 1
}

}  // namespace

// ---- SamplingParams ----------------------------------------------------------------------------

void SamplingParams::validate() const {
  FF_CHECK(std::isfinite(temperature) && temperature >= 0.f,
           "sampling: temperature must be a finite number >= 0, got {}", temperature);
  FF_CHECK(top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got {}", top_k);
  FF_CHECK(top_p > 0.f && top_p <= 1.f, "sampling: top_p must be in (0, 1], got {}", top_p);
  FF_CHECK(min_p >= 0.f && min_p <= 1.f, "sampling: min_p must be in [0, 1], got {}", min_p);
  FF_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.f,
           "sampling: repetition_penalty must be a finite number > 0, got {}", repetition_penalty);
  FF_CHECK(std::isfinite(presence_penalty), "sampling: presence_penalty must be finite, got {}",
           presence_penalty);
  FF_CHECK(std::isfinite(frequency_penalty), "sampling: frequency_penalty must be finite, got {}",
           frequency_penalty);
}

// ---- Rng ---------------------------------------------------------------------------------------

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (uint64_t& s : s_) s = splitmix64(&state);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return double(next_u64() >> 11) * 0x1.0p-53;
}

// ---- Sampler -----------------------------------------------------------------------------------

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history,
                        size_t num_prompt_tokens) {
  FF_CHECK(!logits.empty(), "sampler: logits are empty (vocab size 0)");
  FF_CHECK(logits.size() <= size_t(std::numeric_limits<int32_t>::max()),
           "sampler: vocab size {} does not fit token ids", logits.size());
  FF_CHECK(num_prompt_tokens <= history.size(),
           "sampler: num_prompt_tokens {} exceeds history length {}", num_prompt_tokens,
           history.size());
  apply_penalties(logits, history, num_prompt_tokens);

  bool any_nan = false;
  const float max_logit = max_ignoring_nan(logits, &any_nan);
  if (any_nan) {
    for (float& l : logits)
      if (std::isnan(l)) l = kNegInf;
  }
  FF_CHECK(max_logit > kNegInf, "sampler: all {} logits are -inf or NaN, nothing to sample",
           logits.size());
  if (params_.greedy()) {
    // The first index holding the max: the lowest id wins ties.
    return int32_t(std::find(logits.begin(), logits.end(), max_logit) - logits.begin());
  }
  return draw(logits, max_logit);
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> history,
                              size_t num_prompt_tokens) {
  const bool repetition = params_.repetition_penalty != 1.f;
  const bool additive = params_.frequency_penalty != 0.f || params_.presence_penalty != 0.f;
  if (history.empty() || (!repetition && !additive)) return;

  const size_t vocab = logits.size();
  for (int32_t id : history) {  // checked up front so a throw leaves the scratch arrays clean
    FF_CHECK(id >= 0 && size_t(id) < vocab, "sampler: history token id {} outside vocab [0, {})",
             id, vocab);
  }
  if (seen_.size() < vocab) {
    seen_.resize(vocab, 0);
    generated_count_.resize(vocab, 0);
  }
  touched_.clear();
  for (size_t i = 0; i < history.size(); ++i) {
    const int32_t id = history[i];
    if (!seen_[id]) {
      seen_[id] = 1;
      touched_.push_back(id);
    }
    if (i >= num_prompt_tokens) ++generated_count_[id];
  }
  const float rp = params_.repetition_penalty;
  for (int32_t id : touched_) {
    float l = logits[id];
    if (repetition) l = l > 0.f ? l / rp : l * rp;
    if (const int32_t count = generated_count_[id]; count > 0) {
      l -= params_.frequency_penalty * float(count);
      l -= params_.presence_penalty;
    }
    logits[id] = l;
    seen_[id] = 0;
    generated_count_[id] = 0;
  }
}

int32_t Sampler::draw(std::span<const float> logits, float max_logit) {
  const size_t vocab = logits.size();
  const float inv_temperature = 1.f / params_.temperature;
  auto by_likelihood = [](const Candidate& a, const Candidate& b) { return more_likely(a, b); };
  const size_t top_k = size_t(params_.top_k);
  const bool top_p = params_.top_p < 1.f;
  const float min_z = params_.min_p > 0.f ? std::log(params_.min_p) : kNegInf;  // p/p_max = exp(z)
  // Without top-p, min-p only depends on z and on the top token, which every filter keeps, so it
  // can be applied up front and saves the work on every token it drops.
  const float early_min_z = top_p ? kNegInf : min_z;

  // Candidates are kept in a canonical order (by likelihood, or by id then likelihood after the
  // histogram), never in an order left by nth_element or a heap, so a seed draws the same token
  // with every standard library.
  bool nucleus_done = false;
  double total = 0.0;
  candidates_.clear();
  z_.resize(vocab);
  if (std::isinf(max_logit) || std::isinf(inv_temperature)) {
    // (l - max) / T would be NaN for l = max = +inf, or 0 * inf for a subnormal temperature: in
    // both limits the tokens at the max share the mass equally.
    for (size_t i = 0; i < vocab; ++i) z_[i] = logits[i] == max_logit ? 0.f : kNegInf;
  } else {
    shift_scale(logits, max_logit, inv_temperature, z_);
  }
  if (top_k > 0 && top_k * 4 <= vocab) {
    // Small k: one pass with a heap of the k best so far (front = the worst of them). `gate` is
    // what a newcomer must beat: -inf and early min-p at first, then the worst of the heap. Ids
    // arrive in increasing order, so a newcomer that ties the worst never beats it.
    const float entry_gate = early_min_z > kNegInf ? std::nextafter(early_min_z, kNegInf) : kNegInf;
    float gate = entry_gate;
    for (size_t i = 0; i < vocab; ++i) {
      const float z = z_[i];
      if (!(z > gate)) continue;
      if (candidates_.size() < top_k) {
        candidates_.push_back({z, 0.f, int32_t(i)});
        std::push_heap(candidates_.begin(), candidates_.end(), by_likelihood);
      } else {
        std::pop_heap(candidates_.begin(), candidates_.end(), by_likelihood);
        candidates_.back() = {z, 0.f, int32_t(i)};
        std::push_heap(candidates_.begin(), candidates_.end(), by_likelihood);
      }
      if (candidates_.size() == top_k) gate = std::max(entry_gate, candidates_.front().z);
    }
    std::sort(candidates_.begin(), candidates_.end(), by_likelihood);
    total = weigh_candidates();
  } else {
    // Whole vocab as arrays indexed by id: z, then the weights in one vectorized pass.
    if (weights_.size() < vocab) weights_.resize(vocab);
    const std::span<float> weights(weights_.data(), vocab);
    total = exp_weights(z_, weights, early_min_z);
    const bool top_k_cuts = top_k > 0 && top_k < vocab;
    if (!top_k_cuts && !top_p) {
      // Only temperature (and maybe min-p): draw straight from the weights, id = index.
      return int32_t(pick(weights, rng_.uniform() * total));
    }
    if (top_k_cuts || vocab <= kSortAllBelow) {
      // Tokens of weight 0 (z < -87 or filtered) can never be drawn; leave them out.
      for (size_t i = 0; i < vocab; ++i)
        if (weights_[i] > 0.f) candidates_.push_back({z_[i], weights_[i], int32_t(i)});
      if (top_k_cuts && top_k < candidates_.size()) {
        std::nth_element(candidates_.begin(), candidates_.begin() + (top_k - 1), candidates_.end(),
                         by_likelihood);
        candidates_.resize(top_k);
        total = 0.0;
        for (const Candidate& c : candidates_) total += c.weight;
      }
      std::sort(candidates_.begin(), candidates_.end(), by_likelihood);
    } else {
      total = keep_nucleus_bucketed(double(params_.top_p) * total);
      nucleus_done = true;
    }
  }

  if (top_p && !nucleus_done) total = keep_nucleus_sorted(double(params_.top_p) * total);

  if (min_z > early_min_z) {
    std::erase_if(candidates_, [&](const Candidate& c) { return c.z < min_z; });  // stable
    total = 0.0;
    for (const Candidate& c : candidates_) total += c.weight;
  }

  // weights_ only grows: shrinking it would make the next call zero-fill the whole vocab again.
  const size_t n = candidates_.size();
  if (weights_.size() < n) weights_.resize(n);
  for (size_t i = 0; i < n; ++i) weights_[i] = candidates_[i].weight;
  return candidates_[pick(std::span<const float>(weights_.data(), n), rng_.uniform() * total)].id;
}

double Sampler::weigh_candidates() {
  double total = 0.0;
  for (size_t i = 0; i < candidates_.size(); i += 4) {
    float z[4] = {kNegInf, kNegInf, kNegInf, kNegInf};
    const size_t m = std::min<size_t>(4, candidates_.size() - i);
    for (size_t j = 0; j < m; ++j) z[j] = candidates_[i + j].z;
    float w[4];
    const f4 wv = exp_nonpositive(load4(z));
    std::memcpy(w, &wv, sizeof(w));
    for (size_t j = 0; j < m; ++j) {
      candidates_[i + j].weight = w[j];
      total += w[j];
    }
  }
  return total;
}

// candidates_ sorted by likelihood: keep token i while the mass before it is < threshold.
double Sampler::keep_nucleus_sorted(double threshold) {
  double mass_before = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (mass_before >= threshold) {  // never at i = 0: threshold > 0
      candidates_.resize(i);
      break;
    }
    mass_before += candidates_[i].weight;
  }
  return mass_before;
}

// Top-p over the whole vocab (z_, weights_) without sorting it: a histogram of the mass over z in
// steps of 1/kBucketsPerUnit finds the bucket where the cumulative mass crosses the threshold.
// Tokens in more likely buckets are all kept (the mass before any of them is below the
// threshold), tokens in less likely ones all dropped, and only the crossing bucket is sorted.
// candidates_ ends up as the kept tokens: the sure ones by id, then the crossing bucket's.
double Sampler::keep_nucleus_bucketed(double threshold) {
  constexpr uint16_t kNoBucket = kBuckets;  // weight 0: never drawn, in no bucket
  const size_t vocab = z_.size();           // weights_ may be longer: only grows
  bucket_.resize(vocab);
  bucket_mass_.assign(kBuckets, 0.0);
  for (size_t i = 0; i < vocab; ++i) {
    uint16_t bucket = kNoBucket;
    if (weights_[i] > 0.f) {
      const float b = -z_[i] * float(kBucketsPerUnit);  // z <= 0
      bucket = b >= float(kBuckets - 1) ? uint16_t(kBuckets - 1) : uint16_t(b);
      bucket_mass_[bucket] += weights_[i];
    }
    bucket_[i] = bucket;
  }
  uint16_t crossing = kBuckets - 1;
  double mass_before = 0.0;
  for (uint16_t b = 0; b < kBuckets - 1; ++b) {
    if (mass_before + bucket_mass_[b] >= threshold) {
      crossing = b;
      break;
    }
    mass_before += bucket_mass_[b];
  }
  crossing_.clear();
  for (size_t i = 0; i < vocab; ++i) {
    if (bucket_[i] < crossing) {
      candidates_.push_back({z_[i], weights_[i], int32_t(i)});
    } else if (bucket_[i] == crossing) {
      crossing_.push_back({z_[i], weights_[i], int32_t(i)});
    }
  }
  std::sort(crossing_.begin(), crossing_.end(),
            [](const Candidate& a, const Candidate& b) { return more_likely(a, b); });
  double kept_mass = mass_before;
  for (const Candidate& c : crossing_) {
    if (kept_mass >= threshold) break;  // never at the top token: threshold > 0
    candidates_.push_back(c);
    kept_mass += c.weight;
  }
  return kept_mass;
}

void Sampler::top_logprobs(std::span<const float> logits, int n, std::vector<TopLogprob>* out,
                           float* logsumexp_out) {
  FF_CHECK(n >= 0, "top_logprobs: n must be >= 0, got {}", n);
  FF_CHECK(!logits.empty(), "top_logprobs: logits are empty (vocab size 0)");
  auto value = [](float l) { return std::isnan(l) ? kNegInf : l; };

  float max_logit = kNegInf;
  for (float l : logits) max_logit = std::max(max_logit, value(l));
  FF_CHECK(max_logit > kNegInf, "top_logprobs: all {} logits are -inf or NaN", logits.size());
  double sum = 0.0;
  for (float l : logits) {
    const float v = value(l);
    sum += v == max_logit ? 1.0 : std::exp(double(v) - double(max_logit));
  }
  const double log_sum = std::log(sum);
  if (logsumexp_out) *logsumexp_out = float(double(max_logit) + log_sum);

  // The n best through a heap whose front is the worst kept, O(V log n).
  struct Entry {
    float z;
    int32_t id;
  };
  auto better = [](const Entry& a, const Entry& b) { return more_likely(a, b); };
  const size_t want = std::min(size_t(n), logits.size());
  std::vector<Entry> heap;
  heap.reserve(want + 1);
  for (size_t i = 0; i < logits.size() && want > 0; ++i) {
    const Entry e{value(logits[i]), int32_t(i)};
    if (heap.size() < want) {
      heap.push_back(e);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(e, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = e;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  out->clear();
  for (const Entry& e : heap) {
    const double shifted = e.z == max_logit ? 0.0 : double(e.z) - double(max_logit);
    out->push_back({e.id, float(shifted - log_sum)});
  }
}

}  // namespace ff
