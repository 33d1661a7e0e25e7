// The OpenAI API against a running server: every endpoint and parameter, streamed vs not,
// agreement with `fireflyer generate`, the prefix cache, bad input, disconnects.
#include <cstdio>
#include <future>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { srv_ = new TestServer(); }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override { EXPECT_EQ(srv_->wait_pages_released(), 0) << "KV pages leaked"; }
  static TestServer* srv_;
};
TestServer* ServerTest::srv_ = nullptr;

const char* kPrompt = "It is a truth universally acknowledged";

std::string run_cli(const std::string& args) {
  const std::string cmd = std::string(FF_CLI_PATH) + " generate --no-stats --model " +
                          fixture("default-model") + " " + args + " 2>/dev/null";
  int status = 0;
  std::string out = run_command(cmd, &status);
  EXPECT_EQ(status, 0) << cmd;
  return out;
}

TEST_F(ServerTest, HealthModelsAndPage) {
  HttpResult h = srv_->get("/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(json::parse(h.body)["status"], "ok");
  HttpResult m = srv_->get("/v1/models");
  ASSERT_EQ(m.status, 200);
  const json models = json::parse(m.body);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "default-model");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["max_model_len"], 1024);
  HttpResult page = srv_->get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.headers["content-type"].find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("/v1/chat/completions"), std::string::npos);
  EXPECT_EQ(srv_->get("/nope").status, 404);
  EXPECT_EQ(srv_->get("/v1/completions").status, 405);
}

