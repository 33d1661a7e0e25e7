// Tokenizer vs HF tokenizers / transformers, through goldens written by
// tools/make_tokenizer_goldens.py: DeepSeek-V3's real tokenizer and a small trained BPE with
// pipeline variants. Then the edges (streaming, broken UTF-8) and the failures.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "text/unicode.h"
#include "text/unicode_regex.h"

namespace ff {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kDeepSeekDir = FF_SHARED_DIR "/data/deepseek-v3-tokenizer";
const std::string kFixtures = FF_FIXTURES_DIR "/tokenizer";

const json& goldens() {
  static const json g = json::parse(std::ifstream(kFixtures + "/goldens.json"));
  return g;
}

// Loaded once: parsing 128k merges takes a moment.
const Tokenizer* deepseek() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    if (!fs::exists(kDeepSeekDir + "/tokenizer.json")) return std::unique_ptr<Tokenizer>();
    return std::make_unique<Tokenizer>(Tokenizer::from_dir(kDeepSeekDir));
  }();
  return tok.get();
}

#define REQUIRE_DEEPSEEK()                                              \
  if (!deepseek())                                                      \
  GTEST_SKIP() << "DeepSeek-V3 tokenizer not found at " << kDeepSeekDir \
               << " (tokenizer.json); skipping"

std::vector<int32_t> ids_of(const json& j) {
  return j.get<std::vector<int32_t>>();
}

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("ff_tokenizer_test_" + name)).string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Every piece pushed is valid UTF-8; after each id, what was pushed plus a flush of a copy equals
// decode() of the ids so far; all pieces together equal decode() of all ids.
void check_streaming(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::string so_far;
  for (size_t k = 0; k < ids.size(); ++k) {
    const std::string piece = stream.push(ids[k]);
    ASSERT_EQ(utf8_find_invalid(piece), std::string::npos) << "piece after id #" << k;
    so_far += piece;
    StreamDecoder copy = stream;
    ASSERT_EQ(so_far + copy.flush(), tok.decode(std::span(ids).first(k + 1), skip_special))
        << "prefix of " << k + 1 << " ids";
  }
  EXPECT_EQ(so_far + stream.flush(), tok.decode(ids, skip_special));
}

// ---- DeepSeek-V3 ------------------------------------------------------------------------------

TEST(TokenizerDeepSeek, MatchesTransformersIdsOnCorpus) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  const json& cases = goldens()["deepseek_v3"]["cases"];
  ASSERT_GT(cases.size(), 80u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.encode(text, false), ids_of(c["ids"])) << json(text).dump();
    EXPECT_EQ(tok.encode(text, true), ids_of(c["ids_special"])) << json(text).dump();
  }
}

TEST(TokenizerDeepSeek, KnownEncodingsFromReadme) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  EXPECT_EQ(tok.encode("你是谁？", false), (std::vector<int32_t>{122294, 1148}));
  EXPECT_EQ(tok.encode("Hello, my dog is cute 12345678  spaces\n\nnew", false),
            (std::vector<int32_t>{19923, 14, 1026, 6397, 344, 33125, 223, 6895, 18009, 2597, 223,
                                  13564, 271, 2839}));
  EXPECT_EQ(tok.token_to_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok.token_to_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok.token_to_id("<｜User｜>"), 128803);
  EXPECT_EQ(tok.token_to_id("<｜Assistant｜>"), 128804);
}

TEST(TokenizerDeepSeek, BosEosVocabAndTemplate) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.vocab_size(), 128815u);  // len(AutoTokenizer): 128000 + 815 added above it
  EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{0});
  EXPECT_EQ(tok.encode("", false), std::vector<int32_t>{});
  EXPECT_EQ(tok.encode("<｜begin▁of▁sentence｜>hi", true), (std::vector<int32_t>{0, 0, 6366}));
  EXPECT_EQ(tok.id_to_token(6366), "hi");
  EXPECT_EQ(tok.id_to_token(223), "Ġ");
  EXPECT_EQ(tok.token_text(223), " ");
  EXPECT_FALSE(tok.id_to_token(128815).has_value());
  EXPECT_EQ(tok.token_text(-1), "");
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(128803));  // <｜User｜> is an added token but not special
  EXPECT_FALSE(tok.is_special(6366));
  ASSERT_NE(tok.chat_template(), nullptr);
  EXPECT_NE(tok.chat_template()->find("<｜Assistant｜>"), std::string::npos);
}

