#include <chrono>

#include "engine/engine.h"

namespace ff::engine {

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0;
}

double GenerateResult::decode_tokens_per_second() const {
  const double n = tokens.size() > 1 ? double(tokens.size() - 1) : 0;
  return decode_seconds > 0 ? n / decode_seconds : 0;
}

GenerateResult generate(Model& model, Generation& gen, std::optional<DType> cache_dtype,
                        const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& c = model.config();
  const std::span<const int32_t> prompt(gen.tokens().data(), gen.prompt_length());
  const int64_t total = int64_t(prompt.size()) + gen.params().stop.max_tokens;
  KVCache cache(c, (total + kPageSize - 1) / kPageSize,
                cache_dtype.value_or(model.default_cache_dtype()));
  KVSequence seq;
  GenerateResult res;
  res.prompt_tokens = int64_t(prompt.size());
  std::vector<float> logits;

  auto t0 = clock::now();
  // The prompt's view stays valid for this call: forward() does not keep it.
  Model::Request req{&seq, prompt, false};
  model.forward(std::span<const Model::Request>(&req, 1), cache, &logits);
  for (;;) {
    const Generation::Token tok = gen.next(logits);
    if (res.tokens.empty())
      res.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    res.tokens.push_back(tok.id);
    res.text += tok.text;
    if (!tok.text.empty() && on_text) on_text(tok.text);
    if (gen.finished()) break;
    auto d0 = clock::now();
    Model::Request step{&seq, std::span<const int32_t>(&gen.tokens().back(), 1), false};
    model.forward(std::span<const Model::Request>(&step, 1), cache, &logits);
    res.decode_seconds += std::chrono::duration<double>(clock::now() - d0).count();
  }
  res.finish = gen.finish_reason();
  return res;
}

GenerateResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text) {
  Generation gen(tokenizer, std::vector<int32_t>(prompt.begin(), prompt.end()), options,
                 model_limits(model));
  return generate(model, gen, options.cache_dtype, on_text);
}

}  // namespace ff::engine
