// Load: 500 requests at concurrency 32 with mixed prompt (~70..210 tokens) and output (1..32)
// lengths, both endpoints,
// streamed and not, some clients hanging up early, over a KV cache small enough to force
// preemption. Ends with no page leaked, no crash, and every completed response well-formed.
#include <atomic>
#include <random>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

TEST(ServerLoad, FiveHundredMixedRequests) {
  engine::EngineOptions eo;
  eo.num_pages = 20;  // 1280 tokens for 32 clients: preemption is certain
  eo.max_batch_tokens = 256;
  TestServer srv(eo);
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kRequests = 150;  // sanitizers look for memory errors, not volume (3 min at 500)
#else
  constexpr int kRequests = 500;
#endif
  constexpr int kConcurrency = 32;
  const std::string base =
      "It is a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife. However little known the feelings or views of such a "
      "man may be on his first entering a neighbourhood, this truth is so well fixed in the minds "
      "of the surrounding families, that he is considered the rightful property of some one or "
      "other of their daughters. ";
  std::atomic<int> next{0}, completed{0}, hung_up{0}, malformed{0};
  std::mutex mu;
  std::vector<std::string> problems;
  auto problem = [&](const std::string& p) {
    malformed.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    if (problems.size() < 10) problems.push_back(p);
  };
  auto client = [&](int worker) {
    std::mt19937 rng(uint32_t(worker) * 7919u + 1);
    for (int i; (i = next.fetch_add(1)) < kRequests;) {
      const int repeat = 1 + int(rng() % 3);  // ~70 to ~210 tokens, shared prefixes
      std::string prompt;
      for (int k = 0; k < repeat; ++k) prompt += base;
      prompt += "Request " + std::to_string(i) + ".";
      const int max_tokens = 1 + int(rng() % 32);
      const bool chat = rng() % 3 == 0, stream = rng() % 2 == 0, hang_up = rng() % 10 == 0;
      json body = {{"max_tokens", max_tokens},
                   {"temperature", (rng() % 2) ? 0.0 : 0.8},
                   {"seed", i},
                   {"stream", stream}};
      if (chat)
        body["messages"] = {{{"role", "user"}, {"content", prompt}}};
      else
        body["prompt"] = prompt;
      const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
      if (hang_up) {
        body["stream"] = true;
        body["max_tokens"] = 100;
        int seen = 0;
        http_request(
            "127.0.0.1", srv.port(), "POST", path, body.dump(),
            [&](std::string_view) { return ++seen < 2; }, 60);
        hung_up.fetch_add(1);
        continue;
      }
      HttpResult r = http_request("127.0.0.1", srv.port(), "POST", path, body.dump(), {}, 120);
      if (r.status != 200) {
        problem("status " + std::to_string(r.status) + ": " + r.body.substr(0, 200) + r.error);
        continue;
      }
      try {
        std::string reason;
        json usage;
        if (stream) {
          const Streamed s = parse_stream(r.body);
          if (!s.done) problem("stream without [DONE]");
          reason = s.finish_reason;
          body["stream_options"] = nullptr;
        } else {
          const json j = json::parse(r.body);
          reason = j["choices"][0]["finish_reason"];
          usage = j["usage"];
          const json& c = j["choices"][0];
          if (!(chat ? c["message"]["content"].is_string() : c["text"].is_string()))
            problem("no text");
          if (usage["completion_tokens"].get<int>() > max_tokens ||
              usage["completion_tokens"].get<int>() < 1)
            problem("completion_tokens out of range: " + usage.dump());
          if (usage["prompt_cache_hit_tokens"].get<int>() +
                  usage["prompt_cache_miss_tokens"].get<int>() !=
              usage["prompt_tokens"].get<int>())
            problem("cache hit + miss != prompt tokens: " + usage.dump());
        }
        if (reason != "stop" && reason != "length") problem("finish_reason '" + reason + "'");
        completed.fetch_add(1);
      } catch (const std::exception& e) {
        problem(std::string("unparsable response: ") + e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < kConcurrency; ++w) threads.emplace_back(client, w);
  for (auto& t : threads) t.join();
  for (const auto& p : problems) ADD_FAILURE() << p;
  EXPECT_EQ(malformed.load(), 0);
  EXPECT_EQ(completed.load() + hung_up.load(), kRequests);
  EXPECT_GT(hung_up.load(), kRequests / 50);
  EXPECT_EQ(srv.wait_pages_released(), 0) << "KV pages leaked";
  EXPECT_EQ(srv.metric("fireflyer_kv_pages_free"), 20);
  EXPECT_EQ(srv.metric("fireflyer_requests_total"), completed.load());  // status="finished"
  EXPECT_GT(srv.metric("fireflyer_preemptions_total"), 0);
  EXPECT_GT(srv.metric("fireflyer_prefix_cache_hits_total"), 0);
  EXPECT_EQ(srv.get("/health").status, 200);
}

}  // namespace
}  // namespace ff::server::testing
