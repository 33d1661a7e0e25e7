// Private to the tokenizer's sources: the data of the pipeline stages (added-token matcher,
// normalizer and pre-tokenizer steps, BPE model, post-processor templates) and Tokenizer::Impl,
// which holds them. tokenizer_load.cc fills an Impl from tokenizer.json; tokenizer.cc runs the
// pipeline and bpe.cc the BPE model. See tokenizer.h for the pipeline.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"
#include "text/unicode.h"
#include "text/unicode_regex.h"

namespace ff::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// ---- added tokens ------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// The added tokens of one pass (normalized or not) with tokenizers' leftmost-longest matching.
class AddedTokenMatcher {
 public:
  // `pattern` is the token's content, normalized for the normalized pass.
  void add(std::string_view pattern, const AddedToken* token) {
    if (pattern.empty()) return;
    uint32_t node = 0;
    for (char c : pattern) {
      const uint8_t b = uint8_t(c);
      uint32_t child = find_child(node, b);
      if (child == 0) {
        child = uint32_t(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(b, child);
      }
      node = child;
    }
    nodes_[node].token = token;
    first_byte_[uint8_t(pattern[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }

  // Calls on_piece(piece, token_or_null) for the pieces of `text`, as AddedVocabulary's
  // find_matches + split_with_indices: tokens (with any stripped spaces) and the text between.
  template <typename OnPiece>
  void split(std::string_view text, OnPiece&& on_piece) const {
    size_t done = 0;  // everything before `done` has been emitted
    for (size_t pos = 0; pos < text.size();) {
      size_t len = 0;
      const AddedToken* token =
          first_byte_[uint8_t(text[pos])] ? longest_at(text, pos, &len) : nullptr;
      if (!token) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + len;
      pos = stop;  // the automaton moves on after a match even when the match is discarded
      if (token->single_word &&
          ((start > 0 && ends_with_word_char(text.substr(0, start))) ||
           (stop < text.size() && starts_with_word_char(text.substr(stop))))) {
        continue;
      }
      if (token->lstrip) start = std::max(done, start - trailing_space(text.substr(0, start)));
      if (token->rstrip) stop += leading_space(text.substr(stop));
      if (done < start) on_piece(text.substr(done, start - done), nullptr);
      on_piece(text.substr(start, stop - start), token);
      done = stop;
      pos = std::max(pos, stop);
    }
    if (done < text.size()) on_piece(text.substr(done), nullptr);
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, uint32_t>> children;
    const AddedToken* token = nullptr;
  };
  uint32_t find_child(uint32_t node, uint8_t b) const {
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == b) return child;
    }
    return 0;
  }
  const AddedToken* longest_at(std::string_view text, size_t pos, size_t* len) const {
    const AddedToken* best = nullptr;
    uint32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = find_child(node, uint8_t(text[i]));
      if (node == 0) break;
      if (nodes_[node].token) {
        best = nodes_[node].token;
        *len = i + 1 - pos;
      }
    }
    return best;
  }
  static size_t trailing_space(std::string_view s) {
    size_t n = s.size();
    while (n > 0) {
      size_t begin = n - 1;
      while (begin > 0 && (uint8_t(s[begin]) & 0xC0) == 0x80) --begin;
      size_t i = begin;
      if (!is_unicode_white_space(utf8_next(s, i))) break;
      n = begin;
    }
    return s.size() - n;
  }
  static size_t leading_space(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
      size_t next = i;
      if (!is_unicode_white_space(utf8_next(s, next))) break;
      i = next;
    }
    return i;
  }

  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_byte_{};
};

// ---- normalizer and pre-tokenizer --------------------------------------------------------------

struct NormalizerStep {
  enum class Kind { kReplace, kPrepend, kStrip } kind;
  std::shared_ptr<UnicodeRegex> pattern;  // kReplace
  std::string content;                    // kReplace, kPrepend
  bool left = false, right = false;       // kStrip
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  std::shared_ptr<UnicodeRegex> regex;  // split by it, when set
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool byte_level = false;  // ByteLevel: prefix space, GPT-2 regex split, byte-to-char mapping
  bool add_prefix_space = false;
};

// ---- BPE model ---------------------------------------------------------------------------------

struct Merge {
  int32_t rank, id;
};

struct BpeModel {
  StringToId vocab;
  std::unordered_map<uint64_t, Merge> merges;
  std::optional<int32_t> unk_id;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix

  const Merge* find_merge(int32_t a, int32_t b) const {
    auto it = merges.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges.end() ? nullptr : &it->second;
  }
  // Appends the ids of `word`, merged by merge rank (bpe.cc).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
};

// ---- post-processor ----------------------------------------------------------------------------

// One template of the post-processor: the sequence's ids where `ids` is empty, else these ids.
struct TemplatePiece {
  bool sequence;
  std::vector<int32_t> ids;
};
using Template = std::vector<TemplatePiece>;

// Builds the tables from tokenizer.json and, when its path is non-empty, tokenizer_config.json
// (tokenizer_load.cc).
std::shared_ptr<const Tokenizer::Impl> load_tokenizer(const std::string& tokenizer_json,
                                                      const std::string& config_json);
// The same from parsed documents; `name` / `config_name` name them in error messages.
std::shared_ptr<const Tokenizer::Impl> load_tokenizer_json(const nlohmann::json& root,
                                                           const std::string& name,
                                                           const nlohmann::json* config,
                                                           const std::string& config_name);

}  // namespace ff::tok

namespace ff {

struct Tokenizer::Impl {
  std::vector<tok::AddedToken> added;
  tok::AddedTokenMatcher raw_tokens, normalized_tokens;
  std::vector<tok::NormalizerStep> normalizer;
  std::vector<tok::PreTokenizerStep> pre_tokenizer;
  tok::BpeModel bpe;
  std::vector<tok::Template> post_processor;  // applied in order when add_special
  bool byte_level_decoder = false;

  std::vector<std::string> id_to_token;  // "" where no token
  std::vector<std::string> decoded;      // bytes each id decodes to
  std::vector<bool> special;
  tok::StringToId added_ids;
  int32_t bos = -1, eos = -1;
  std::optional<std::string> chat_template;

  static constexpr size_t kCacheEntries = 1 << 16, kCacheMaxWord = 256;
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, tok::StringHash, std::equal_to<>>
      cache;

  // The normalizer's steps applied to `text` (tokenizer.cc).
  std::string normalize(std::string_view text) const;
  // Pre-tokenizes one piece and appends the BPE ids of its words (tokenizer.cc).
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;
  // Appends the BPE ids of one pre-tokenized word, through the word cache (bpe.cc).
  void encode_word(const std::string& word, std::vector<int32_t>& ids) const;
};

}  // namespace ff
