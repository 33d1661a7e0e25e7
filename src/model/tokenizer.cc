// The tokenizer's pipeline stages (added-token matcher, normalizer, pre-tokenizer, BPE,
// post-processor), the encode / decode entry points, and loading tokenizer.json into them.
// See tokenizer.h for the pipeline.
#include "model/tokenizer.h"

#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/mmap_file.h"
#include "model/unicode.h"
#include "model/unicode_regex.h"

namespace ff {
namespace {

using json = nlohmann::json;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Reads fields of one JSON file; every error names the file and the field's path.
struct JsonFile {
  std::string path;

  [[noreturn]] void bad(std::string_view field, std::string_view why) const {
    fail("{}: field '{}': {}", path, field, why);
  }
  const json& at(const json& obj, std::string_view where, const char* key) const {
    const std::string field = where.empty() ? key : fmt::format("{}.{}", where, key);
    if (!obj.is_object()) bad(where, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad(field, "missing");
    return *it;
  }
  std::string str(const json& obj, std::string_view where, const char* key) const {
    const json& v = at(obj, where, key);
    if (!v.is_string()) bad(fmt::format("{}.{}", where, key), "expected a string");
    return v.get<std::string>();
  }
  bool flag(const json& obj, std::string_view where, const char* key, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) bad(fmt::format("{}.{}", where, key), "expected true or false");
    return it->get<bool>();
  }
  int32_t id(const json& v, std::string_view field) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      bad(field, "expected a token id");
    }
    return v.get<int32_t>();
  }
};

json parse_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: malformed JSON: {}", path, e.what());
  }
}

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

struct Span {
  size_t begin, end;
  bool flag;  // a match (before behaviors) / to remove (after)
};

// NormalizedString::split: matches and gaps, then the behavior's grouping, then non-empty pieces.
void split_piece(const std::string& piece, const PreTokenizerStep& step,
                 std::vector<std::string>& out) {
  std::vector<std::pair<size_t, size_t>> found;
  std::vector<Span> spans;
  if (piece.empty()) {
    spans.push_back({0, 0, false});
  } else {
    step.regex->find_all(piece, found);
    size_t prev = 0;
    for (auto [b, e] : found) {
      if (prev != b) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    }
    if (prev != piece.size()) spans.push_back({prev, piece.size(), false});
  }
  if (step.invert) {
    for (Span& s : spans) s.flag = !s.flag;
  }
  std::vector<Span> groups;
  bool previous = false;
  switch (step.behavior) {
    case Behavior::kRemoved:
      groups = spans;
      break;
    case Behavior::kIsolated:
      for (const Span& s : spans) groups.push_back({s.begin, s.end, false});
      break;
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.flag == previous && !groups.empty()) {
          groups.back().end = s.end;
        } else {
          groups.push_back({s.begin, s.end, false});
        }
        previous = s.flag;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.flag && !previous && !groups.empty()) {
          groups.back().end = s.end;
        } else {
          groups.push_back({s.begin, s.end, false});
        }
        previous = s.flag;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->flag && !previous && !groups.empty()) {
          groups.back().begin = it->begin;
        } else {
          groups.push_back({it->begin, it->end, false});
        }
        previous = it->flag;
      }
      std::reverse(groups.begin(), groups.end());
      break;
  }
  for (const Span& g : groups) {
    if (!g.flag && g.end > g.begin) out.push_back(piece.substr(g.begin, g.end - g.begin));
  }
}