// Greedy server output equals `fireflyer generate` (which echoes the prompt, then a newline).
TEST_F(ServerTest, GreedyCompletionEqualsCli) {
  const std::string cli = run_cli(std::string("-n 32 --prompt '") + kPrompt + "'");
  HttpResult r = srv_->post(
      "/v1/completions",
      {{"model", "default-model"}, {"prompt", kPrompt}, {"max_tokens", 32}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  const std::string text = j["choices"][0]["text"];
  EXPECT_EQ(std::string(kPrompt) + text + "\n", cli);
  EXPECT_FALSE(text.empty());
  const json& u = j["usage"];
  EXPECT_EQ(u["completion_tokens"].get<int>() + u["prompt_tokens"].get<int>(),
            u["total_tokens"].get<int>());
  EXPECT_EQ(u["prompt_cache_hit_tokens"].get<int>() + u["prompt_cache_miss_tokens"].get<int>(),
            u["prompt_tokens"].get<int>());
}

TEST_F(ServerTest, GreedyChatEqualsCli) {
  const std::string cli = run_cli("--chat -n 40 --prompt 'Who is Mr. Darcy?'");
  HttpResult r = srv_->post("/v1/chat/completions",
                            {{"messages", {{{"role", "user"}, {"content", "Who is Mr. Darcy?"}}}},
                             {"max_tokens", 40},
                             {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>() + "\n", cli);
}

// For a fixed seed, streamed and non-streamed answers are identical (both endpoints), the stream
// ends with [DONE], and include_usage adds a usage chunk equal to the non-streamed usage.
TEST_F(ServerTest, StreamEqualsNonStream) {
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    json body = {{"max_tokens", 48}, {"temperature", 0.9}, {"top_p", 0.95}, {"seed", 1234}};
    if (std::string(path) == "/v1/completions")
      body["prompt"] = "Elizabeth said";
    else
      body["messages"] = {{{"role", "system"}, {"content", "Be brief."}},
                          {{"role", "user"}, {"content", "Tell me about Jane."}}};
    HttpResult whole = srv_->post(path, body);
    ASSERT_EQ(whole.status, 200) << whole.body;
    const json w = json::parse(whole.body);
    const json& choice = w["choices"][0];
    const std::string text =
        choice.contains("message") ? choice["message"]["content"] : choice["text"];
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    HttpResult streamed = srv_->post(path, body);
    ASSERT_EQ(streamed.status, 200);
    EXPECT_NE(streamed.headers["content-type"].find("text/event-stream"), std::string::npos);
    const Streamed s = parse_stream(streamed.body);
    EXPECT_TRUE(s.done) << path;
    EXPECT_EQ(s.text, text) << path;
    EXPECT_EQ(s.finish_reason, choice["finish_reason"]) << path;
    EXPECT_EQ(s.usage["completion_tokens"], w["usage"]["completion_tokens"]) << path;
    EXPECT_EQ(s.usage["prompt_tokens"], w["usage"]["prompt_tokens"]) << path;
    EXPECT_GT(s.text_chunks, 1) << path;
    // A different seed gives a different sample.
    body["seed"] = 99;
    body["stream"] = false;
    const json other = json::parse(srv_->post(path, body).body);
    const json& oc = other["choices"][0];
    EXPECT_NE(oc.contains("message") ? oc["message"]["content"] : oc["text"], text) << path;
  }
}

TEST_F(ServerTest, MaxTokensAndStop) {
  json r = json::parse(
      srv_->post("/v1/completions",
                 {{"prompt", kPrompt}, {"max_tokens", 5}, {"temperature", 0}, {"ignore_eos", true}})
          .body);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 5);
  const std::string full = json::parse(
      srv_->post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 32}, {"temperature", 0}})
          .body)["choices"][0]["text"];
  // Stop at the first space after the first word: the text before it, finish_reason "stop".
  const size_t cut = full.find(' ', 2);
  ASSERT_NE(cut, std::string::npos);
  const std::string stop = full.substr(cut, 2);
  for (bool stream : {false, true}) {
    json body = {{"prompt", kPrompt},
                 {"max_tokens", 32},
                 {"temperature", 0},
                 {"stop", json::array({stop, "zzzz"})},
                 {"stream", stream}};
    HttpResult h = srv_->post("/v1/completions", body);
    ASSERT_EQ(h.status, 200);
    std::string text, reason;
    if (stream) {
      const Streamed s = parse_stream(h.body);
      text = s.text;
      reason = s.finish_reason;
    } else {
      const json j = json::parse(h.body);
      text = j["choices"][0]["text"];
      reason = j["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(text, full.substr(0, full.find(stop))) << "stream " << stream;
    EXPECT_EQ(reason, "stop");
  }
  // A single string works too.
  const json one = json::parse(
      srv_->post("/v1/completions",
                 {{"prompt", kPrompt}, {"max_tokens", 32}, {"temperature", 0}, {"stop", stop}})
          .body);
  EXPECT_EQ(one["choices"][0]["text"], full.substr(0, full.find(stop)));
}

TEST_F(ServerTest, Logprobs) {
  const json c = json::parse(
      srv_->post("/v1/completions",
                 {{"prompt", kPrompt}, {"max_tokens", 6}, {"temperature", 0}, {"logprobs", 3}})
          .body);
  const json& lp = c["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 6u);
  ASSERT_EQ(lp["token_logprobs"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const double l = lp["token_logprobs"][i];
    EXPECT_LE(l, 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
    // Greedy: the chosen token is the most likely one.
    double best = -1e30;
    for (auto& [tok, v] : lp["top_logprobs"][i].items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(l, best, 1e-6);
  }
  std::string joined;
  for (const auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, c["choices"][0]["text"]);

  const json chat = json::parse(
      srv_->post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                                          {"max_tokens", 4},
                                          {"temperature", 0},
                                          {"logprobs", true},
                                          {"top_logprobs", 2}})
          .body);
  const json& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), size_t(chat["usage"]["completion_tokens"].get<int>()));
  for (const json& e : content) {
    EXPECT_TRUE(e["token"].is_string());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    EXPECT_TRUE(e["bytes"].is_array());
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_GE(e["top_logprobs"][0]["logprob"].get<double>(),
              e["top_logprobs"][1]["logprob"].get<double>());
  }
  // Streamed: every token's entry arrives in some chunk, in order.
  HttpResult streamed = srv_->post("/v1/completions", {{"prompt", kPrompt},
                                                       {"max_tokens", 6},
                                                       {"temperature", 0},
                                                       {"logprobs", 3},
                                                       {"stream", true}});
  std::vector<std::string> stream_tokens;
  for (const std::string& ev : sse_events(streamed.body)) {
    if (ev == "[DONE]") continue;
    const json j = json::parse(ev);
    const json& l = j["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    for (const auto& t : l["tokens"]) stream_tokens.push_back(t);
  }
  EXPECT_EQ(stream_tokens, lp["tokens"].get<std::vector<std::string>>());
  // Without logprobs the field is null.
  const json plain =
      json::parse(srv_->post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 2}}).body);
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
}

// A long prompt sent twice: the second reports cache hits (whole 64-token pages) and the same
// text; /metrics counts the hits.
TEST_F(ServerTest, PrefixCacheHits) {
  std::string prompt;
  for (int i = 0; i < 12; ++i)
    prompt += "Mrs. Bennet had many grievances, and Mr. Bennet had much patience. ";
  json body = {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}};
  const json a = json::parse(srv_->post("/v1/completions", body).body);
  const json b = json::parse(srv_->post("/v1/completions", body).body);
  const int prompt_tokens = a["usage"]["prompt_tokens"];
  ASSERT_GT(prompt_tokens, 128);
  EXPECT_EQ(b["choices"][0]["text"], a["choices"][0]["text"]);
  const int hit = b["usage"]["prompt_cache_hit_tokens"];
  EXPECT_EQ(hit, (prompt_tokens - 1) / 64 * 64);
  EXPECT_EQ(b["usage"]["prompt_cache_miss_tokens"], prompt_tokens - hit);
  EXPECT_EQ(b["usage"]["prompt_tokens_details"]["cached_tokens"], hit);
  EXPECT_GE(srv_->metric("fireflyer_prefix_cache_hits_total"), hit);
  EXPECT_GT(srv_->metric("fireflyer_prefix_cache_hit_rate"), 0);
}

