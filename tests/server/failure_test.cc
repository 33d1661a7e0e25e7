// Engine and server failure paths, end to end: each fault-injection point armed for one request
// (by its X-Request-Id) among several running together. The failing request gets an error (an
// `error` event then [DONE] when streamed, an HTTP 500 JSON body when not); every other request
// gets the tokens it gets without the fault; no KV page leaks (/metrics); the server keeps serving.
#include <future>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

const char* kPrompts[] = {"Tell me about Mr. Darcy", "Who lives at Netherfield?",
                          "Describe Longbourn", "What did Lydia do?"};

class ServerFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { srv_ = new TestServer(exact_engine()); }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override { fault::disarm_all(); }

  static HttpResult chat(const json& body, const std::string& id) {
    return srv_->post("/v1/chat/completions", body, {"X-Request-Id: " + id});
  }
  // The four prompts at once; request 2 is "victim", the others "ok-<i>".
  static std::vector<HttpResult> run_batch(bool stream) {
    std::vector<std::future<HttpResult>> futures;
    for (int i = 0; i < 4; ++i) {
      json body = traced_chat(kPrompts[i], 24);
      body["stream"] = stream;
      futures.push_back(std::async(std::launch::async, [body, i] {
        return chat(body, i == 2 ? "victim" : "ok-" + std::to_string(i));
      }));
    }
    std::vector<HttpResult> out;
    for (auto& f : futures) out.push_back(f.get());
    return out;
  }
  static const std::vector<ChatStream>& reference() {
    static const std::vector<ChatStream> ref = [] {
      std::vector<ChatStream> r;
      for (const char* p : kPrompts)
        r.push_back(parse_chat_stream(chat(traced_chat(p, 24), "ref")));
      return r;
    }();
    return ref;
  }
  static void expect_healthy_after(double failed_before) {
    EXPECT_EQ(srv_->wait_pages_released(), 0) << "KV pages leaked";
    EXPECT_EQ(srv_->metric("fireflyer_invariant_violations_total"), 0);
    EXPECT_GT(srv_->metric("fireflyer_server_errors_total"), failed_before);
    EXPECT_EQ(srv_->get("/health").status, 200);
    const ChatStream again = parse_chat_stream(chat(traced_chat(kPrompts[0], 24), "after"));
    expect_same_tokens(again, reference()[0], "a request after the fault");
  }
  static TestServer* srv_;
};
TestServer* ServerFaults::srv_ = nullptr;

// Arms `point` for the victim, runs the batch streamed, checks every outcome.
#define STREAMED_FAULT_TEST(name, point)                                                  \
  TEST_F(ServerFaults, name) {                                                            \
    const auto& ref = reference();                                                        \
    const double errors_before = srv_->metric("fireflyer_server_errors_total");           \
    fault::arm(point, {"victim", -1});                                                    \
    const std::vector<HttpResult> got = run_batch(/*stream=*/true);                       \
    const int64_t fired = fault::fired(point);                                            \
    fault::disarm_all();                                                                  \
    for (int i = 0; i < 4; ++i) {                                                         \
      const ChatStream s = parse_chat_stream(got[size_t(i)]);                             \
      EXPECT_EQ(s.status, 200) << i;                                                      \
      EXPECT_TRUE(s.events_only) << "a non-event in the stream: " << got[size_t(i)].body; \
      EXPECT_TRUE(s.done) << i;                                                           \
      if (i == 2) {                                                                       \
        ASSERT_TRUE(s.error.is_object()) << got[2].body;                                  \
        EXPECT_EQ(s.error["type"], "server_error");                                       \
        EXPECT_NE(s.error["message"].get<std::string>().find(point), std::string::npos)   \
            << s.error;                                                                   \
        EXPECT_EQ(s.finish_reason, "");                                                   \
        /* the error event is the last event before [DONE] */                             \
        EXPECT_NE(got[2].body.find("}}\n\ndata: [DONE]\n\n"), std::string::npos);         \
      } else {                                                                            \
        EXPECT_TRUE(s.error.is_null()) << s.error;                                        \
        EXPECT_EQ(s.finish_reason, "length");                                             \
        expect_same_tokens(s, ref[size_t(i)],                                             \
                           std::string(point) + " request " + std::to_string(i));         \
      }                                                                                   \
    }                                                                                     \
    EXPECT_GE(fired, 1);                                                                  \
    expect_healthy_after(errors_before);                                                  \
  }

STREAMED_FAULT_TEST(ForwardPass, "model.forward")
STREAMED_FAULT_TEST(EngineStep, "engine.step")
STREAMED_FAULT_TEST(PageAllocation, "kv.alloc")
STREAMED_FAULT_TEST(ServerStreamAfterItBegan, "server.stream")

// Before streaming starts, a failed request is an HTTP 500 with an OpenAI-style JSON body.
TEST_F(ServerFaults, NonStreamedFailureIsA500Json) {
  const auto& ref = reference();
  const double errors_before = srv_->metric("fireflyer_server_errors_total");
  for (const char* point : {"model.forward", "kv.alloc", "engine.step"}) {
    fault::arm(point, {"victim", -1});
    const std::vector<HttpResult> got = run_batch(/*stream=*/false);
    fault::disarm_all();
    for (int i = 0; i < 4; ++i) {
      const HttpResult& r = got[size_t(i)];
      const json j = json::parse(r.body);
      if (i == 2) {
        EXPECT_EQ(r.status, 500) << point << ": " << r.body;
        EXPECT_EQ(r.headers.at("content-type"), "application/json");
        EXPECT_EQ(j["error"]["type"], "server_error");
        EXPECT_NE(j["error"]["message"].get<std::string>().find(point), std::string::npos);
      } else {
        EXPECT_EQ(r.status, 200) << point << ": " << r.body;
        EXPECT_EQ(j["choices"][0]["message"]["content"], ref[size_t(i)].text)
            << point << " request " << i;
      }
    }
  }
  expect_healthy_after(errors_before);
}

// A fault the engine absorbs (once, for whichever request): everyone completes.
TEST_F(ServerFaults, TransientForwardFaultFailsNobody) {
  const auto& ref = reference();
  fault::arm("model.forward", {"", 1});
  const std::vector<HttpResult> got = run_batch(/*stream=*/true);
  EXPECT_EQ(fault::fired("model.forward"), 1);
  for (int i = 0; i < 4; ++i) {
    const ChatStream s = parse_chat_stream(got[size_t(i)]);
    EXPECT_TRUE(s.error.is_null()) << s.error;
    expect_same_tokens(s, ref[size_t(i)], "request " + std::to_string(i));
  }
  EXPECT_EQ(srv_->wait_pages_released(), 0);
}

}  // namespace
}  // namespace ff::server::testing