std::string byte_level_map(std::string_view s) {
  const auto& alphabet = byte_level_alphabet();
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) out += alphabet[uint8_t(c)];
  return out;
}

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
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
};

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  std::vector<Symbol> syms;
  auto add = [&](int32_t id) {
    const int32_t index = int32_t(syms.size());
    if (index > 0) syms.back().next = index;
    syms.push_back({id, index - 1, -1, true});
  };
  std::optional<int32_t> pending_unk;
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t begin = i;
    utf8_next(word, i);
    s.assign(begin > 0 ? prefix : std::string());
    s.append(word.substr(begin, i - begin));
    if (i == word.size()) s += suffix;
    if (auto it = vocab.find(s); it != vocab.end()) {
      if (pending_unk) add(*std::exchange(pending_unk, std::nullopt));
      add(it->second);
      continue;
    }
    if (byte_fallback) {
      std::vector<int32_t> bytes;
      for (char c : s) {
        auto it = vocab.find(fmt::format("<0x{:02X}>", uint8_t(c)));
        if (it == vocab.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == s.size()) {
        for (int32_t id : bytes) add(id);
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk) add(*pending_unk);
      pending_unk = *unk_id;
    }
  }
  if (pending_unk) add(*pending_unk);

  struct Candidate {
    int32_t rank, pos, id;
    bool operator<(const Candidate& o) const {  // std::priority_queue pops the largest
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const Merge* m = find_merge(syms[i].id, syms[i + 1].id)) {
      queue.push({m->rank, int32_t(i), m->id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = syms[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = syms[cur.next];
    const Merge* m = find_merge(cur.id, right.id);
    if (!m || m->id != top.id) continue;  // an expired candidate
    cur.id = top.id;
    cur.next = right.next;
    right.alive = false;
    if (cur.next >= 0) syms[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* l = find_merge(syms[cur.prev].id, cur.id)) {
        queue.push({l->rank, cur.prev, l->id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* r = find_merge(cur.id, syms[cur.next].id)) {
        queue.push({r->rank, top.pos, r->id});
      }
    }
  }
  for (const Symbol& sym : syms) {
    if (sym.alive) out.push_back(sym.id);
  }
}

// ---- post-processor ----------------------------------------------------------------------------

// One template of the post-processor: the sequence's ids where `ids` is empty, else these ids.
struct TemplatePiece {
  bool sequence;
  std::vector<int32_t> ids;
};
using Template = std::vector<TemplatePiece>;

}  // namespace

// ---- the tokenizer -----------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_tokens, normalized_tokens;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  BpeModel bpe;
  std::vector<Template> post_processor;  // applied in order when add_special
  bool byte_level_decoder = false;

  std::vector<std::string> id_to_token;  // "" where no token
  std::vector<std::string> decoded;      // bytes each id decodes to
  std::vector<bool> special;
  StringToId added_ids;
  int32_t bos = -1, eos = -1;
  std::optional<std::string> chat_template;

  static constexpr size_t kCacheEntries = 1 << 16, kCacheMaxWord = 256;
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;

  std::string normalize(std::string_view text) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;
  void encode_word(const std::string& word, std::vector<int32_t>& ids) const;
};

// Defined in the second half of this file (loading).
std::shared_ptr<const Tokenizer::Impl> load_tokenizer(const std::string& tokenizer_json,
                                                      const std::string& config_json);

std::string Tokenizer::Impl::normalize(std::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::kReplace: {
        std::vector<std::pair<size_t, size_t>> found;
        step.pattern->find_all(s, found);
        if (found.empty()) break;
        std::string out;
        size_t prev = 0;
        for (auto [b, e] : found) {
          out.append(s, prev, b - prev);
          out += step.content;
          prev = e;
        }
        out.append(s, prev);
        s = std::move(out);
        break;
      }
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.content);
        break;
      case NormalizerStep::Kind::kStrip: {
        size_t begin = 0, end = s.size();
        if (step.left) {
          for (size_t i = 0; i < end && is_unicode_white_space(utf8_next(s, i));) begin = i;
        }
        if (step.right) {
          while (end > begin) {
            size_t b = end - 1;
            while (b > begin && (uint8_t(s[b]) & 0xC0) == 0x80) --b;
            size_t i = b;
            if (!is_unicode_white_space(utf8_next(s, i))) break;
            end = b;
          }
        }
        s = s.substr(begin, end - begin);
        break;
      }
    }
  }
  return s;
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  std::vector<std::string> words{std::string(piece)}, next;
  for (const PreTokenizerStep& step : pre_tokenizer) {
    next.clear();
    for (std::string& w : words) {
      if (step.byte_level && step.add_prefix_space && (w.empty() || w[0] != ' ')) w.insert(0, " ");
      if (step.regex) {
        split_piece(w, step, next);
      } else if (!w.empty()) {
        next.push_back(std::move(w));
      }
    }
    if (step.byte_level) {
      for (std::string& w : next) w = byte_level_map(w);
    }
    words.swap(next);
  }
  for (const std::string& w : words) encode_word(w, ids);
}

