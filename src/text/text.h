// fireflyer text: everything between token ids and text, independent of the model (the module's
// public header). It works on ids and logits rows, never on the model.
//   tokenizer.h      HF tokenizer.json byte-level BPE (encode / decode), StreamDecoder
//   chat_template.h  DeepSeek-V3's chat format
//   sampler.h        penalties, temperature, top-k / top-p / min-p, seeded draws, logprobs
//   stop.h           EOS, stop strings, token budget; FinishReason
//   generation.h     the one generation loop over all of the above
#pragma once
#include "text/chat_template.h"
#include "text/generation.h"
#include "text/sampler.h"
#include "text/stop.h"
#include "text/tokenizer.h"