TEST_F(ServerTest, BadRequestsGet400AndServerKeepsServing) {
  const std::string long_prompt(6000, 'a');
  struct Case {
    const char* path;
    std::string body;
    const char* param;  // expected "param", "" for null
  };
  const std::vector<Case> cases = {
      {"/v1/completions", "{\"prompt\": \"hi\", ", ""},
      {"/v1/completions", "[1, 2]", ""},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": "ten"})", "max_tokens"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": -5})", "max_tokens"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": 0})", "max_tokens"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": 5000})", "max_tokens"},
      {"/v1/completions", R"({"prompt": "hi", "temperature": "hot"})", "temperature"},
      {"/v1/completions", R"({"prompt": "hi", "temperature": 7})", "temperature"},
      {"/v1/completions", R"({"prompt": "hi", "top_p": 0})", "top_p"},
      {"/v1/completions", R"({"prompt": "hi", "stop": 5})", "stop"},
      {"/v1/completions", R"({"prompt": "hi", "stop": [""]})", "stop"},
      {"/v1/completions", R"({"prompt": "hi", "stream": "yes"})", "stream"},
      {"/v1/completions", R"({"prompt": "hi", "logprobs": 50})", "logprobs"},
      {"/v1/completions", R"({"prompt": "hi", "n": 2})", "n"},
      {"/v1/completions", R"({"prompt": "hi", "seed": 1.5})", "seed"},
      {"/v1/completions", R"({"prompt": 42})", "prompt"},
      {"/v1/completions", R"({"prompt": [1, 99999999]})", "prompt"},
      {"/v1/completions", R"({"max_tokens": 3})", "prompt"},
      {"/v1/completions", R"({"prompt": "hi", "model": "gpt-4"})", "model"},
      {"/v1/completions", R"({"prompt": "hi", "model": 3})", "model"},
      {"/v1/completions", "{\"prompt\": \"" + long_prompt + "\"}", "prompt"},
      {"/v1/chat/completions", R"({"messages": "hi"})", "messages"},
      {"/v1/chat/completions", R"({"messages": []})", "messages"},
      {"/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})",
       "messages[0].role"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 7}]})",
       "messages[0].content"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})",
       "logprobs"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1})",
       "max_completion_tokens"},
      {"/v1/chat/completions",
       "{\"messages\": [{\"role\": \"user\", \"content\": \"" + long_prompt + "\"}]}", "messages"},
  };
  for (const Case& c : cases) {
    HttpResult r = srv_->post_raw(c.path, c.body);
    EXPECT_EQ(r.status, 400) << c.body.substr(0, 80);
    json j;
    ASSERT_NO_THROW(j = json::parse(r.body)) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    if (c.param[0] != 0)
      EXPECT_EQ(j["error"]["param"], c.param) << c.body.substr(0, 80);
    else
      EXPECT_TRUE(j["error"]["param"].is_null()) << c.body.substr(0, 80);
  }
  EXPECT_EQ(
      json::parse(srv_->post_raw("/v1/completions", "{\"prompt\": 1.5}").body)["error"]["param"],
      "prompt");
  // Unknown model: an explicit code as OpenAI's; context overflow too.
  EXPECT_EQ(json::parse(srv_->post_raw("/v1/completions", R"({"prompt": "a", "model": "x"})")
                            .body)["error"]["code"],
            "model_not_found");
  EXPECT_GE(srv_->metric("fireflyer_requests_rejected_total"), double(cases.size()));
  // Still serving.
  EXPECT_EQ(srv_->get("/health").status, 200);
  HttpResult ok = srv_->post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 3}});
  EXPECT_EQ(ok.status, 200);
}