void Tokenizer::Impl::encode_word(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.size() < kCacheMaxWord) {
    std::lock_guard lock(cache_mu);
    if (auto it = cache.find(word); it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids.size();
  bpe.tokenize(word, ids);
  if (word.size() < kCacheMaxWord) {
    std::lock_guard lock(cache_mu);
    if (cache.size() >= kCacheEntries) cache.clear();
    cache.emplace(word, std::vector<int32_t>(ids.begin() + first, ids.end()));
  }
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json,
                               const std::string& tokenizer_config_json_or_empty) {
  return Tokenizer(load_tokenizer(tokenizer_json, tokenizer_config_json_or_empty));
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  const std::filesystem::path d(dir);
  const std::string config = (d / "tokenizer_config.json").string();
  return from_file((d / "tokenizer.json").string(),
                   std::filesystem::exists(config) ? config : std::string());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& m = *impl_;
  const size_t bad = utf8_find_invalid(text);
  FF_CHECK(bad == std::string_view::npos, "tokenizer input: invalid UTF-8 at byte {}", bad);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  m.raw_tokens.split(text, [&](std::string_view piece, const AddedToken* token) {
    if (token) {
      ids.push_back(token->id);
      return;
    }
    const std::string normalized = m.normalize(piece);
    m.normalized_tokens.split(normalized, [&](std::string_view sub, const AddedToken* t) {
      if (t) {
        ids.push_back(t->id);
      } else {
        m.encode_piece(sub, ids);
      }
    });
  });
  if (!add_special) return ids;
  for (const Template& tmpl : m.post_processor) {
    std::vector<int32_t> wrapped;
    wrapped.reserve(ids.size() + 4);
    for (const TemplatePiece& p : tmpl) {
      const auto& src = p.sequence ? ids : p.ids;
      wrapped.insert(wrapped.end(), src.begin(), src.end());
    }
    ids.swap(wrapped);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= m.decoded.size() || m.id_to_token[id].empty()) continue;
    if (skip_special && m.special[id]) continue;
    if (!m.byte_level_decoder && !first) bytes += ' ';
    bytes += m.decoded[id];
    first = false;
  }
  std::string out;
  utf8_lossy_append(bytes, true, out);
  return out;
}

std::string Tokenizer::token_text(int32_t id) const {
  const Impl& m = *impl_;
  return id >= 0 && size_t(id) < m.decoded.size() ? m.decoded[id] : std::string();
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || size_t(id) >= m.id_to_token.size() || m.id_to_token[id].empty()) return {};
  return m.id_to_token[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const Impl& m = *impl_;
  if (auto it = m.added_ids.find(token); it != m.added_ids.end()) return it->second;
  if (auto it = m.bpe.vocab.find(token); it != m.bpe.vocab.end()) return it->second;
  return {};
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[id];
}
int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos;
}
size_t Tokenizer::vocab_size() const {
  return impl_->id_to_token.size();
}
const std::string* Tokenizer::chat_template() const {
  return impl_->chat_template ? &*impl_->chat_template : nullptr;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  if (!tokenizer_.id_to_token(id)) return {};
  if (!tokenizer_.impl_->byte_level_decoder && started_) pending_ += ' ';
  started_ = true;
  pending_ += tokenizer_.token_text(id);
  std::string out;
  pending_.erase(0, utf8_lossy_append(pending_, false, out));
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  utf8_lossy_append(pending_, true, out);
  pending_.clear();
  started_ = false;
  return out;
}

