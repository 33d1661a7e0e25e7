#include "text/chat_template.h"

#include "core/error.h"
#include "text/tokenizer.h"

namespace ff {
namespace {

constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kEndOfSentence = "<｜end▁of▁sentence｜>";
constexpr std::string_view kOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kOutputEnd = "<｜tool▁output▁end｜>";

}  // namespace

ChatTemplate::ChatTemplate(std::string bos_token) : bos_(std::move(bos_token)) {}

ChatTemplate ChatTemplate::for_tokenizer(const Tokenizer& tokenizer) {
  const std::string* tmpl = tokenizer.chat_template();
  FF_CHECK(tmpl != nullptr, "tokenizer_config.json: field 'chat_template': missing");
  // The markers of DeepSeek-V3's template; R1's differs in what it does with <think> content.
  const bool deepseek_v3 = tmpl->find("ns.system_prompt") != std::string::npos &&
                           tmpl->find("'<｜User｜>' + message['content']") != std::string::npos &&
                           tmpl->find(
                               "'<｜Assistant｜>' + message['content'] + "
                               "'<｜end▁of▁sentence｜>'") != std::string::npos &&
                           tmpl->find("</think>") == std::string::npos;
  FF_CHECK(deepseek_v3, "tokenizer_config.json: field 'chat_template': not DeepSeek-V3's format");
  const std::optional<std::string> bos = tokenizer.id_to_token(tokenizer.bos_id());
  FF_CHECK(bos.has_value(), "tokenizer_config.json: field 'bos_token': missing");
  return ChatTemplate(*bos);
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  FF_CHECK(!messages.empty(), "chat template: empty conversation");
  std::string system_prompt;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    FF_CHECK(role == "system" || role == "user" || role == "assistant" || role == "tool",
             "chat template: messages[{}].role: unknown role '{}'", i, role);
    if (role != "system") continue;
    if (!first_system) system_prompt += "\n\n";
    system_prompt += messages[i].content;
    first_system = false;
  }

  std::string out = bos_ + system_prompt;
  bool in_tool_outputs = false;
  bool first_tool_output = true;  // the template never resets this, so neither do we
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      in_tool_outputs = false;
      out.append(kUser).append(m.content);
    } else if (m.role == "assistant") {
      out.append(in_tool_outputs ? kOutputsEnd : kAssistant)
          .append(m.content)
          .append(kEndOfSentence);
      in_tool_outputs = false;
    } else if (m.role == "tool") {
      in_tool_outputs = true;
      if (first_tool_output) {
        out.append(kOutputsBegin);
      } else {
        out += '\n';
      }
      out.append(kOutputBegin).append(m.content).append(kOutputEnd);
      first_tool_output = false;
    }
  }
  if (in_tool_outputs) out.append(kOutputsEnd);
  if (add_generation_prompt && !in_tool_outputs) out.append(kAssistant);
  return out;
}

std::string render_chat(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
  return ChatTemplate::for_tokenizer(tokenizer).render(messages, add_generation_prompt);
}

}  // namespace ff
