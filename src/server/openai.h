// The OpenAI API's wire format: request bodies parsed and checked into engine parameters, and
// the JSON of responses, stream chunks and errors (private to the server module).
//
// Accepted request fields (others are ignored, as OpenAI's servers do):
//   both:        model (string, must name the served model), max_tokens (integer >= 1; null:
//                default), temperature [0, 2], top_p (0, 1], seed (integer), stop (string or
//                array of up to 16 non-empty strings), stream (bool), stream_options.include_usage
//                (bool), n (1 only), presence_penalty / frequency_penalty [-2, 2], and vLLM's
//                extras top_k, min_p, repetition_penalty, ignore_eos
//   completions: prompt (string, [string] or [token ids]), logprobs (integer 0..20: top-N),
//                echo (false only); max_tokens defaults to 16
//   chat:        messages ([{role, content: string | [{type: "text", text}]}]),
//                max_completion_tokens (alias of max_tokens), logprobs (bool), top_logprobs
//                (0..20); max_tokens defaults to the rest of the context
// A bad field gives ApiError{400, message naming the field, param}.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace ff::server {

using json = nlohmann::json;

struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // empty: null
  std::string code;   // empty: null
  std::string type = "invalid_request_error";
};

json error_body(const ApiError& e);

enum class Endpoint { Completions, Chat };

struct ApiRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::vector<int32_t> prompt;
  GenerationParams params;
  bool stream = false;
  bool include_usage = false;
};

// Parses and checks a request body; throws ApiError.
ApiRequest parse_request(Endpoint endpoint, const std::string& body, const std::string& model_name,
                         const Tokenizer& tokenizer, int64_t context_length);

// POST /tokenize (vLLM's and SGLang's shape): {"prompt": string | [string] | [ids],
// "add_special_tokens": bool = true} or {"messages": [...], "add_generation_prompt": bool = true,
// "add_special_tokens": bool = false} -> {"tokens": [...], "count": n, "max_model_len": ctx,
// "token_strs": null}. Throws ApiError.
json tokenize(const std::string& body, const Tokenizer& tokenizer, const std::string& model_name,
              int64_t context_length);
// POST /detokenize: {"tokens": [ids]} -> {"prompt": text} (special tokens kept). Throws ApiError.
json detokenize(const std::string& body, const Tokenizer& tokenizer, const std::string& model_name);

// A new response id: "cmpl-<hex>" or "chatcmpl-<hex>".
std::string new_response_id(Endpoint endpoint);

// Builds responses. `id` is the response id, `created` a unix time.
class ResponseBuilder {
 public:
  // id: the response id ("cmpl-..." / "chatcmpl-..."); empty: a new one.
  ResponseBuilder(const ApiRequest& req, const Tokenizer& tokenizer, std::string model_name,
                  std::string id = {});
  const std::string& id() const { return id_; }

  // The complete non-streamed response.
  json full(const std::string& text, const std::vector<LogprobEntry>& logprobs,
            const engine::StreamOutput& final) const;
  // One stream chunk with text (chat: the first one also carries the role).
  json chunk(const std::string& text, const std::vector<LogprobEntry>& logprobs);
  // The chunk with finish_reason, and the usage-only chunk (stream_options.include_usage).
  json finish_chunk(const engine::StreamOutput& final) const;
  json usage_chunk(const engine::StreamOutput& final) const;

 private:
  json base(const char* object) const;
  json logprobs_json(const std::vector<LogprobEntry>& entries, size_t text_offset) const;
  static json usage(const engine::StreamOutput& final);

  const ApiRequest& req_;
  const Tokenizer& tokenizer_;
  std::string model_name_;
  std::string id_;
  int64_t created_;
  bool sent_role_ = false;
  size_t text_offset_ = 0;
};

std::string dump(const json& j);  // compact, invalid UTF-8 replaced

}  // namespace ff::server
