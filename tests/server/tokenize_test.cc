// POST /tokenize and /detokenize: ids equal to HF tokenizers' (the committed goldens of
// tools/make_tokenizer_goldens.py, for the small trained BPE and DeepSeek-V3's tokenizer), text
// back from ids, the chat form, and bad requests.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

const std::string kTokenizerFixtures = FF_FIXTURES_DIR "/tokenizer";
const std::string kDeepSeekDir = FF_SHARED_DIR "/data/deepseek-v3-tokenizer";

const json& goldens() {
  static const json g = json::parse(std::ifstream(kTokenizerFixtures + "/goldens.json"));
  return g;
}

// A server over the default model whose engine speaks `tokenizer` (only the tokenizer matters
// to these endpoints).
struct TokenizerServer {
  std::unique_ptr<Model> model = Model::load(fixture("default-model"));
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<Server> server;
  explicit TokenizerServer(Tokenizer tok) {
    engine = std::make_unique<engine::Engine>(*model, std::move(tok));
    ServerOptions so;
    so.port = 0;
    so.model_name = "m";
    server = std::make_unique<Server>(*engine, so);
    server->start();
  }
  HttpResult post(const std::string& path, const json& body) const {
    return http_request("127.0.0.1", server->port(), "POST", path, body.dump(), {}, 60);
  }
};

// Every golden case: the ids with and without special tokens, and the text of the ids. The round
// trip text -> ids -> text is exact for a tokenizer without a normalizer (DeepSeek-V3's); with one
// (the small BPE replaces and strips), ids -> text -> ids is.
void check_goldens(const TokenizerServer& s, const json& cases, bool exact_text_round_trip) {
  ASSERT_GT(cases.size(), 3u);
  for (const json& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE(json(text).dump());
    HttpResult plain = s.post("/tokenize", {{"prompt", text}, {"add_special_tokens", false}});
    ASSERT_EQ(plain.status, 200) << plain.body;
    const json p = json::parse(plain.body);
    EXPECT_EQ(p["tokens"], c["ids"]);
    EXPECT_EQ(p["count"], c["ids"].size());
    HttpResult special = s.post("/tokenize", {{"model", "m"}, {"prompt", text}});
    ASSERT_EQ(special.status, 200) << special.body;
    const json sp = json::parse(special.body);
    EXPECT_EQ(sp["tokens"], c["ids_special"]);
    EXPECT_EQ(sp["max_model_len"], 1024);
    HttpResult back = s.post("/detokenize", {{"tokens", sp["tokens"]}});
    ASSERT_EQ(back.status, 200) << back.body;
    EXPECT_EQ(json::parse(back.body)["prompt"], c["decoded"]);
    HttpResult round = s.post("/detokenize", {{"tokens", p["tokens"]}});
    const std::string back_text = json::parse(round.body)["prompt"];
    if (exact_text_round_trip) {
      EXPECT_EQ(back_text, text);
    }
    HttpResult again = s.post("/tokenize", {{"prompt", back_text}, {"add_special_tokens", false}});
    EXPECT_EQ(json::parse(again.body)["tokens"], p["tokens"]);
  }
}

TEST(Tokenize, SmallBpeMatchesTokenizers) {
  TokenizerServer s(Tokenizer::from_file(kTokenizerFixtures + "/small-bpe.json", ""));
  check_goldens(s, goldens()["small_bpe"]["base"]["cases"], false);
}

TEST(Tokenize, DeepSeekV3MatchesTokenizers) {
  if (!std::filesystem::exists(kDeepSeekDir + "/tokenizer.json"))
    GTEST_SKIP() << "DeepSeek-V3 tokenizer not found at " << kDeepSeekDir << "; skipping";
  TokenizerServer s(Tokenizer::from_dir(kDeepSeekDir));
  check_goldens(s, goldens()["deepseek_v3"]["cases"], true);
}

TEST(Tokenize, ChatMessagesAndErrors) {
  const Tokenizer tok = Tokenizer::from_dir(fixture("default-model"));
  TokenizerServer s(tok);
  const json messages = json::array({{{"role", "system"}, {"content", "Be brief."}},
                                     {{"role", "user"}, {"content", "Hello there"}}});
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hello there"}};
  HttpResult r = s.post("/tokenize", {{"messages", messages}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["tokens"], json(tok.encode(render_chat(tok, chat, true), false)));
  r = s.post("/tokenize", {{"messages", messages}, {"add_generation_prompt", false}});
  EXPECT_EQ(json::parse(r.body)["tokens"], json(tok.encode(render_chat(tok, chat, false), false)));
  // Token ids as the prompt come back as they are.
  r = s.post("/tokenize", {{"prompt", {5, 6, 7}}});
  EXPECT_EQ(json::parse(r.body)["tokens"], json({5, 6, 7}));

  const auto expect_400 = [&](const std::string& path, const std::string& body,
                              const std::string& param) {
    HttpResult bad = http_request("127.0.0.1", s.server->port(), "POST", path, body, {}, 60);
    EXPECT_EQ(bad.status, 400) << path << " " << body << " -> " << bad.body;
    const json e = json::parse(bad.body)["error"];
    EXPECT_EQ(e["type"], "invalid_request_error") << bad.body;
    if (!param.empty()) {
      EXPECT_EQ(e["param"], param) << bad.body;
    }
  };
  expect_400("/tokenize", "{}", "prompt");
  expect_400("/tokenize", R"({"prompt": "a", "messages": []})", "");
  expect_400("/tokenize", R"({"prompt": 5})", "prompt");
  expect_400("/tokenize", R"({"prompt": [1, 99999999]})", "prompt");
  expect_400("/tokenize", R"({"prompt": "a", "model": "other"})", "model");
  expect_400("/tokenize", R"({"messages": [{"role": "wizard", "content": "x"}]})",
             "messages[0].role");
  expect_400("/tokenize", "not json", "");
  expect_400("/detokenize", R"({"tokens": [1, -1]})", "tokens");
  expect_400("/detokenize", R"({"tokens": "abc"})", "tokens");
  expect_400("/detokenize", R"({})", "tokens");
  EXPECT_EQ(http_request("127.0.0.1", s.server->port(), "GET", "/tokenize").status, 405);
}

}  // namespace
}  // namespace ff::server::testing
