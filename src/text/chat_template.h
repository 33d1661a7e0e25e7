// DeepSeek-V3's chat format: the text transformers' apply_chat_template renders with the Jinja
// template in DeepSeek-V3's tokenizer_config.json, for system / user / assistant / tool turns
// (assistant tool calls are not supported). Not a Jinja engine; the format, written out:
//
//   BOS + the system prompts joined by "\n\n"        (system turns, wherever they are)
//   user:        "<｜User｜>" + content
//   assistant:   "<｜Assistant｜>" + content + "<｜end▁of▁sentence｜>", or right after tool
//                outputs "<｜tool▁outputs▁end｜>" + content + "<｜end▁of▁sentence｜>"
//   tool:        first of a run "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + content +
//                "<｜tool▁output▁end｜>", later ones "\n<｜tool▁output▁begin｜>" + content + ...
//                (a run still open at the end is closed with "<｜tool▁outputs▁end｜>")
//   then "<｜Assistant｜>" when add_generation_prompt and the last turn was not a tool output.
//
// Token ids for a prompt are Tokenizer::encode(render(...), /*add_special=*/false): the
// rendered text already starts with BOS, as with apply_chat_template(tokenize=True).
#pragma once
#include <span>
#include <string>
#include <string_view>

namespace ff {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" or "tool"
  std::string content;
};

class ChatTemplate {
 public:
  // The DeepSeek-V3 format with the given BOS text.
  explicit ChatTemplate(std::string bos_token = "<｜begin▁of▁sentence｜>");
  // The format of the tokenizer's chat_template; throws ff::Error when the tokenizer has none or
  // it is not DeepSeek-V3's (e.g. R1's, which also rewrites <think> content).
  static ChatTemplate for_tokenizer(const Tokenizer& tokenizer);

  // Throws ff::Error on an empty conversation or an unknown role (naming the message index).
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

 private:
  std::string bos_;
};

// ChatTemplate::for_tokenizer(tokenizer).render(messages, add_generation_prompt). Encode the
// result with add_special = false: it already starts with BOS.
std::string render_chat(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                        bool add_generation_prompt);

}  // namespace ff
