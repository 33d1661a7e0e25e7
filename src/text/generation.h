// The one generation loop: everything between a forward pass's logits row and the text a client
// sees, for one sequence. Both the single-sequence path (engine's generate()) and the serving
// engine drive a Generation, so sampling, EOS, stop strings, the token budget, the context limit
// and the streaming flush follow one set of rules.
//
// A Generation owns the sequence's tokens (prompt, then generated), its Sampler (RNG and
// penalties), StopChecker and StreamDecoder. The caller runs the model and hands each next-token
// logits row to next(), until finished().
//
// Rules, checked when it is constructed (ff::Error with a message naming the value):
//   - the prompt is non-empty, every id is inside the model's vocabulary, and it leaves room for
//     at least one token in the context;
//   - max_tokens -1 means "the rest of the context"; otherwise prompt + max_tokens must fit in the
//     context (the same refusal for `fireflyer generate -n` and for the server);
//   - EOS ids default to the model's plus the tokenizer's; ignore_eos clears them;
//   - sampling and stop parameters are valid (Sampler, StopChecker), top_logprobs in [0, 20].
// A generation ends with FinishReason::Stop (EOS or stop string) or Length (max_tokens). On the
// finishing token, next() returns everything held back: the text a stop string did not claim,
// then an incomplete UTF-8 tail (as U+FFFD) unless EOS or a stop string ended it.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "text/sampler.h"
#include "text/stop.h"
#include "text/tokenizer.h"

namespace ff {

struct TokenLogprob {
  int32_t id;
  float logprob;
};

// One generated token's logprob and, when asked for, the most likely alternatives.
struct LogprobEntry {
  int32_t id;
  float logprob;
  std::vector<TokenLogprob> top;
};

struct GenerationParams {
  SamplingParams sampling;
  StopConditions stop;  // eos_ids empty: the model's and tokenizer's; max_tokens -1: to the context
  bool ignore_eos = false;
  bool logprobs = false;
  int top_logprobs = 0;  // alternatives per token (with logprobs), <= 20
};

// What the model imposes on a generation.
struct ModelLimits {
  int64_t context_length = 0;    // positions, prompt plus generated tokens
  int64_t vocab_size = 0;        // logits per row; prompt ids must be below it
  std::vector<int32_t> eos_ids;  // the checkpoint's EOS ids
};

class Generation {
 public:
  Generation(const Tokenizer& tokenizer, std::vector<int32_t> prompt,
             const GenerationParams& params, const ModelLimits& limits);

  struct Token {
    int32_t id = 0;
    std::string text;  // safe to show now; final when this token finished the generation
    std::optional<LogprobEntry> logprob;  // with params().logprobs
  };
  // Samples the next token from `logits` (one row, vocab_size long; penalties are written into
  // it), records it and returns its text. Throws ff::Error when there is nothing to sample (every
  // logit -inf or NaN) or when called after finished().
  Token next(std::span<float> logits);

  bool finished() const { return finish_ != FinishReason::None; }
  FinishReason finish_reason() const { return finish_; }          // None, Stop or Length
  const std::vector<int32_t>& tokens() const { return tokens_; }  // prompt, then generated
  size_t prompt_length() const { return prompt_length_; }
  int64_t generated() const { return int64_t(tokens_.size() - prompt_length_); }
  // The resolved parameters: EOS ids filled in, max_tokens >= 1.
  const GenerationParams& params() const { return params_; }

 private:
  GenerationParams params_;
  std::vector<int32_t> tokens_;
  size_t prompt_length_;
  Sampler sampler_;
  StopChecker checker_;
  StreamDecoder decoder_;
  FinishReason finish_ = FinishReason::None;
  std::vector<Sampler::TopLogprob> top_scratch_;
};

}  // namespace ff