TEST(TokenizerDeepSeek, DecodeRoundTripsAndMatchesTransformers) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  for (const json& c : goldens()["deepseek_v3"]["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << json(text).dump();
    if (c.contains("decoded")) {
      EXPECT_EQ(tok.decode(ids_of(c["ids_special"])), c["decoded"].get<std::string>());
      EXPECT_EQ(tok.decode(ids_of(c["ids_special"]), true),
                c["decoded_skip_special"].get<std::string>());
    }
  }
  // Byte tokens that cut UTF-8 sequences apart, and an id past the vocabulary (skipped).
  for (const json& c : goldens()["deepseek_v3"]["decode_cases"]) {
    EXPECT_EQ(tok.decode(ids_of(c["ids"])), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(tok.decode(ids_of(c["ids"]), true), c["text_skip_special"].get<std::string>());
  }
}

TEST(TokenizerDeepSeek, StreamingDecodeOfEveryPrefix) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  for (const json& c : goldens()["deepseek_v3"]["cases"]) {
    const std::string text = c["text"];
    if (text.size() > 2000) continue;  // the long text adds nothing but time (quadratic check)
    SCOPED_TRACE(json(text).dump());
    const std::vector<int32_t> ids = ids_of(c["ids_special"]);
    check_streaming(tok, ids, false);
    check_streaming(tok, ids, true);
  }
  for (const json& c : goldens()["deepseek_v3"]["decode_cases"]) {
    SCOPED_TRACE(c["ids"].dump());
    check_streaming(tok, ids_of(c["ids"]), false);
  }
}

TEST(TokenizerDeepSeek, StreamingHoldsBackSplitCharacters) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  // "😀" is F0 9F 98 80: byte tokens ð Ł ĺ Ģ.
  std::vector<int32_t> bytes;
  for (const char* t : {"ð", "Ł", "ĺ", "Ģ"}) bytes.push_back(*tok.token_to_id(t));
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.push(bytes[1]), "");
  EXPECT_EQ(stream.push(bytes[2]), "");
  EXPECT_EQ(stream.push(bytes[3]), "😀");
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.push(*tok.token_to_id("a")),
            "\xEF\xBF\xBD"
            "a");  // broken: U+FFFD, then a
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.flush(), "");
}

TEST(TokenizerDeepSeek, EncodeSpeed) {
  REQUIRE_DEEPSEEK();
  const Tokenizer& tok = *deepseek();
  // ~100 KB of mixed text; words repeat, as in real text, so the word cache matters.
  std::string text;
  const json& cases = goldens()["deepseek_v3"]["cases"];
  for (size_t round = 0; text.size() < 100 * 1024; ++round) {
    for (const json& c : cases) {
      text += c["text"].get<std::string>();
      text += round % 2 ? "\n" : " ";
      text += std::to_string(round * 7919 % 100003);
    }
  }
  text.resize(100 * 1024);
  while (utf8_find_invalid(text) != std::string::npos) text.pop_back();
  const Tokenizer fresh = Tokenizer::from_dir(kDeepSeekDir);  // empty word cache
  auto time = [&](const Tokenizer& t, std::vector<int32_t>* ids) {
    const auto t0 = std::chrono::steady_clock::now();
    *ids = t.encode(text, false);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<int32_t> cold_ids, warm_ids;
  const double cold_ms = time(fresh, &cold_ids);
  const double warm_ms = time(fresh, &warm_ids);
  EXPECT_EQ(cold_ids, warm_ids);
  EXPECT_EQ(tok.decode(cold_ids), text);
  std::printf(
      "[ tokenizer ] encode %zu bytes -> %zu tokens: %.1f ms cold cache (%.1f MB/s), "
      "%.1f ms warm (%.1f MB/s)\n",
      text.size(), cold_ids.size(), cold_ms, text.size() / cold_ms / 1e3, warm_ms,
      text.size() / warm_ms / 1e3);
}

// ---- the small trained BPE and its pipeline variants -------------------------------------------

TEST(TokenizerSmallBpe, MatchesTokenizersOnEveryVariant) {
  const json base = json::parse(std::ifstream(kFixtures + "/small-bpe.json"));
  const json& variants = goldens()["small_bpe"];
  ASSERT_GE(variants.size(), 5u);
  for (const auto& [name, variant] : variants.items()) {
    SCOPED_TRACE(name);
    json spec = base;
    for (const auto& [key, value] : variant["patch"].items()) spec[key] = value;
    if (name == "legacy_merges_no_post") {
      for (json& m : spec["model"]["merges"])
        m = m[0].get<std::string>() + " " + m[1].get<std::string>();
    }
    const std::string path = temp_path("variant_" + name + ".json");
    write_file(path, spec.dump());
    const Tokenizer tok = Tokenizer::from_file(path, "");
    for (const json& c : variant["cases"]) {
      const std::string text = c["text"];
      const std::vector<int32_t> ids_special = ids_of(c["ids_special"]);
      EXPECT_EQ(tok.encode(text, false), ids_of(c["ids"])) << json(text).dump();
      EXPECT_EQ(tok.encode(text, true), ids_special) << json(text).dump();
      EXPECT_EQ(tok.decode(ids_special), c["decoded"].get<std::string>()) << json(text).dump();
      EXPECT_EQ(tok.decode(ids_special, true), c["decoded_skip_special"].get<std::string>());
      check_streaming(tok, ids_special, false);
    }
    fs::remove(path);
  }
}

TEST(TokenizerSmallBpe, BosAndEosComeFromTheTemplateWithoutAConfig) {
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "/small-bpe.json", "");
  EXPECT_EQ(tok.bos_id(), *tok.token_to_id("<s>"));
  EXPECT_EQ(tok.eos_id(), *tok.token_to_id("</s>"));
  EXPECT_EQ(tok.chat_template(), nullptr);
  EXPECT_EQ(tok.vocab_size(), 805u);
  const std::vector<int32_t> ids = tok.encode("hello", true);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
}

