// Streaming stop criteria for generation: EOS token ids, a token budget, and stop strings matched
// in the decoded text, which arrives one piece per token.
//
// Semantics (OpenAI's): the text before a matched stop string is emitted, the stop string and
// anything after it are dropped. While streaming, text that could still be the beginning of a stop
// string is held back, so a client never receives part of a stop string that then completes.
//
// Matching is on bytes. Generation stops at the first point of the text where some stop string is
// complete (the earliest end); when several end there, the one that starts earliest (the longest)
// wins. This depends only on the full text, never on how it was split into pieces: with stops
// "bc" and "abcd", the text "abcd" stops after "bc" and emits "a", in one piece or four.
//
// Incomplete UTF-8 at the end of the text (a token that carries the first bytes of a multi-byte
// character) is also held back, so every emitted chunk ends on a character boundary when the text
// is valid UTF-8. Held-back text is released when the checker finishes by EOS or max_tokens, or by
// flush().
//
// An EOS token's piece is not text: it is neither emitted nor matched. Every pushed token,
// including the EOS token, counts towards max_tokens and num_tokens().
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ff {

struct StopConditions {
  std::vector<int32_t> eos_ids;
  std::vector<std::string> stop_strings;  // at most kMaxStopStrings, each 1..kMaxStopStringBytes
  int max_tokens = -1;                    // -1: unlimited, otherwise >= 1

  static constexpr size_t kMaxStopStrings = 16;
  static constexpr size_t kMaxStopStringBytes = 1024;
  // Throws ff::Error naming the bad field: an empty or over-long stop string, too many of them,
  // max_tokens that is neither -1 nor >= 1.
  void validate() const;
};

// Stop and Length end a generation normally; Cancelled (the client went away or asked) and Error
// (the engine failed the request) are set by the serving engine, never by the checker.
enum class FinishReason { None, Stop /* eos or stop string */, Length, Cancelled, Error };

// "stop", "length" (the OpenAI finish_reason strings), "cancelled", "error", or "" for None.
const char* finish_reason_name(FinishReason reason);

class StopChecker {
 public:
  explicit StopChecker(StopConditions conditions);  // validates them (ff::Error)

  // Feeds the next generated token and its decoded text piece; returns the text that is safe to
  // emit now (possibly empty). When this token finishes generation, the returned text is final:
  // everything held back that is not part of a stop string is included. Pushing after the checker
  // has finished throws ff::Error.
  std::string push(int32_t token, std::string_view piece);

  FinishReason finished() const { return finish_; }

  // Releases held-back text that did not turn out to be a stop string, for a caller that ends
  // generation itself (cancelled request, context full). Empty after a finishing push(), which
  // already released it. Call it once, at the end: a stop string that would have spanned the
  // flushed text is no longer caught.
  std::string flush();

  const std::string& text() const { return text_; }  // everything returned so far
  int num_tokens() const { return num_tokens_; }
  // Index into stop_strings of the stop string that ended generation, or -1 (vLLM's stop_reason).
  int matched_stop_string() const { return matched_stop_; }
  // The EOS id that ended generation, or -1.
  int32_t matched_eos() const { return matched_eos_; }

 private:
  std::string emit(size_t n);  // moves the first n held bytes to the output
  size_t hold_length() const;  // how many trailing held bytes must stay held

  StopConditions conditions_;
  std::string held_;  // received but not emitted; never contains a complete stop string
  std::string text_;
  int num_tokens_ = 0;
  FinishReason finish_ = FinishReason::None;
  int matched_stop_ = -1;
  int32_t matched_eos_ = -1;
};

}  // namespace ff
