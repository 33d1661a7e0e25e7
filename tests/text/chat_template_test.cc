// DeepSeek-V3's chat format vs transformers' apply_chat_template with the real Jinja template
// (goldens from tools/make_tokenizer_goldens.py).
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/tokenizer.h"

namespace ff {
namespace {

using json = nlohmann::json;

const std::string kDeepSeekDir = FF_SHARED_DIR "/data/deepseek-v3-tokenizer";

const json& chats() {
  static const json g =
      json::parse(std::ifstream(FF_FIXTURES_DIR "/tokenizer/goldens.json"))["deepseek_v3"]["chats"];
  return g;
}

std::vector<ChatMessage> messages_of(const json& j) {
  std::vector<ChatMessage> out;
  for (const json& m : j) out.push_back({m["role"], m["content"]});
  return out;
}

TEST(ChatTemplate, RendersWhatTransformersRenders) {
  ASSERT_GE(chats().size(), 10u);
  const ChatTemplate tmpl;
  for (const json& c : chats()) {
    SCOPED_TRACE(c["messages"].dump());
    EXPECT_EQ(tmpl.render(messages_of(c["messages"]), c["add_generation_prompt"]),
              c["text"].get<std::string>());
  }
}

TEST(ChatTemplate, TokenIdsMatchTransformers) {
  if (!std::filesystem::exists(kDeepSeekDir + "/tokenizer.json")) {
    GTEST_SKIP() << "DeepSeek-V3 tokenizer not found at " << kDeepSeekDir << "; skipping";
  }
  const Tokenizer tok = Tokenizer::from_dir(kDeepSeekDir);
  const ChatTemplate tmpl = ChatTemplate::for_tokenizer(tok);
  for (const json& c : chats()) {
    SCOPED_TRACE(c["messages"].dump());
    const std::string text = tmpl.render(messages_of(c["messages"]), c["add_generation_prompt"]);
    EXPECT_EQ(tok.encode(text, false), c["ids"].get<std::vector<int32_t>>());
  }
}

TEST(ChatTemplate, RendersTheFormatByHand) {
  const std::vector<ChatMessage> msgs = {
      {"system", "S1"}, {"user", "hi"}, {"system", "S2"}, {"assistant", "yo"}, {"user", "q"}};
  EXPECT_EQ(ChatTemplate().render(msgs, true),
            "<｜begin▁of▁sentence｜>S1\n\nS2<｜User｜>hi<｜Assistant｜>yo<｜end▁of▁sentence｜>"
            "<｜User｜>q<｜Assistant｜>");
  EXPECT_EQ(ChatTemplate("<s>").render(std::vector<ChatMessage>{{"user", "x"}}, false),
            "<s><｜User｜>x");
}

TEST(ChatTemplate, RefusesUnknownRolesAndEmptyConversations) {
  const ChatTemplate tmpl;
  try {
    tmpl.render(std::vector<ChatMessage>{{"user", "a"}, {"developer", "b"}}, true);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[1].role"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("developer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tmpl.render(std::vector<ChatMessage>{}, true), Error);
}

TEST(ChatTemplate, RefusesATokenizerWithoutDeepSeekV3Template) {
  const Tokenizer small = Tokenizer::from_file(FF_FIXTURES_DIR "/tokenizer/small-bpe.json", "");
  EXPECT_THROW(ChatTemplate::for_tokenizer(small), Error);
  const std::string config =
      (std::filesystem::temp_directory_path() / "ff_chat_template_config.json").string();
  std::ofstream(config) << R"({"bos_token": "<s>", "chat_template": "{{ messages }}"})";
  const Tokenizer other = Tokenizer::from_file(FF_FIXTURES_DIR "/tokenizer/small-bpe.json", config);
  EXPECT_THROW(ChatTemplate::for_tokenizer(other), Error);
  std::filesystem::remove(config);
}

}  // namespace
}  // namespace ff