TEST(TokenizerSmallBpe, ConcurrentEncodesShareTheWordCache) {
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "/small-bpe.json", "");
  const json& cases = goldens()["small_bpe"]["base"]["cases"];
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        for (const json& c : cases) {
          if (tok.encode(c["text"].get<std::string>(), false) != ids_of(c["ids"])) ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// The tiny model fixtures carry tokenizers trained the same way (DeepSeek-V3's pipeline and
// config); whatever of them exists must load, round-trip and render the chat format.
TEST(TokenizerSmallBpe, ModelFixtureTokenizersLoad) {
  int found = 0;
  for (const auto& entry : fs::directory_iterator(FF_FIXTURES_DIR)) {
    if (!fs::exists(entry.path() / "tokenizer.json")) continue;
    SCOPED_TRACE(entry.path().string());
    ++found;
    const Tokenizer tok = Tokenizer::from_dir(entry.path().string());
    const std::string text = "Hello, 世界! 12345 <｜User｜>x";
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
    if (tok.chat_template()) {
      const std::vector<ChatMessage> msgs = {{"user", "hi"}};
      EXPECT_EQ(render_chat(tok, msgs, true).rfind(*tok.id_to_token(tok.bos_id()), 0), 0u);
    }
  }
  if (found == 0) GTEST_SKIP() << "no model fixture with a tokenizer.json in " FF_FIXTURES_DIR;
}

// ---- helpers: UTF-8 repair and the Oniguruma-compatible regex ----------------------------------

TEST(TokenizerUnicode, LossyUtf8ReplacesMaximalSubparts) {
  auto lossy = [](std::string_view s, bool at_end) {
    std::string out;
    const size_t used = utf8_lossy_append(s, at_end, out);
    return std::make_pair(out, used);
  };
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(lossy("a\xF0\x9F", false), std::make_pair(std::string("a"), size_t(1)));
  EXPECT_EQ(lossy("a\xF0\x9F", true).first, "a" + fffd);
  EXPECT_EQ(lossy("\xF0\x9F"
                  "a",
                  true)
                .first,
            fffd + "a");                                             // one U+FFFD per subpart
  EXPECT_EQ(lossy("\xC0\xAF", true).first, fffd + fffd);             // overlong: never valid
  EXPECT_EQ(lossy("\xED\xA0\x80", true).first, fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(lossy("\xE2\x82\xAC", false).first, "\xE2\x82\xAC");     // complete euro sign
  EXPECT_EQ(utf8_find_invalid("ok\xE2\x82"), 2u);
  EXPECT_EQ(utf8_find_invalid("ok \xE2\x82\xAC"), std::string::npos);
}

TEST(TokenizerUnicode, RegexFollowsOnigurumaIteration) {
  std::vector<std::pair<size_t, size_t>> found;
  UnicodeRegex("a*", "test").find_all("baaac", found);
  // The onig crate skips the empty match right after "aaa" (PCRE's own loop would report it).
  EXPECT_EQ(found, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 4}, {5, 5}}));
  found.clear();
  UnicodeRegex("\\s+", "test")
      .find_all(
          "a\xE1\xA0\x8E"
          "b\xC2\x85"
          "c",
          found);  // U+180E, U+0085
  EXPECT_EQ(found, (std::vector<std::pair<size_t, size_t>>{{5, 7}}));
  EXPECT_EQ(UnicodeRegex::from_oniguruma("[^\\s\\p{L}]\\S"),
            "[^\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}"
            "\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\p{L}][^\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}"
            "\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]");
  EXPECT_THROW(UnicodeRegex("(", "bad.json: field 'x'"), Error);
}

