// An HF `tokenizer.json` byte-level BPE tokenizer that gives the ids the `tokenizers` library
// gives (DeepSeek-V3's tokenizer and others built the same way).
//
// Encoding follows tokenizers' pipeline step by step:
//   1. added tokens whose `normalized` flag is false are cut out of the raw text (leftmost-longest
//      match, honouring single_word / lstrip / rstrip);
//   2. the normalizer runs on the pieces between them (none, Sequence, Replace, Prepend, Strip;
//      anything else is refused at load time), then added tokens with `normalized` true are cut
//      out of the normalized pieces;
//   3. the pre-tokenizer splits the remaining pieces (Sequence of Split / ByteLevel / Digits /
//      WhitespaceSplit, with every Split behavior and `invert`);
//   4. the BPE model merges each piece by merge rank (merges as "a b" strings or [a, b] pairs);
//   5. with add_special, the post-processor wraps the ids (TemplateProcessing, Bert/Roberta,
//      ByteLevel, Sequence), except where tokenizer_config.json names a Llama tokenizer class:
//      transformers then builds the template from add_bos_token (default true) and
//      add_eos_token (default false), which is how DeepSeek-V3 gets BOS id 0 prepended.
// Decoding maps ids to token strings (added tokens first), drops special ones on request, and runs
// the ByteLevel decoder; invalid UTF-8 in the joined bytes becomes U+FFFD, as in tokenizers.
//
// A Tokenizer is cheap to copy (the tables are shared) and safe to use from several threads.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/chat_template.h"  // the chat format goes with the tokenizer (render_chat)

namespace ff {

// The vocabulary of a GGUF file (llama.cpp's tokenizer.ggml.* keys), for a byte-level BPE
// ("gpt2") tokenizer: what Tokenizer::from_gguf_vocab needs. The caller reads it from the file.
struct GgufVocab {
  std::string model;                     // tokenizer.ggml.model: must be "gpt2"
  std::string pre;                       // tokenizer.ggml.pre: "deepseek-v3" or "deepseek-llm"
  std::vector<std::string> tokens;       // tokenizer.ggml.tokens (id = index)
  std::vector<int32_t> token_types;      // tokenizer.ggml.token_type: 1 normal, 3 control, 4 user
                                         // defined, 5 unused (empty: all normal)
  std::vector<std::string> merges;       // tokenizer.ggml.merges ("a b")
  int32_t bos = -1, eos = -1;            // tokenizer.ggml.bos_token_id / eos_token_id
  bool add_bos = true, add_eos = false;  // tokenizer.ggml.add_bos_token / add_eos_token
  std::string chat_template;             // tokenizer.chat_template ("" when absent)
};

class Tokenizer {
 public:
  // Loads tokenizer.json and, when the second path is non-empty, tokenizer_config.json (BOS /
  // EOS tokens, add_bos_token, chat_template). Throws ff::Error naming the file and the field.
  static Tokenizer from_file(const std::string& tokenizer_json,
                             const std::string& tokenizer_config_json_or_empty);
  // DIR/tokenizer.json plus DIR/tokenizer_config.json when that file exists.
  static Tokenizer from_dir(const std::string& dir);
  // The tokenizer a GGUF file describes, built as the equivalent tokenizer.json: normal tokens
  // form the BPE vocabulary, control tokens become special added tokens and user-defined ones
  // plain added tokens (both matched in raw text, as llama.cpp does), unused ones get no entry;
  // the pre-tokenizer is the one llama.cpp uses for `pre` (its regexes, then ByteLevel);
  // add_bos / add_eos wrap encode(add_special) as a Llama tokenizer does. `source` names the file
  // in errors; ff::Error for another tokenizer model or pre-tokenizer, or malformed tables.
  static Tokenizer from_gguf_vocab(const GgufVocab& vocab, const std::string& source);

  // Token ids of `text` (valid UTF-8, else ff::Error). add_special applies the post-processor
  // (for DeepSeek-V3: BOS id 0 first).
  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  // The text of `ids`: ids with no token are skipped, special added tokens too when skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes one token decodes to (may be part of a UTF-8 sequence); empty for unknown ids.
  std::string token_text(int32_t id) const;

  // The vocabulary string of an id ("Ġthe" for " the"), as tokenizers' id_to_token.
  std::optional<std::string> id_to_token(int32_t id) const;
  // Added tokens first, then the BPE vocabulary, as tokenizers' token_to_id.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  bool is_special(int32_t id) const;

  // From tokenizer_config.json's bos_token / eos_token, else from the post-processor template;
  // -1 when neither names one.
  int32_t bos_id() const;
  int32_t eos_id() const;
  // One past the largest id of the vocabulary and the added tokens (128815 for DeepSeek-V3;
  // the model's embedding may be padded beyond it).
  size_t vocab_size() const;
  // tokenizer_config.json's chat_template, or null.
  const std::string* chat_template() const;

  struct Impl;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Turns ids into text one at a time: push() returns the text that became complete with this id.
// Bytes of a UTF-8 sequence split across tokens are held back until the sequence completes, and
// ill-formed bytes become U+FFFD exactly where decode() would put them, so the pushed pieces plus
// flush() always concatenate to decode(all ids) and each piece is valid UTF-8 on its own.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // Emits what is held back (an incomplete sequence becomes U+FFFD) and resets.
  std::string flush();

 private:
  Tokenizer tokenizer_;  // shares the tables, so the decoder may outlive the caller's copy
  bool skip_special_;
  bool started_ = false;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

}  // namespace ff
