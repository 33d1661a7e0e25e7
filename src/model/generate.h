// Single-sequence text generation: prompt ids in, streamed text out, with sampling and stop
// conditions. The serving engine batches many of these; this is the direct path the CLI uses.
#pragma once
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"
#include "model/stop.h"
#include "model/tokenizer.h"

namespace ff {

struct GenerateOptions {
  SamplingParams sampling;
  StopConditions stop;               // eos_ids empty: the model's and tokenizer's EOS
  bool ignore_eos = false;           // generate through EOS tokens (benchmarks)
  std::optional<DType> cache_dtype;  // default: Model::default_cache_dtype()
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (including a final EOS if one was sampled)
  std::string text;             // emitted text (stop string removed)
  FinishReason finish = FinishReason::None;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;  // prompt forward pass, up to the first sampled token
  double decode_seconds = 0;   // every later token
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Generates from `prompt` until a stop condition; calls on_text with each piece of text that
// is safe to show (no partial stop string, no broken UTF-8).
GenerateResult generate(Model& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text = {});

}  // namespace ff