// ---- failures ----------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no ff::Error)";
}

// A copy of small-bpe.json with one field replaced.
std::string patched_small_bpe(const std::string& name, const std::function<void(json&)>& patch) {
  json spec = json::parse(std::ifstream(kFixtures + "/small-bpe.json"));
  patch(spec);
  const std::string path = temp_path(name);
  write_file(path, spec.dump());
  return path;
}

TEST(TokenizerErrors, NameTheFileAndTheField) {
  const std::string missing = temp_path("does_not_exist.json");
  EXPECT_NE(error_of([&] { Tokenizer::from_file(missing, ""); }).find(missing), std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_dir(temp_path("no_dir")); }).find("tokenizer.json"),
            std::string::npos);

  const std::string malformed = temp_path("malformed.json");
  write_file(malformed, "{\"model\": {\"type\": \"BPE\",");
  std::string msg = error_of([&] { Tokenizer::from_file(malformed, ""); });
  EXPECT_NE(msg.find(malformed), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed JSON"), std::string::npos) << msg;

  struct Case {
    const char* name;
    std::function<void(json&)> patch;
    const char* field;
  };
  const Case cases[] = {
      {"wordpiece.json", [](json& j) { j["model"]["type"] = "WordPiece"; }, "'model.type'"},
      {"no_model.json", [](json& j) { j.erase("model"); }, "'model'"},
      {"nfkc.json",
       [](json& j) {
         j["normalizer"] = {{"type", "NFKC"}};
       },
       "'normalizer.type'"},
      {"metaspace.json",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][1] = {{"type", "Metaspace"}};
       },
       "'pre_tokenizer.pretokenizers[1].type'"},
      {"bad_regex.json",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
       "'pre_tokenizer.pretokenizers[0].pattern'"},
      {"bad_merge.json",
       [](json& j) {
         j["model"]["merges"][5] = {"nope", "x"};
       },
       "'model.merges[5]'"},
      {"bad_vocab.json", [](json& j) { j["model"]["vocab"] = json::array(); }, "'model.vocab'"},
      {"dropout.json", [](json& j) { j["model"]["dropout"] = 0.1; }, "'model.dropout'"},
      {"decoder.json",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "'decoder.type'"},
  };
  for (const Case& c : cases) {
    const std::string path = patched_small_bpe(c.name, c.patch);
    msg = error_of([&] { Tokenizer::from_file(path, ""); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    fs::remove(path);
  }

  const std::string config = temp_path("bad_config.json");
  write_file(config, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<nope>"})");
  msg = error_of([&] { Tokenizer::from_file(kFixtures + "/small-bpe.json", config); });
  EXPECT_NE(msg.find(config), std::string::npos) << msg;
  EXPECT_NE(msg.find("'bos_token'"), std::string::npos) << msg;
  fs::remove(malformed);
  fs::remove(config);
}

TEST(TokenizerErrors, InvalidUtf8InputIsRefused) {
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "/small-bpe.json", "");
  EXPECT_THROW(tok.encode("ab\xFF", false), Error);
  EXPECT_THROW(tok.encode("\xE2\x82", false), Error);
}

}  // namespace
}  // namespace ff
