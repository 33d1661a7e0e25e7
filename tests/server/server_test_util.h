// A server on a free loopback port over the default model, shared by the server tests, and
// helpers to talk to it.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gemm/linear_kernels.h"
#include "server/http.h"
#include "server/server.h"

namespace ff::server::testing {

using json = nlohmann::json;

// Runs a shell command and returns its standard output; *status gets pclose()'s status (-1,
// with a test failure, when the command cannot be started).
inline std::string run_command(const std::string& cmd, int* status) {
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) {
    ADD_FAILURE() << "cannot run " << cmd;
    *status = -1;
    return {};
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  *status = pclose(f);
  return out;
}

inline std::string fixture(const std::string& name) {
  return std::string(FF_FIXTURES_DIR) + "/" + name;
}

struct TestServer {
  std::unique_ptr<Model> model;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<Server> server;

  explicit TestServer(engine::EngineOptions eo = {}, ServerOptions so = {}) {
    model = Model::load(fixture("default-model"));
    engine =
        std::make_unique<engine::Engine>(*model, Tokenizer::from_dir(fixture("default-model")), eo);
    so.host = "127.0.0.1";
    so.port = 0;
    so.model_name = "default-model";
    server = std::make_unique<Server>(*engine, so);
    server->start();
  }
  ~TestServer() {
    server->stop();
    server.reset();
    engine.reset();
  }
  int port() const { return server->port(); }

  HttpResult get(const std::string& path) const {
    return http_request("127.0.0.1", port(), "GET", path, {}, {}, 60);
  }
  HttpResult post(const std::string& path, const json& body,
                  const std::vector<std::string>& headers = {}) const {
    return http_request("127.0.0.1", port(), "POST", path, body.dump(), {}, 60, headers);
  }
  HttpResult post_raw(const std::string& path, const std::string& body) const {
    return http_request("127.0.0.1", port(), "POST", path, body, {}, 60);
  }

