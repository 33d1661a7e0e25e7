#include "server/openai.h"

#include <atomic>
#include <chrono>
#include <cmath>

namespace ff::server {

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message,
                      const std::string& code = {}) {
  throw ApiError{400, message, param, code};
}

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number_in(const json& body, const char* name, double lo, double hi, bool lo_open,
                 double fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) bad(name, fmt::format("'{}' must be a number", name));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
    bad(name,
        fmt::format("'{}' must be in {}{}, {}], got {}", name, lo_open ? "(" : "[", lo, hi, x));
  return x;
}

int64_t integer_in(const json& body, const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) bad(name, fmt::format("'{}' must be an integer", name));
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
                        ? INT64_MAX
                        : v->get<int64_t>();
  if (x < lo || x > hi) bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x));
  return x;
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad(name, fmt::format("'{}' must be a boolean", name));
  return v->get<bool>();
}

std::string message_text(const json& content, size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const json& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        bad(param, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad(param, "'" + param + "' must be a string or an array of text parts");
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t t = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
  return fmt::format("{}-{:x}{:04x}", prefix, t, counter.fetch_add(1) & 0xffff);
}

int32_t token_id(const json& t, const Tokenizer& tokenizer, const char* param) {
  if (!t.is_number_integer()) bad(param, fmt::format("'{}' must hold integer token ids", param));
  const int64_t id = t.is_number_unsigned() && t.get<uint64_t>() > uint64_t(INT64_MAX)
                         ? INT64_MAX
                         : t.get<int64_t>();
  if (id < 0 || id >= int64_t(tokenizer.vocab_size()))
    bad(param,
        fmt::format("token id {} is outside the vocabulary [0, {})", id, tokenizer.vocab_size()));
  return int32_t(id);
}

json token_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

std::vector<int32_t> completion_prompt(const json& prompt, const Tokenizer& tokenizer,
                                       bool add_special) {
  const json* p = &prompt;
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
  std::vector<int32_t> ids;
  if (p->is_string()) {
    try {
      ids = tokenizer.encode(p->get<std::string>(), add_special);
    } catch (const Error& e) {
      bad("prompt", e.what());
    }
  } else if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const json& t) {
               return t.is_number_integer();
             })) {
    for (const json& t : *p) ids.push_back(token_id(t, tokenizer, "prompt"));
  } else {
    bad("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
  }
  return ids;
}

std::vector<int32_t> chat_prompt(const json& msgs, const Tokenizer& tokenizer,
                                 bool add_generation_prompt) {
  if (!msgs.is_array() || msgs.empty()) bad("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const json& m = msgs[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(param, "'" + param + "' must be an object");
    if (!m.contains("role") || !m["role"].is_string())
      bad(param + ".role", "'" + param + ".role' must be a string");
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" &&
        role != "developer")
      bad(param + ".role", fmt::format("unknown role '{}'", role));
    const json content = m.contains("content") ? m["content"] : json(nullptr);
    chat.push_back({role == "developer" ? "system" : role,
                    content.is_null() ? std::string() : message_text(content, i)});
  }
  try {
    return tokenizer.encode(render_chat(tokenizer, chat, add_generation_prompt),
                            /*add_special=*/false);
  } catch (const Error& e) {
    bad("messages", e.what());
  }
}

json parse_body(const std::string& text) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::parse_error& e) {
    bad("", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) bad("", "the body must be a JSON object");
  return body;
}

void check_model(const json& body, const std::string& model_name) {
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    if (m->get<std::string>() != model_name)
      bad("model",
          fmt::format("the model '{}' does not exist; this server serves '{}'",
                      m->get<std::string>(), model_name),
          "model_not_found");
  }
}

}  // namespace

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

