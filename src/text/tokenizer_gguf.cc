// Tokenizer::from_gguf_vocab: a GGUF file's byte-level BPE vocabulary as the tokenizer.json (and
// tokenizer_config.json) that describe the same tokenizer, fed to the ordinary loader.
#include <nlohmann/json.hpp>

#include "core/core.h"
#include "text/tokenizer_impl.h"

namespace ff {

namespace {

using json = nlohmann::json;

json split(const std::string& regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

// llama.cpp's regexes for the pre-tokenizer types (llama-vocab.cpp), each an isolated split, then
// the byte-level mapping without its own regex: exactly how the HF tokenizer.json of these models
// pre-tokenizes.
json pre_tokenizer(const std::string& pre, const std::string& source) {
  std::vector<std::string> regexes;
  if (pre == "deepseek-v3") {
    regexes = {
        "\\p{N}{1,3}",
        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
        "[!\"#$%&'()*+,\\-./"
        ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    };
  } else if (pre == "deepseek-llm") {
    regexes = {
        "[\r\n]",
        "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-"
        "\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
        "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-"
        "\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15"
        "\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d"
        "\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb"
        "\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d"
        "\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e"
        "\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-"
        "\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
        "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-"
        "\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-"
        "\U0001e943]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
        "\\s+$",
        "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
        "\\p{N}+",
    };
  } else {
    fail("{}: tokenizer.ggml.pre '{}' is not supported (deepseek-v3, deepseek-llm)", source,
         printable(pre));
  }
  json steps = json::array();
  for (const std::string& r : regexes) steps.push_back(split(r));
  steps.push_back({{"type", "ByteLevel"},
                   {"add_prefix_space", false},
                   {"trim_offsets", true},
                   {"use_regex", false}});
  return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

}  // namespace

Tokenizer Tokenizer::from_gguf_vocab(const GgufVocab& v, const std::string& source) {
  FF_CHECK(v.model == "gpt2",
           "{}: tokenizer.ggml.model '{}' is not supported (gpt2: byte-level BPE)", source,
           printable(v.model));
  FF_CHECK(!v.tokens.empty(), "{}: tokenizer.ggml.tokens is empty", source);
  FF_CHECK(v.token_types.empty() || v.token_types.size() == v.tokens.size(),
           "{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}", source,
           v.token_types.size(), v.tokens.size());
  const int32_t n = int32_t(v.tokens.size());
  json vocab = json::object(), added = json::array();
  for (int32_t i = 0; i < n; ++i) {
    const int32_t type = v.token_types.empty() ? 1 : v.token_types[size_t(i)];
    const std::string& t = v.tokens[size_t(i)];
    switch (type) {
      case 1:  // normal
      case 2:  // unknown
      case 6:  // byte
        FF_CHECK(!vocab.contains(t),
                 "{}: tokenizer.ggml.tokens: token {} duplicates an earlier one", source, i);
        vocab[t] = i;
        break;
      case 3:  // control
      case 4:  // user defined
        added.push_back({{"id", i},
                         {"content", t},
                         {"single_word", false},
                         {"lstrip", false},
                         {"rstrip", false},
                         {"normalized", false},
                         {"special", type == 3}});
        break;
      case 5:  // unused: no entry
        break;
      default:
        fail("{}: tokenizer.ggml.token_type of token {} is {} (expected 1..6)", source, i, type);
    }
  }
  json merges = json::array();
  for (const std::string& m : v.merges) merges.push_back(m);
  const json root = {
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer(v.pre, source)},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  auto name = [&](int32_t id, const char* what) -> json {
    if (id < 0) return nullptr;
    FF_CHECK(id < n, "{}: tokenizer.ggml.{}_token_id {} is not a token (vocabulary of {})", source,
             what, id, n);
    return v.tokens[size_t(id)];
  };
  json config = {{"tokenizer_class", "LlamaTokenizerFast"},
                 {"bos_token", name(v.bos, "bos")},
                 {"eos_token", name(v.eos, "eos")},
                 {"add_bos_token", v.add_bos && v.bos >= 0},
                 {"add_eos_token", v.add_eos && v.eos >= 0}};
  if (!v.chat_template.empty()) config["chat_template"] = v.chat_template;
  try {
    return Tokenizer(tok::load_tokenizer_json(root, source + " (tokenizer.ggml.*)", &config,
                                              source + " (tokenizer.ggml.*)"));
  } catch (const Error& e) {
    throw Error(printable(e.what()));  // token text from the file may hold control bytes
  }
}

}  // namespace ff
