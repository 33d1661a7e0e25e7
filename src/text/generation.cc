#include "text/generation.h"

#include <algorithm>

#include "core/error.h"

namespace ff {
namespace {

// Checks the prompt against the limits and fills in what the parameters leave to them.
GenerationParams resolve(const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                         const GenerationParams& p, const ModelLimits& limits) {
  const int64_t n = int64_t(prompt.size());
  const int64_t ctx = limits.context_length;
  FF_CHECK(n > 0, "the prompt is empty");
  for (int32_t t : prompt)
    FF_CHECK(t >= 0 && t < limits.vocab_size,
             "prompt token id {} is outside the vocabulary [0, {})", t, limits.vocab_size);
  FF_CHECK(n < ctx, "the prompt has {} tokens, which leaves no room in the context of {}", n, ctx);
  GenerationParams params = p;
  if (params.stop.max_tokens < 0) params.stop.max_tokens = int(ctx - n);
  FF_CHECK(params.stop.max_tokens >= 1, "max_tokens must be >= 1, got {}", params.stop.max_tokens);
  FF_CHECK(n + params.stop.max_tokens <= ctx,
           "the context is {} tokens, but {} were requested ({} in the prompt, {} max_tokens)", ctx,
           n + params.stop.max_tokens, n, params.stop.max_tokens);
  FF_CHECK(params.top_logprobs >= 0 && params.top_logprobs <= 20,
           "top_logprobs must be in [0, 20], got {}", params.top_logprobs);
  if (params.ignore_eos) {
    params.stop.eos_ids.clear();
  } else if (params.stop.eos_ids.empty()) {
    params.stop.eos_ids = limits.eos_ids;
    if (std::find(params.stop.eos_ids.begin(), params.stop.eos_ids.end(), tokenizer.eos_id()) ==
        params.stop.eos_ids.end())
      params.stop.eos_ids.push_back(tokenizer.eos_id());
  }
  return params;
}

}  // namespace

Generation::Generation(const Tokenizer& tokenizer, std::vector<int32_t> prompt,
                       const GenerationParams& params, const ModelLimits& limits)
    : params_(resolve(tokenizer, prompt, params, limits)),
      tokens_(std::move(prompt)),
      prompt_length_(tokens_.size()),
      sampler_(params_.sampling),
      checker_(params_.stop),
      decoder_(tokenizer, /*skip_special=*/true) {}

Generation::Token Generation::next(std::span<float> logits) {
  FF_CHECK(!finished(), "generation: next() after the generation finished");
  Token out;
  out.id = sampler_.sample(logits, tokens_, prompt_length_);
  if (params_.logprobs) {
    // The penalized logits, before temperature and filters: vLLM's "raw" logprobs.
    float lse = 0;
    Sampler::top_logprobs(logits, params_.top_logprobs, &top_scratch_, &lse);
    LogprobEntry e{out.id, logits[size_t(out.id)] - lse, {}};
    for (const auto& t : top_scratch_) e.top.push_back({t.id, t.logprob});
    out.logprob = std::move(e);
  }
  tokens_.push_back(out.id);
  out.text = checker_.push(out.id, decoder_.push(out.id));
  // The checker counts every token against max_tokens, so it also ends the generation by length.
  finish_ = checker_.finished();
  if (finish_ == FinishReason::None) return out;
  // Held-back text, then an incomplete UTF-8 tail, unless EOS or a stop string ended the text.
  out.text += checker_.flush();
  if (finish_ != FinishReason::Stop) out.text += decoder_.flush();
  return out;
}

}  // namespace ff