ApiRequest parse_request(Endpoint endpoint, const std::string& text, const std::string& model_name,
                         const Tokenizer& tokenizer, int64_t context_length) {
  const json body = parse_body(text);
  ApiRequest req;
  req.endpoint = endpoint;
  check_model(body, model_name);
  if (integer_in(body, "n", 1, 1, 1) != 1) bad("n", "'n' must be 1");

  if (endpoint == Endpoint::Completions) {
    const json* p = field(body, "prompt");
    if (p == nullptr) bad("prompt", "'prompt' is required");
    req.prompt = completion_prompt(*p, tokenizer, /*add_special=*/true);
    if (boolean(body, "echo", false)) bad("echo", "'echo' is not supported");
    const int64_t lp = integer_in(body, "logprobs", 0, 20, -1);
    req.params.logprobs = lp >= 0;
    req.params.top_logprobs = int(std::max<int64_t>(lp, 0));
  } else {
    const json* msgs = field(body, "messages");
    if (msgs == nullptr) bad("messages", "'messages' is required");
    req.prompt = chat_prompt(*msgs, tokenizer, /*add_generation_prompt=*/true);
    req.params.logprobs = boolean(body, "logprobs", false);
    req.params.top_logprobs = int(integer_in(body, "top_logprobs", 0, 20, 0));
    if (field(body, "top_logprobs") != nullptr && !req.params.logprobs)
      bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }

  const int64_t n = int64_t(req.prompt.size());
  const char* prompt_param = endpoint == Endpoint::Chat ? "messages" : "prompt";
  if (n == 0) bad(prompt_param, "the prompt is empty");
  if (n >= context_length)
    bad(prompt_param,
        fmt::format("this model's maximum context length is {} tokens, but the prompt has {} "
                    "tokens",
                    context_length, n),
        "context_length_exceeded");
  const char* max_name =
      endpoint == Endpoint::Chat && field(body, "max_completion_tokens") != nullptr
          ? "max_completion_tokens"
          : "max_tokens";
  const int64_t fallback = endpoint == Endpoint::Completions
                               ? std::min<int64_t>(16, context_length - n)
                               : context_length - n;
  const int64_t max_tokens = integer_in(body, max_name, 1, INT32_MAX, fallback);
  if (n + max_tokens > context_length)
    bad(max_name,
        fmt::format("this model's maximum context length is {} tokens, but {} were requested "
                    "({} in the prompt, {} in the completion)",
                    context_length, n + max_tokens, n, max_tokens),
        "context_length_exceeded");
  req.params.stop.max_tokens = int(max_tokens);

  SamplingParams& s = req.params.sampling;
  s.temperature = float(number_in(body, "temperature", 0, 2, false, 1.0));
  s.top_p = float(number_in(body, "top_p", 0, 1, true, 1.0));
  s.top_k = int(integer_in(body, "top_k", -1, INT32_MAX, 0));
  if (s.top_k < 0) s.top_k = 0;  // vLLM's -1: off
  s.min_p = float(number_in(body, "min_p", 0, 1, false, 0.0));
  s.presence_penalty = float(number_in(body, "presence_penalty", -2, 2, false, 0.0));
  s.frequency_penalty = float(number_in(body, "frequency_penalty", -2, 2, false, 0.0));
  s.repetition_penalty = float(number_in(body, "repetition_penalty", 0, 100, true, 1.0));
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) bad("seed", "'seed' must be an integer");
    s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
  }
  if (const json* stop = field(body, "stop")) {
    std::vector<std::string> strings;
    if (stop->is_string()) {
      strings.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const json& x : *stop) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or an array of strings");
        strings.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings");
    }
    if (strings.size() > StopConditions::kMaxStopStrings)
      bad("stop", fmt::format("at most {} stop strings", StopConditions::kMaxStopStrings));
    for (const auto& x : strings)
      if (x.empty() || x.size() > StopConditions::kMaxStopStringBytes)
        bad("stop", "stop strings must be 1 to 1024 bytes long");
    req.params.stop.stop_strings = std::move(strings);
  }
  req.params.ignore_eos = boolean(body, "ignore_eos", false);
  req.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    req.include_usage = boolean(*so, "include_usage", false);
  }
  return req;
}

// ---- responses ----

std::string new_response_id(Endpoint endpoint) {
  return new_id(endpoint == Endpoint::Chat ? "chatcmpl" : "cmpl");
}

ResponseBuilder::ResponseBuilder(const ApiRequest& req, const Tokenizer& tokenizer,
                                 std::string model_name, std::string id)
    : req_(req),
      tokenizer_(tokenizer),
      model_name_(std::move(model_name)),
      id_(id.empty() ? new_response_id(req.endpoint) : std::move(id)),
      created_(int64_t(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count())) {}

json ResponseBuilder::base(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_name_}};
}

