// Tokenizers from GGUF vocabularies (tokenizer.ggml.*) against the HF tokenizer.json they were
// converted from: the default model's GGUF fixture (tools/make_gguf_model.py) against its
// tokenizer.json, and DeepSeek-V3's real vocabulary (../shared/data, skipped when absent) turned
// into a GgufVocab the way llama.cpp's converter does, against transformers' goldens.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace ff {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kFixtures = FF_FIXTURES_DIR;
const std::string kDeepSeekDir = FF_SHARED_DIR "/data/deepseek-v3-tokenizer";

const json& goldens() {
  static const json g = json::parse(std::ifstream(kFixtures + "/tokenizer/goldens.json"));
  return g;
}

std::vector<std::string> corpus() {
  std::vector<std::string> texts = {
      "It is a truth universally acknowledged",
      "Hello world 12345 <｜User｜>hi<｜Assistant｜>",
      "  leading spaces\n\nand\r\nnewlines\t\ttabs",
      "numbers 1 22 333 4444 55555 and 3.14159",
      "Ünïcödé, 你好，世界！ こんにちは カタカナ",
      "<｜begin▁of▁sentence｜>already special",
      "",
  };
  for (const json& c : goldens()["deepseek_v3"]["cases"]) texts.push_back(c["text"]);
  return texts;
}

TEST(GgufTokenizer, DefaultModelGgufMatchesItsTokenizerJson) {
  const Tokenizer g = engine::load_tokenizer(kFixtures + "/gguf-models/default-model-q8_0.gguf");
  const Tokenizer h = engine::load_tokenizer(kFixtures + "/default-model");
  EXPECT_EQ(g.bos_id(), h.bos_id());
  EXPECT_EQ(g.eos_id(), h.eos_id());
  EXPECT_EQ(g.vocab_size(), h.vocab_size());
  ASSERT_NE(g.chat_template(), nullptr);
  ASSERT_NE(h.chat_template(), nullptr);
  EXPECT_EQ(*g.chat_template(), *h.chat_template());
  for (int32_t id = 0; id < int32_t(h.vocab_size()); ++id) {
    ASSERT_EQ(g.id_to_token(id), h.id_to_token(id)) << id;
    ASSERT_EQ(g.is_special(id), h.is_special(id)) << id;
  }
  for (const std::string& t : corpus()) {
    const auto ids = h.encode(t, false);
    EXPECT_EQ(g.encode(t, false), ids) << json(t).dump();
    EXPECT_EQ(g.encode(t, true), h.encode(t, true)) << json(t).dump();
    EXPECT_EQ(g.decode(ids), h.decode(ids)) << json(t).dump();
    EXPECT_EQ(g.decode(ids, true), h.decode(ids, true)) << json(t).dump();
  }
}

// llama.cpp's own tokenization with the same GGUF files (tools/make_llamacpp_goldens.py).
TEST(GgufTokenizer, MatchesLlamaCppOnTheFixtureFiles) {
  const json g = json::parse(std::ifstream(kFixtures + "/gguf-models/llamacpp_goldens.json"));
  int checked = 0;
  for (const auto& [name, c] : g["cases"].items()) {
    const Tokenizer tok = engine::load_tokenizer(kFixtures + "/gguf-models/" + name);
    for (const json& t : c["tokenize"]) {
      EXPECT_EQ(tok.encode(t["text"].get<std::string>(), true),
                t["ids"].get<std::vector<int32_t>>())
          << name << ": " << t["text"].dump();
      ++checked;
    }
  }
  EXPECT_GE(checked, 6);
}

