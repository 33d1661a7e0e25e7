#include "model/generate.h"

#include <algorithm>
#include <chrono>

namespace ff {

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0;
}

double GenerateResult::decode_tokens_per_second() const {
  const double n = tokens.size() > 1 ? double(tokens.size() - 1) : 0;
  return decode_seconds > 0 ? n / decode_seconds : 0;
}

GenerateResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& c = model.config();
  FF_CHECK(!prompt.empty(), "generate: empty prompt");
  options.sampling.validate();
  StopConditions stop = options.stop;
  if (options.ignore_eos) stop.eos_ids.clear();
  if (stop.eos_ids.empty() && !options.ignore_eos) {
    stop.eos_ids = std::vector<int32_t>(c.eos_token_ids.begin(), c.eos_token_ids.end());
    if (std::find(stop.eos_ids.begin(), stop.eos_ids.end(), tokenizer.eos_id()) ==
        stop.eos_ids.end())
      stop.eos_ids.push_back(tokenizer.eos_id());
  }
  const int64_t max_new =
      stop.max_tokens > 0
          ? stop.max_tokens
          : std::max<int64_t>(1, c.max_position_embeddings - int64_t(prompt.size()));
  const int64_t total = int64_t(prompt.size()) + max_new;
  FF_CHECK(total <= c.max_position_embeddings || stop.max_tokens > 0,
           "prompt of {} tokens exceeds the context of {}", prompt.size(),
           c.max_position_embeddings);
  StopChecker checker(stop);
  Sampler sampler(options.sampling);
  StreamDecoder decoder(tokenizer, /*skip_special=*/true);
  KVCache cache(c, (total + kPageSize - 1) / kPageSize,
                options.cache_dtype.value_or(model.default_cache_dtype()));
  KVSequence seq;
  GenerateResult res;
  res.prompt_tokens = int64_t(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;

  auto t0 = clock::now();
  Model::Request req{&seq, prompt, false};
  model.forward(std::span<const Model::Request>(&req, 1), cache, &logits);
  bool first = true;
  for (;;) {
    const int32_t tok = sampler.sample(logits, history, prompt.size());
    auto now = clock::now();
    if (first) res.prefill_seconds = std::chrono::duration<double>(now - t0).count();
    first = false;
    res.tokens.push_back(tok);
    history.push_back(tok);
    const std::string piece = checker.finished() == FinishReason::None ? decoder.push(tok) : "";
    const std::string out = checker.push(tok, piece);
    if (!out.empty() && on_text) on_text(out);
    if (checker.finished() != FinishReason::None) break;
    if (int64_t(res.tokens.size()) >= max_new) break;
    auto d0 = clock::now();
    Model::Request step{&seq, std::span<const int32_t>(&history.back(), 1), false};
    model.forward(std::span<const Model::Request>(&step, 1), cache, &logits);
    res.decode_seconds += std::chrono::duration<double>(clock::now() - d0).count();
  }
  // Held-back text, then bytes of an incomplete UTF-8 sequence at the very end (which the
  // decoder replaces), unless a stop string ended the text.
  const std::string held = checker.flush();
  const std::string residue = checker.finished() == FinishReason::Stop ? "" : decoder.flush();
  if (on_text && !(held + residue).empty()) on_text(held + residue);
  res.text = checker.text() + residue;
  res.finish = checker.finished() == FinishReason::None ? FinishReason::Length : checker.finished();
  return res;
}

}  // namespace ff