// A client that hangs up mid-stream cancels its request; its pages come back.
TEST_F(ServerTest, DisconnectFreesPages) {
  const double cancelled_before = srv_->metric("fireflyer_requests_total");  // finished line
  json body = {{"prompt", kPrompt}, {"max_tokens", 900}, {"ignore_eos", true}, {"stream", true}};
  int chunks = 0;
  HttpResult r = http_request("127.0.0.1", srv_->port(), "POST", "/v1/completions", body.dump(),
                              [&](std::string_view data) {
                                chunks += data.find("data: ") != std::string_view::npos;
                                return chunks < 3;
                              });
  EXPECT_EQ(r.status, 200);
  // The request was cancelled, not completed, and gave its pages back.
  EXPECT_TRUE(srv_->wait_metrics_contain("status=\"cancelled\"} 1"));
  EXPECT_EQ(srv_->wait_pages_released(), 0);
  EXPECT_EQ(srv_->metric("fireflyer_requests_total"), cancelled_before);
  // Non-streamed too.
  std::thread t([&] {
    http_request("127.0.0.1", srv_->port(), "POST", "/v1/completions",
                 json({{"prompt", kPrompt}, {"max_tokens", 900}, {"ignore_eos", true}}).dump(), {},
                 0.03);  // gives up (and closes) after 0.03 s, long before 900 tokens
  });
  t.join();
  // The server may still be picking the request up when the client has gone: wait for the
  // cancellation itself, not just for no pages in use.
  EXPECT_TRUE(srv_->wait_metrics_contain("status=\"cancelled\"} 2"));
  EXPECT_EQ(srv_->wait_pages_released(), 0);
}

// Concurrent greedy requests give the same tokens as the same requests one at a time, up to near
// ties (batched GEMMs may differ from lone decode steps in the last bits).
TEST_F(ServerTest, ConcurrentEqualsSequential) {
  std::vector<json> bodies;
  const char* starts[] = {"Mr. Bingley", "Lady Catherine", "Pemberley",   "Jane",
                          "Lydia",       "Mr. Collins",    "Netherfield", "Kitty"};
  for (int i = 0; i < 8; ++i)
    bodies.push_back({{"prompt", starts[i]},
                      {"max_tokens", 20 + 5 * i},
                      {"temperature", 0},
                      {"ignore_eos", true},
                      {"logprobs", 2}});
  auto run = [&](const json& b) { return json::parse(srv_->post("/v1/completions", b).body); };
  std::vector<json> alone;
  for (const json& b : bodies) alone.push_back(run(b));
  std::vector<std::future<json>> futures;
  for (const json& b : bodies)
    futures.push_back(std::async(std::launch::async, [&, b] { return run(b); }));
  for (size_t i = 0; i < futures.size(); ++i) {
    const json together = futures[i].get();
    const json& a = alone[i]["choices"][0]["logprobs"];
    const json& t = together["choices"][0]["logprobs"];
    ASSERT_EQ(t["tokens"].size(), a["tokens"].size()) << i;
    for (size_t k = 0; k < a["tokens"].size(); ++k) {
      if (t["tokens"][k] == a["tokens"][k]) continue;
      std::vector<double> top;
      for (auto& [tok, v] : a["top_logprobs"][k].items()) top.push_back(v.get<double>());
      std::sort(top.rbegin(), top.rend());
      ASSERT_GE(top.size(), 2u);
      EXPECT_LT(top[0] - top[1], 0.02) << "request " << i << " token " << k << " differs";
      break;
    }
  }
}

TEST_F(ServerTest, MetricsExposition) {
  srv_->post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 4}});
  const std::string m = srv_->get("/metrics").body;
  for (const char* name :
       {"fireflyer_requests_total", "fireflyer_prompt_tokens_total",
        "fireflyer_generation_tokens_total", "fireflyer_time_to_first_token_seconds_bucket",
        "fireflyer_inter_token_latency_seconds_bucket", "fireflyer_kv_pages_used",
        "fireflyer_kv_pages_free", "fireflyer_prefix_cache_hit_rate",
        "fireflyer_num_requests_running", "fireflyer_num_requests_waiting"})
    EXPECT_NE(m.find(name), std::string::npos) << name;
  EXPECT_NE(m.find("# TYPE fireflyer_time_to_first_token_seconds histogram"), std::string::npos);
  EXPECT_GT(srv_->metric("fireflyer_generation_tokens_total"), 0);
  EXPECT_GT(srv_->metric("fireflyer_time_to_first_token_seconds_count"), 0);
  EXPECT_EQ(srv_->metric("fireflyer_kv_pages_used") + srv_->metric("fireflyer_kv_pages_free"),
            srv_->metric("fireflyer_kv_pages_total"));
  // Histogram buckets are cumulative and end at _count.
  double last = -1;
  size_t pos = 0;
  while ((pos = m.find("fireflyer_inter_token_latency_seconds_bucket{", pos)) !=
         std::string::npos) {
    const size_t eol = m.find('\n', pos);
    const double v = std::stod(m.substr(m.rfind(' ', eol) + 1, eol));
    EXPECT_GE(v, last);
    last = v;
    pos = eol;
  }
  EXPECT_EQ(last, srv_->metric("fireflyer_inter_token_latency_seconds_count"));
}

}  // namespace
}  // namespace ff::server::testing