// What convert_hf_to_gguf.py's _set_vocab_gpt2 writes for an HF tokenizer directory.
GgufVocab vocab_like_the_converter(const std::string& dir) {
  const json tj = json::parse(std::ifstream(dir + "/tokenizer.json"));
  const json cfg = json::parse(std::ifstream(dir + "/tokenizer_config.json"));
  std::map<int32_t, std::string> normal;
  for (const auto& [tok, id] : tj["model"]["vocab"].items()) normal[id.get<int32_t>()] = tok;
  std::map<int32_t, json> added;
  for (const json& a : tj["added_tokens"]) added[a["id"].get<int32_t>()] = a;
  int32_t n = 0;
  if (!normal.empty()) n = std::max(n, normal.rbegin()->first + 1);
  if (!added.empty()) n = std::max(n, added.rbegin()->first + 1);
  GgufVocab v;
  v.model = "gpt2";
  v.pre = "deepseek-v3";
  for (int32_t i = 0; i < n; ++i) {
    if (added.count(i)) {
      const std::string c = added[i]["content"];
      const bool looks_special = c.size() > 2 && c.front() == '<' && c.back() == '>';
      v.tokens.push_back(c);
      v.token_types.push_back(added[i]["special"].get<bool>() || looks_special ? 3 : 4);
    } else if (normal.count(i)) {
      v.tokens.push_back(normal[i]);
      v.token_types.push_back(1);
    } else {
      v.tokens.push_back("[PAD" + std::to_string(i) + "]");
      v.token_types.push_back(5);
    }
  }
  for (const json& m : tj["model"]["merges"])
    v.merges.push_back(m.is_string() ? m.get<std::string>()
                                     : m[0].get<std::string>() + " " + m[1].get<std::string>());
  const auto id_of = [&](const json& t) {
    const std::string s = t.is_object() ? t["content"].get<std::string>() : t.get<std::string>();
    for (int32_t i = 0; i < n; ++i)
      if (v.tokens[size_t(i)] == s) return i;
    return -1;
  };
  v.bos = id_of(cfg["bos_token"]);
  v.eos = id_of(cfg["eos_token"]);
  v.add_bos = cfg.value("add_bos_token", true);
  v.add_eos = cfg.value("add_eos_token", false);
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
    v.chat_template = cfg["chat_template"];
  return v;
}

TEST(GgufTokenizer, DeepSeekV3VocabularyMatchesTransformers) {
  if (!fs::exists(kDeepSeekDir + "/tokenizer.json"))
    GTEST_SKIP() << "DeepSeek-V3 tokenizer not found at " << kDeepSeekDir << "; skipping";
  const Tokenizer tok =
      Tokenizer::from_gguf_vocab(vocab_like_the_converter(kDeepSeekDir), "deepseek-v3 vocab");
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  const json& cases = goldens()["deepseek_v3"]["cases"];
  ASSERT_GT(cases.size(), 80u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.encode(text, false), c["ids"].get<std::vector<int32_t>>()) << json(text).dump();
    EXPECT_EQ(tok.encode(text, true), c["ids_special"].get<std::vector<int32_t>>())
        << json(text).dump();
  }
}

TEST(GgufTokenizer, UnsupportedVocabulariesAreRefusedByName) {
  GgufVocab v;
  v.model = "gpt2";
  v.pre = "deepseek-v3";
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  EXPECT_EQ(Tokenizer::from_gguf_vocab(v, "x.gguf").encode("ab", false), std::vector<int32_t>{2});
  auto error = [](const GgufVocab& bad) -> std::string {
    try {
      Tokenizer::from_gguf_vocab(bad, "x.gguf");
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  GgufVocab b = v;
  b.model = "llama";
  EXPECT_NE(error(b).find("tokenizer.ggml.model 'llama' is not supported"), std::string::npos);
  b = v;
  b.pre = "qwen2";
  EXPECT_NE(error(b).find("tokenizer.ggml.pre 'qwen2' is not supported"), std::string::npos);
  b = v;
  b.token_types = {1, 1};
  EXPECT_NE(error(b).find("token_type has 2 entries"), std::string::npos);
  b = v;
  b.token_types = {1, 1, 9};
  EXPECT_NE(error(b).find("token_type of token 2 is 9"), std::string::npos);
  b = v;
  b.bos = 7;
  EXPECT_NE(error(b).find("bos_token_id 7 is not a token"), std::string::npos);
  b = v;
  b.merges = {"a c"};
  EXPECT_NE(error(b).find("x.gguf"), std::string::npos) << error(b);
  b = v;
  b.tokens.clear();
  EXPECT_NE(error(b).find("tokenizer.ggml.tokens is empty"), std::string::npos);
}

}  // namespace
}  // namespace ff