  // A metric's value (the first line that starts with `name{` or `name `), or -1.
  double metric(const std::string& name) const {
    const std::string text = get("/metrics").body;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = text.find('\n', pos);
      const std::string line = text.substr(pos, end - pos);
      if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0)
        return std::stod(line.substr(line.rfind(' ') + 1));
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    return -1;
  }
  // Waits (bounded) until no request holds a page; returns the last kv_pages_used.
  // Polls /metrics until it contains `text`; false (with the last body printed) after `seconds`.
  bool wait_metrics_contain(const std::string& text, double seconds = 10) const {
    std::string body;
    for (int i = 0; i < int(seconds * 50); ++i) {
      body = get("/metrics").body;
      if (body.find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no '" << text << "' in /metrics:\n" << body;
    return false;
  }
  double wait_pages_released(double seconds = 10) const {
    double used = -1;
    for (int i = 0; i < int(seconds * 50); ++i) {
      used = metric("fireflyer_kv_pages_used");
      if (used == 0 && metric("fireflyer_num_requests_running") == 0) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return used;
  }
};

// The `data: ...` payloads of an SSE body, in order.
inline std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string ev = body.substr(pos, end - pos);
    if (ev.rfind("data: ", 0) == 0) out.push_back(ev.substr(6));
    pos = end + 2;
  }
  return out;
}

// The text and final chunk of a streamed completion or chat completion.
struct Streamed {
  std::string text;
  std::string finish_reason;
  json usage;
  bool done = false;  // ended with [DONE]
  int text_chunks = 0;
};

inline Streamed parse_stream(const std::string& body) {
  Streamed s;
  for (const std::string& ev : sse_events(body)) {
    if (ev == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(ev);
    if (j.contains("usage") && !j["usage"].is_null()) s.usage = j["usage"];
    if (!j.contains("choices") || j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    std::string piece;
    if (c.contains("delta")) {
      if (c["delta"].contains("content")) piece = c["delta"]["content"].get<std::string>();
    } else {
      piece = c["text"].get<std::string>();
    }
    if (!piece.empty()) ++s.text_chunks;
    s.text += piece;
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"].get<std::string>();
  }
  return s;
}

}  // namespace ff::server::testing

namespace ff::server::testing {

// A streamed chat completion's tokens (with logprobs and top_logprobs 2), its text, and how it
// ended: a finish chunk, or an error event; then [DONE].
struct ChatStream {
  int status = 0;
  std::string text;
  std::vector<std::string> tokens;
  std::vector<double> margins;  // top-1 minus top-2 logprob per token
  std::string finish_reason;
  json error;  // the error event's "error" object, or null
  bool done = false;
  bool events_only = true;  // every piece of the body is a `data: ` event
};

inline ChatStream parse_chat_stream(const HttpResult& r) {
  ChatStream s;
  s.status = r.status;
  size_t pos = 0;
  while (pos < r.body.size()) {
    size_t end = r.body.find("\n\n", pos);
    if (end == std::string::npos) end = r.body.size();
    const std::string ev = r.body.substr(pos, end - pos);
    pos = end + 2;
    if (ev.rfind("data: ", 0) != 0) {
      s.events_only = false;
      continue;
    }
    const std::string data = ev.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(data);
    if (j.contains("error")) {
      s.error = j["error"];
      continue;
    }
    if (!j.contains("choices") || j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    if (c.contains("delta") && c["delta"].contains("content"))
      s.text += c["delta"]["content"].get<std::string>();
    if (c.contains("logprobs") && c["logprobs"].is_object())
      for (const json& t : c["logprobs"]["content"]) {
        s.tokens.push_back(t["token"]);
        const json& top = t["top_logprobs"];
        s.margins.push_back(top.size() >= 2
                                ? top[0]["logprob"].get<double>() - top[1]["logprob"].get<double>()
                                : 1e9);
      }
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"];
  }
  return s;
}

// The server tests compare a request's tokens alone and among others (batched steps, chunked
// prefill). With the BF16 dot kernel (the default on AMD Zen 4 / 5) X is rounded to bf16, which
// turns the last-bit differences of another summation order into whole bf16 steps now and then,
// enough to tip a near tie in the MoE router inside the model (a 0.65 gap in the final logits
// seen to flip); the fp32 kernel keeps batched and lone steps within fp32 noise. So the whole
// binary multiplies with it; the dot kernel's own tests are in tests/gemm and tests/model.
class Fp32GemmEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { kernel_.emplace(gemm::Bf16Kernel::Fma); }
  void TearDown() override { kernel_.reset(); }

 private:
  std::optional<gemm::ScopedBf16GemmKernel> kernel_;
};
inline ::testing::Environment* const kFp32GemmEnvironment =
    ::testing::AddGlobalTestEnvironment(new Fp32GemmEnvironment);

// An engine whose batched and lone decode steps agree token for token. With the default BF16 KV
// cache, a latent that rounds to the other neighbouring bf16 value in a batched step (its GEMM
// sums in another order) can tip a near tie in the MoE router, and the other expert moves a logit
// by as much as 0.5 (seen at 6, 13 and 16 sequences on an AVX-512 CPU): correct behaviour, but
// not "the same tokens". An F32 cache keeps latents exact, so these tests can compare tokens.
inline engine::EngineOptions exact_engine() {
  engine::EngineOptions eo;
  eo.cache_dtype = DType::F32;
  return eo;
}

// A greedy streamed chat request with the two most likely tokens reported per step.
inline json traced_chat(const std::string& prompt, int max_tokens) {
  return {{"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", true},
          {"logprobs", true},
          {"top_logprobs", 2}};
}

// Greedy tokens equal the reference's until the reference itself was a near tie (batched and
// lone steps may differ in the last bits of a logit).
inline void expect_same_tokens(const ChatStream& got, const ChatStream& ref,
                               const std::string& what) {
  ASSERT_EQ(got.tokens.size(), ref.tokens.size()) << what;
  for (size_t i = 0; i < ref.tokens.size(); ++i) {
    if (got.tokens[i] == ref.tokens[i]) continue;
    EXPECT_LT(ref.margins[i], 0.02) << what << ": token " << i << " differs ('" << got.tokens[i]
                                    << "' vs '" << ref.tokens[i] << "') where the reference's "
                                    << "top two were " << ref.margins[i] << " apart";
    return;
  }
  EXPECT_EQ(got.text, ref.text) << what;
}

}  // namespace ff::server::testing