json ResponseBuilder::usage(const engine::StreamOutput& f) {
  return {{"prompt_tokens", f.prompt_tokens},
          {"completion_tokens", f.completion_tokens},
          {"total_tokens", f.prompt_tokens + f.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", f.cached_prompt_tokens}}},
          {"prompt_cache_hit_tokens", f.cached_prompt_tokens},
          {"prompt_cache_miss_tokens", f.prompt_tokens - f.cached_prompt_tokens}};
}

json ResponseBuilder::logprobs_json(const std::vector<LogprobEntry>& entries,
                                    size_t text_offset) const {
  if (!req_.params.logprobs) return nullptr;
  if (req_.endpoint == Endpoint::Chat) {
    json content = json::array();
    for (const auto& e : entries) {
      const std::string t = tokenizer_.token_text(e.id);
      json top = json::array();
      for (const auto& a : e.top) {
        const std::string at = tokenizer_.token_text(a.id);
        top.push_back({{"token", at}, {"logprob", a.logprob}, {"bytes", token_bytes(at)}});
      }
      content.push_back(
          {{"token", t}, {"logprob", e.logprob}, {"bytes", token_bytes(t)}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  size_t offset = text_offset;
  for (const auto& e : entries) {
    const std::string t = tokenizer_.token_text(e.id);
    tokens.push_back(t);
    token_logprobs.push_back(e.logprob);
    json alternatives = json::object();
    for (const auto& a : e.top) alternatives[tokenizer_.token_text(a.id)] = a.logprob;
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += t.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json ResponseBuilder::full(const std::string& text, const std::vector<LogprobEntry>& logprobs,
                           const engine::StreamOutput& f) const {
  json choice = {{"index", 0},
                 {"logprobs", logprobs_json(logprobs, 0)},
                 {"finish_reason", finish_reason_name(f.finish)}};
  json r;
  if (req_.endpoint == Endpoint::Chat) {
    r = base("chat.completion");
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    r = base("text_completion");
    choice["text"] = text;
  }
  r["choices"] = json::array({choice});
  r["usage"] = usage(f);
  return r;
}

json ResponseBuilder::chunk(const std::string& text, const std::vector<LogprobEntry>& logprobs) {
  json choice = {{"index", 0},
                 {"logprobs", logprobs_json(logprobs, text_offset_)},
                 {"finish_reason", nullptr}};
  text_offset_ += text.size();
  json r;
  if (req_.endpoint == Endpoint::Chat) {
    r = base("chat.completion.chunk");
    json delta = {{"content", text}};
    if (!sent_role_) delta["role"] = "assistant";
    sent_role_ = true;
    choice["delta"] = delta;
  } else {
    r = base("text_completion");
    choice["text"] = text;
  }
  r["choices"] = json::array({choice});
  if (req_.include_usage) r["usage"] = nullptr;
  return r;
}

json ResponseBuilder::finish_chunk(const engine::StreamOutput& f) const {
  json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(f.finish)}};
  json r;
  if (req_.endpoint == Endpoint::Chat) {
    r = base("chat.completion.chunk");
    choice["delta"] = json::object();
  } else {
    r = base("text_completion");
    choice["text"] = "";
  }
  r["choices"] = json::array({choice});
  if (req_.include_usage) r["usage"] = nullptr;
  return r;
}

json ResponseBuilder::usage_chunk(const engine::StreamOutput& f) const {
  json r = base(req_.endpoint == Endpoint::Chat ? "chat.completion.chunk" : "text_completion");
  r["choices"] = json::array();
  r["usage"] = usage(f);
  return r;
}

json tokenize(const std::string& text, const Tokenizer& tokenizer, const std::string& model_name,
              int64_t context_length) {
  const json body = parse_body(text);
  check_model(body, model_name);
  const json* prompt = field(body, "prompt");
  const json* messages = field(body, "messages");
  if ((prompt == nullptr) == (messages == nullptr))
    bad(prompt ? "messages" : "prompt", "give exactly one of 'prompt' and 'messages'");
  std::vector<int32_t> ids;
  if (prompt != nullptr) {
    ids = completion_prompt(*prompt, tokenizer, boolean(body, "add_special_tokens", true));
  } else {
    ids = chat_prompt(*messages, tokenizer, boolean(body, "add_generation_prompt", true));
    // The rendered conversation starts with BOS already; asking for more adds another, as
    // transformers does.
    if (boolean(body, "add_special_tokens", false) && tokenizer.bos_id() >= 0)
      ids.insert(ids.begin(), tokenizer.bos_id());
  }
  return {{"tokens", ids},
          {"count", ids.size()},
          {"max_model_len", context_length},
          {"token_strs", nullptr}};
}

json detokenize(const std::string& text, const Tokenizer& tokenizer,
                const std::string& model_name) {
  const json body = parse_body(text);
  check_model(body, model_name);
  const json* tokens = field(body, "tokens");
  if (tokens == nullptr) bad("tokens", "'tokens' is required");
  if (!tokens->is_array()) bad("tokens", "'tokens' must be an array of token ids");
  std::vector<int32_t> ids;
  for (const json& t : *tokens) ids.push_back(token_id(t, tokenizer, "tokens"));
  return {{"prompt", tokenizer.decode(ids, /*skip_special=*/false)}};
}

}  // namespace ff::server
