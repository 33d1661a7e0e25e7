// The tokenizer's public API and encode / decode: added tokens, normalizer and pre-tokenizer
// around the BPE model, the post-processor, the token lookups, and StreamDecoder. See tokenizer.h
// for the pipeline; tokenizer_load.cc loads the tables, bpe.cc runs the BPE model.
#include "text/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"
#include "text/unicode_regex.h"

namespace ff {

using tok::AddedToken;
using tok::Behavior;
using tok::NormalizerStep;
using tok::PreTokenizerStep;
using tok::Template;
using tok::TemplatePiece;

namespace {

// ---- pre-tokenizer -----------------------------------------------------------------------------

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

}  // namespace

// ---- the tokenizer -----------------------------------------------------------------------------

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

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json,
                               const std::string& tokenizer_config_json_or_empty) {
  return Tokenizer(tok::load_tokenizer(tokenizer_json, tokenizer_config_json_or_empty));
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

}  // namespace ff
