// Loading: parses tokenizer.json (added tokens, normalizer, pre-tokenizer, BPE model,
// post-processor, decoder) and tokenizer_config.json (BOS / EOS, the Llama template flags, chat
// template) into a Tokenizer::Impl, and builds its decode tables. Every error names the file and
// the field.
#include <algorithm>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/mmap_file.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"
#include "text/unicode_regex.h"

namespace ff::tok {
namespace {

using json = nlohmann::json;

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

std::shared_ptr<const Tokenizer::Impl> load_tokenizer_json(const nlohmann::json& root,
                                                           const std::string& name,
                                                           const nlohmann::json* config,
                                                           const std::string& config_name) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  Loader loader{{name}, *impl};
  if (!root.is_object()) loader.file.bad("", "expected a JSON object");
  loader.added_tokens(root);
  loader.normalizer(root.value("normalizer", json()), "normalizer");
  loader.pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer");
  loader.model(root);
  loader.post_processor(root.value("post_processor", json()), "post_processor");
  loader.decoder(root);
  loader.tables();
  if (config) {
    Loader config_loader{{config_name}, *impl};
    if (!config->is_object()) config_loader.file.bad("", "expected a JSON object");
    config_loader.config(*config);
  }
  loader.template_bos_eos();
  return impl;
}

std::shared_ptr<const Tokenizer::Impl> load_tokenizer(const std::string& tokenizer_json,
                                                      const std::string& config_json) {
  const json root = parse_json_file(tokenizer_json);
  if (config_json.empty()) return load_tokenizer_json(root, tokenizer_json, nullptr, "");
  const json config = parse_json_file(config_json);
  return load_tokenizer_json(root, tokenizer_json, &config, config_json);
}

}  // namespace ff::tok