// ---- loading ----------------------------------------------------------------------------------

namespace {

struct Loader {
  JsonFile file;
  Tokenizer::Impl& m;

  std::shared_ptr<UnicodeRegex> pattern(const json& j, const std::string& where) const {
    const json& p = file.at(j, where, "pattern");
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      return std::make_shared<UnicodeRegex>(
          p["Regex"].get<std::string>(), fmt::format("{}: field '{}.pattern'", file.path, where));
    }
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      return std::make_shared<UnicodeRegex>(
          UnicodeRegex::escape(p["String"].get<std::string>()),
          fmt::format("{}: field '{}.pattern'", file.path, where));
    }
    file.bad(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
  }

  void added_tokens(const json& root) {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_array()) file.bad("added_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& t = (*it)[i];
      const std::string where = fmt::format("added_tokens[{}]", i);
      AddedToken a;
      a.id = file.id(file.at(t, where, "id"), where + ".id");
      a.content = file.str(t, where, "content");
      a.single_word = file.flag(t, where, "single_word", false);
      a.lstrip = file.flag(t, where, "lstrip", false);
      a.rstrip = file.flag(t, where, "rstrip", false);
      a.normalized = file.flag(t, where, "normalized", true);
      a.special = file.flag(t, where, "special", false);
      if (!a.content.empty()) m.added.push_back(std::move(a));
    }
  }

  void normalizer(const json& j, const std::string& where) {
    if (j.is_null()) return;
    const std::string type = file.str(j, where, "type");
    if (type == "Sequence") {
      const json& list = file.at(j, where, "normalizers");
      if (!list.is_array()) file.bad(where + ".normalizers", "expected an array");
      for (size_t i = 0; i < list.size(); ++i) {
        normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i));
      }
    } else if (type == "Replace") {
      m.normalizer.push_back(
          {NormalizerStep::Kind::kReplace, pattern(j, where), file.str(j, where, "content")});
    } else if (type == "Prepend") {
      m.normalizer.push_back({NormalizerStep::Kind::kPrepend, {}, file.str(j, where, "prepend")});
    } else if (type == "Strip") {
      m.normalizer.push_back({NormalizerStep::Kind::kStrip,
                              {},
                              {},
                              file.flag(j, where, "strip_left", true),
                              file.flag(j, where, "strip_right", true)});
    } else {
      file.bad(where + ".type", fmt::format("unsupported normalizer '{}'", type));
    }
  }

  void pre_tokenizer(const json& j, const std::string& where) {
    if (j.is_null()) return;
    const std::string type = file.str(j, where, "type");
    const std::string context = fmt::format("{}: field '{}'", file.path, where);
    PreTokenizerStep step;
    if (type == "Sequence") {
      const json& list = file.at(j, where, "pretokenizers");
      if (!list.is_array()) file.bad(where + ".pretokenizers", "expected an array");
      for (size_t i = 0; i < list.size(); ++i) {
        pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", where, i));
      }
      return;
    } else if (type == "Split") {
      step.regex = pattern(j, where);
      static const std::pair<const char*, Behavior> kBehaviors[] = {
          {"Removed", Behavior::kRemoved},
          {"Isolated", Behavior::kIsolated},
          {"MergedWithPrevious", Behavior::kMergedWithPrevious},
          {"MergedWithNext", Behavior::kMergedWithNext},
          {"Contiguous", Behavior::kContiguous}};
      const std::string behavior = file.str(j, where, "behavior");
      auto found = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                [&](const auto& b) { return behavior == b.first; });
      if (found == std::end(kBehaviors)) {
        file.bad(where + ".behavior", fmt::format("unknown behavior '{}'", behavior));
      }
      step.behavior = found->second;
      step.invert = file.flag(j, where, "invert", false);
    } else if (type == "ByteLevel") {
      step.byte_level = true;
      step.add_prefix_space = file.flag(j, where, "add_prefix_space", true);
      if (file.flag(j, where, "use_regex", true)) {
        step.regex = std::make_shared<UnicodeRegex>(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
            context);
      }
    } else if (type == "Digits") {
      step.regex = std::make_shared<UnicodeRegex>("\\p{N}", context);
      step.behavior = file.flag(j, where, "individual_digits", false) ? Behavior::kIsolated
                                                                      : Behavior::kContiguous;
    } else if (type == "WhitespaceSplit") {
      step.regex = std::make_shared<UnicodeRegex>("\\s", context);
      step.behavior = Behavior::kRemoved;
    } else {
      file.bad(where + ".type", fmt::format("unsupported pre-tokenizer '{}'", type));
    }
    m.pre_tokenizer.push_back(std::move(step));
  }

  std::optional<std::string> optional_str(const json& j, const char* key) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_string()) file.bad(fmt::format("model.{}", key), "expected a string or null");
    return it->get<std::string>();
  }

  void model(const json& root) {
    const json& j = file.at(root, "", "model");
    const std::string type = j.contains("type") ? file.str(j, "model", "type") : "BPE";
    if (type != "BPE") file.bad("model.type", fmt::format("unsupported model type '{}'", type));
    auto dropout = j.find("dropout");
    if (dropout != j.end() && !dropout->is_null() && dropout->get<double>() != 0.0) {
      file.bad("model.dropout", "BPE dropout is not supported");
    }
    BpeModel& bpe = m.bpe;
    bpe.fuse_unk = file.flag(j, "model", "fuse_unk", false);
    bpe.byte_fallback = file.flag(j, "model", "byte_fallback", false);
    bpe.ignore_merges = file.flag(j, "model", "ignore_merges", false);
    bpe.prefix = optional_str(j, "continuing_subword_prefix").value_or("");
    bpe.suffix = optional_str(j, "end_of_word_suffix").value_or("");

    const json& vocab = file.at(j, "model", "vocab");
    if (!vocab.is_object()) file.bad("model.vocab", "expected an object");
    bpe.vocab.reserve(vocab.size());
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        file.bad("model.vocab." + token, "expected a token id");
      }
      bpe.vocab.emplace(token, id.get<int32_t>());
    }
    if (auto unk = optional_str(j, "unk_token")) {
      auto it = bpe.vocab.find(*unk);
      if (it == bpe.vocab.end()) file.bad("model.unk_token", "not in the vocabulary");
      bpe.unk_id = it->second;
    }

    const json& merges = file.at(j, "model", "merges");
    if (!merges.is_array()) file.bad("model.merges", "expected an array");
    bpe.merges.reserve(merges.size());
    auto lookup = [&](const std::string& token, size_t i) {
      auto it = bpe.vocab.find(token);
      if (it == bpe.vocab.end()) {
        file.bad(fmt::format("model.merges[{}]", i),
                 fmt::format("'{}' is not in the vocab", token));
      }
      return it->second;
    };
    int32_t rank = 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      std::string a, b;
      if (e.is_string()) {
        const std::string line = e.get<std::string>();
        if (line.starts_with("#version")) continue;
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          file.bad(fmt::format("model.merges[{}]", i), "expected \"a b\"");
        }
        a = line.substr(0, space);
        b = line.substr(space + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        file.bad(fmt::format("model.merges[{}]", i), "expected \"a b\" or [a, b]");
      }
      if (b.size() < bpe.prefix.size()) file.bad(fmt::format("model.merges[{}]", i), "bad merge");
      const int32_t new_id = lookup(a + b.substr(bpe.prefix.size()), i);
      const uint64_t key = (uint64_t(uint32_t(lookup(a, i))) << 32) | uint32_t(lookup(b, i));
      bpe.merges.insert_or_assign(key, Merge{rank++, new_id});
    }
  }

  void post_processor(const json& j, const std::string& where) {
    if (j.is_null()) return;
    const std::string type = file.str(j, where, "type");
    if (type == "Sequence") {
      const json& list = file.at(j, where, "processors");
      if (!list.is_array()) file.bad(where + ".processors", "expected an array");
      for (size_t i = 0; i < list.size(); ++i) {
        post_processor(list[i], fmt::format("{}.processors[{}]", where, i));
      }
    } else if (type == "TemplateProcessing") {
      const json& single = file.at(j, where, "single");
      const json& specials = file.at(j, where, "special_tokens");
      if (!single.is_array()) file.bad(where + ".single", "expected an array");
      Template tmpl;
      for (const json& piece : single) {
        if (piece.contains("Sequence")) {
          tmpl.push_back({true, {}});
        } else if (piece.contains("SpecialToken")) {
          const std::string name = file.str(piece["SpecialToken"], where + ".single", "id");
          const json& ids = file.at(file.at(specials, where + ".special_tokens", name.c_str()),
                                    where + ".special_tokens." + name, "ids");
          TemplatePiece p{false, {}};
          for (const json& id : ids) p.ids.push_back(file.id(id, where + ".special_tokens"));
          tmpl.push_back(std::move(p));
        } else {
          file.bad(where + ".single", "expected Sequence or SpecialToken items");
        }
      }
      m.post_processor.push_back(std::move(tmpl));
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
      auto token_id = [&](const char* key) {
        const json& pair = file.at(j, where, key);
        if (!pair.is_array() || pair.size() != 2)
          file.bad(where + "." + key, "expected [token, id]");
        return file.id(pair[1], where + "." + key);
      };
      m.post_processor.push_back(
          {{false, {token_id("cls")}}, {true, {}}, {false, {token_id("sep")}}});
    } else if (type != "ByteLevel") {
      file.bad(where + ".type", fmt::format("unsupported post-processor '{}'", type));
    }
  }

  void decoder(const json& root) {
    auto it = root.find("decoder");
    if (it == root.end() || it->is_null()) return;
    const std::string type = file.str(*it, "decoder", "type");
    if (type != "ByteLevel")
      file.bad("decoder.type", fmt::format("unsupported decoder '{}'", type));
    m.byte_level_decoder = true;
  }

  // Token tables for decoding and lookups: added tokens take precedence, as in tokenizers.
  void tables() {
    int32_t max_id = -1;
    for (const auto& [token, id] : m.bpe.vocab) max_id = std::max(max_id, id);
    for (const AddedToken& a : m.added) max_id = std::max(max_id, a.id);
    m.id_to_token.assign(size_t(max_id + 1), std::string());
    for (const auto& [token, id] : m.bpe.vocab) m.id_to_token[id] = token;
    std::unordered_map<std::string, bool> special_contents;
    for (const AddedToken& a : m.added) {
      m.id_to_token[a.id] = a.content;
      m.added_ids.insert_or_assign(a.content, a.id);
      if (a.special) special_contents[a.content] = true;
    }
    // Decoding reads normalized added tokens in their normalized form (tokenizers >= 0.23), and
    // skips a token as special by that string.
    std::vector<std::string> decode_strings = m.id_to_token;
    for (const AddedToken& a : m.added) {
      if (a.normalized) decode_strings[a.id] = m.normalize(a.content);
    }
    m.special.assign(m.id_to_token.size(), false);
    m.decoded.assign(m.id_to_token.size(), std::string());
    for (size_t id = 0; id < m.id_to_token.size(); ++id) {
      const std::string& t = decode_strings[id];
      m.special[id] = special_contents.count(t) > 0;
      std::string bytes;
      bool mapped = m.byte_level_decoder;
      for (size_t i = 0; mapped && i < t.size();) {
        const int b = byte_level_byte(utf8_next(t, i));
        if (b < 0) mapped = false;
        bytes += char(b);
      }
      m.decoded[id] = mapped ? bytes : t;
    }
    for (const AddedToken& a : m.added) {
      if (a.normalized) {
        m.normalized_tokens.add(m.normalize(a.content), &a);
      } else {
        m.raw_tokens.add(a.content, &a);
      }
    }
  }

  // tokenizer_config.json: special token names, BOS/EOS policy, chat template.
  void config(const json& c) {
    auto token_name = [&](const char* key) -> std::optional<std::string> {
      auto it = c.find(key);
      if (it == c.end() || it->is_null()) return {};
      if (it->is_string()) return it->get<std::string>();
      return file.str(*it, key, "content");
    };
    auto resolve = [&](const char* key) {
      auto name = token_name(key);
      if (!name) return -1;
      auto added = m.added_ids.find(*name);
      if (added != m.added_ids.end()) return added->second;
      auto it = m.bpe.vocab.find(*name);
      if (it == m.bpe.vocab.end()) file.bad(key, fmt::format("'{}' is not a token", *name));
      return it->second;
    };
    m.bos = resolve("bos_token");
    m.eos = resolve("eos_token");

    // transformers' Llama tokenizers rebuild the post-processor from these two flags.
    auto cls = c.find("tokenizer_class");
    const std::string tokenizer_class =
        cls != c.end() && cls->is_string() ? cls->get<std::string>() : "";
    if (tokenizer_class == "LlamaTokenizerFast" || tokenizer_class == "LlamaTokenizer" ||
        tokenizer_class == "CodeLlamaTokenizerFast" || tokenizer_class == "CodeLlamaTokenizer") {
      const bool add_bos = file.flag(c, "", "add_bos_token", true);
      const bool add_eos = file.flag(c, "", "add_eos_token", false);
      if (add_bos && m.bos < 0) file.bad("bos_token", "add_bos_token is set but bos_token is not");
      if (add_eos && m.eos < 0) file.bad("eos_token", "add_eos_token is set but eos_token is not");
      Template tmpl;
      if (add_bos) tmpl.push_back({false, {m.bos}});
      tmpl.push_back({true, {}});
      if (add_eos) tmpl.push_back({false, {m.eos}});
      m.post_processor = {std::move(tmpl)};
    }

    auto tmpl = c.find("chat_template");
    if (tmpl != c.end() && tmpl->is_string()) {
      m.chat_template = tmpl->get<std::string>();
    } else if (tmpl != c.end() && tmpl->is_array()) {
      for (const json& named : *tmpl) {
        if (named.is_object() && named.value("name", "") == "default") {
          m.chat_template = file.str(named, "chat_template[]", "template");
        }
      }
    } else if (tmpl != c.end() && !tmpl->is_null()) {
      file.bad("chat_template", "expected a string or a list of named templates");
    }
  }

  // Without a config, BOS / EOS are the special ids the post-processor puts around the text.
  void template_bos_eos() {
    for (const Template& t : m.post_processor) {
      if (m.bos < 0 && t.size() > 1 && !t.front().sequence && !t.front().ids.empty()) {
        m.bos = t.front().ids.front();
      }
      if (m.eos < 0 && t.size() > 1 && !t.back().sequence && !t.back().ids.empty()) {
        m.eos = t.back().ids.back();
      }
    }
  }
};

}  // namespace

std::shared_ptr<const Tokenizer::Impl> load_tokenizer(const std::string& tokenizer_json,
                                                      const std::string& config_json) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  const json root = parse_json_file(tokenizer_json);
  Loader loader{{tokenizer_json}, *impl};
  if (!root.is_object()) loader.file.bad("", "expected a JSON object");
  loader.added_tokens(root);
  loader.normalizer(root.value("normalizer", json()), "normalizer");
  loader.pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer");
  loader.model(root);
  loader.post_processor(root.value("post_processor", json()), "post_processor");
  loader.decoder(root);
  loader.tables();
  if (!config_json.empty()) {
    const json config = parse_json_file(config_json);
    Loader config_loader{{config_json}, *impl};
    if (!config.is_object()) config_loader.file.bad("", "expected a JSON object");
    config_loader.config(config);
  }
  loader.template_bos_eos();
  return impl;
}

}  // namespace ff
