#include "server/server.h"

#include <chrono>

#include "server/http.h"
#include "server/openai.h"

namespace ff::server {

namespace {

constexpr auto kPoll = std::chrono::milliseconds(50);

std::string sse(const json& j) {
  return "data: " + dump(j) + "\n\n";
}

}  // namespace

struct Server::Impl {
  Impl(engine::Engine& e, const ServerOptions& o) : engine(e), options(o) {}

  void handle(const HttpRequest& req, HttpConnection& conn);
  void generate(Endpoint endpoint, const HttpRequest& req, HttpConnection& conn);
  void reply_error(HttpConnection& conn, const ApiError& e) {
    if (e.status == 400) rejected.fetch_add(1);
    conn.respond(e.status, "application/json", dump(error_body(e)));
  }
  std::string metrics() const;

  engine::Engine& engine;
  ServerOptions options;
  std::unique_ptr<HttpServer> http;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> rejected{0};
  std::atomic<int64_t> disconnects{0};
  std::atomic<int64_t> http_requests{0};
};

void Server::Impl::handle(const HttpRequest& req, HttpConnection& conn) {
  http_requests.fetch_add(1);
  const auto want = [&](const char* method) {
    if (req.method == method) return true;
    conn.respond(
        405, "application/json",
        dump(error_body({405,
                         fmt::format("{} {} is not allowed; use {}", req.method, req.path, method),
                         "", "method_not_allowed"})));
    return false;
  };
  if (req.path == "/v1/completions" || req.path == "/v1/chat/completions") {
    if (want("POST"))
      generate(req.path == "/v1/completions" ? Endpoint::Completions : Endpoint::Chat, req, conn);
  } else if (req.path == "/v1/models") {
    if (!want("GET")) return;
    json model = {{"id", options.model_name},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "fireflyer"},
                  {"max_model_len", engine.context_length()}};
    conn.respond(200, "application/json",
                 dump({{"object", "list"}, {"data", json::array({model})}}));
  } else if (req.path == "/health") {
    if (want("GET")) conn.respond(200, "application/json", "{\"status\":\"ok\"}");
  } else if (req.path == "/metrics") {
    if (want("GET")) conn.respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics());
  } else if (req.path == "/" || req.path == "/index.html") {
    if (want("GET")) conn.respond(200, "text/html; charset=utf-8", chat_page_html());
  } else {
    conn.respond(404, "application/json",
                 dump(error_body({404, "no route " + req.path, "", "not_found"})));
  }
}

void Server::Impl::generate(Endpoint endpoint, const HttpRequest& http, HttpConnection& conn) {
  ApiRequest req;
  std::shared_ptr<engine::Stream> stream;
  try {
    req = parse_request(endpoint, http.body, options.model_name, engine.tokenizer(),
                        engine.context_length());
    stream = engine.submit(req.prompt, req.params);
  } catch (const ApiError& e) {
    reply_error(conn, e);
    return;
  } catch (const Error& e) {
    reply_error(conn, {400, e.what(), "", "", "invalid_request_error"});
    return;
  }
  ResponseBuilder rb(req, engine.tokenizer(), options.model_name);
  const auto gone = [&] {
    stream->cancel();
    disconnects.fetch_add(1);
  };
  if (req.stream) {
    if (!conn.begin_stream(200, "text/event-stream") ||
        (endpoint == Endpoint::Chat && !conn.write(sse(rb.chunk("", {}))))) {
      gone();
      return;
    }
    for (;;) {
      engine::StreamOutput out = stream->take(kPoll);
      if (stopping || conn.peer_closed()) {
        gone();
        return;
      }
      if ((!out.text.empty() || !out.logprobs.empty()) &&
          !conn.write(sse(rb.chunk(out.text, out.logprobs)))) {
        gone();
        return;
      }
      if (!out.finished) continue;
      if (!out.error.empty()) {
        conn.write(sse(error_body({500, out.error, "", "", "server_error"})));
      } else {
        conn.write(sse(rb.finish_chunk(out)));
        if (req.include_usage) conn.write(sse(rb.usage_chunk(out)));
      }
      conn.write("data: [DONE]\n\n");
      return;
    }
  }
  std::string text;
  std::vector<LogprobEntry> logprobs;
  for (;;) {
    engine::StreamOutput out = stream->take(kPoll);
    if (stopping || conn.peer_closed()) {
      gone();
      return;
    }
    text += out.text;
    logprobs.insert(logprobs.end(), out.logprobs.begin(), out.logprobs.end());
    if (!out.finished) continue;
    if (!out.error.empty()) {
      conn.respond(500, "application/json",
                   dump(error_body({500, out.error, "", "", "server_error"})));
    } else {
      conn.respond(200, "application/json", dump(rb.full(text, logprobs, out)));
    }
    return;
  }
}

std::string Server::Impl::metrics() const {
  const engine::EngineStats s = engine.stats();
  const std::string label = "model_name=\"" + options.model_name + "\"";
  std::string o;
  const auto metric = [&](const char* name, const char* type, const char* help, double value,
                          const std::string& extra = {}) {
    o += fmt::format("# HELP fireflyer_{} {}\n# TYPE fireflyer_{} {}\n", name, help, name, type);
    o += fmt::format("fireflyer_{}{{{}{}}} {}\n", name, label, extra, value);
  };
  o += "# HELP fireflyer_requests_total Requests that left the engine, by outcome.\n"
       "# TYPE fireflyer_requests_total counter\n";
  o += fmt::format("fireflyer_requests_total{{{},status=\"finished\"}} {}\n", label,
                   s.requests_finished);
  o += fmt::format("fireflyer_requests_total{{{},status=\"cancelled\"}} {}\n", label,
                   s.requests_cancelled);
  o += fmt::format("fireflyer_requests_total{{{},status=\"failed\"}} {}\n", label,
                   s.requests_failed);
  metric("requests_rejected_total", "counter", "Requests answered with HTTP 400.",
         double(rejected.load()));
  metric("client_disconnects_total", "counter", "Requests whose client went away.",
         double(disconnects.load()));
  metric("num_requests_running", "gauge", "Requests in the running batch.", double(s.running));
  metric("num_requests_waiting", "gauge", "Requests waiting for admission.", double(s.waiting));
  metric("prompt_tokens_total", "counter", "Prompt tokens of requests that left the engine.",
         double(s.prompt_tokens));
  metric("generation_tokens_total", "counter", "Generated tokens.", double(s.generation_tokens));
  metric("preemptions_total", "counter", "Requests preempted because the KV cache was full.",
         double(s.preemptions));
  metric("engine_steps_total", "counter", "Engine steps (forward passes).", double(s.steps));
  metric("kv_pages_total", "gauge", "KV cache pages of 64 tokens.", double(s.pages_total));
  metric("kv_pages_used", "gauge", "KV cache pages held by requests.", double(s.pages_used));
  metric("kv_pages_free", "gauge", "KV cache pages free or cached-idle (evictable).",
         double(s.pages_free));
  metric("kv_pages_cached_idle", "gauge", "KV cache pages held only by the prefix cache.",
         double(s.pages_cached_idle));
  metric("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
         double(s.prefix_queried_tokens));
  metric("prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
         double(s.prefix_hit_tokens));
  metric("prefix_cache_hit_rate", "gauge", "prefix_cache_hits_total / prefix_cache_queries_total.",
         s.prefix_queried_tokens > 0 ? double(s.prefix_hit_tokens) / double(s.prefix_queried_tokens)
                                     : 0.0);
  const auto histogram = [&](const char* name, const char* help, const engine::Histogram& h) {
    o += fmt::format("# HELP fireflyer_{} {}\n# TYPE fireflyer_{} histogram\n", name, help, name);
    const auto counts = h.counts();
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += counts[i];
      o += fmt::format("fireflyer_{}_bucket{{{},le=\"{}\"}} {}\n", name, label, h.bounds()[i],
                       cumulative);
    }
    cumulative += counts.back();
    o += fmt::format("fireflyer_{}_bucket{{{},le=\"+Inf\"}} {}\n", name, label, cumulative);
    o += fmt::format("fireflyer_{}_sum{{{}}} {}\n", name, label, h.sum());
    o += fmt::format("fireflyer_{}_count{{{}}} {}\n", name, label, h.count());
  };
  histogram("time_to_first_token_seconds", "Arrival to first generated token.",
            engine.ttft_seconds());
  histogram("inter_token_latency_seconds", "Time between consecutive generated tokens.",
            engine.itl_seconds());
  histogram("e2e_request_latency_seconds", "Arrival to last token of finished requests.",
            engine.e2e_seconds());
  return o;
}

Server::Server(engine::Engine& engine, ServerOptions options)
    : engine_(engine),
      options_(std::move(options)),
      impl_(std::make_unique<Impl>(engine, options_)) {}

Server::~Server() {
  stop();
}

void Server::start() {
  impl_->http = std::make_unique<HttpServer>(
      [this](const HttpRequest& r, HttpConnection& c) { impl_->handle(r, c); },
      options_.http_workers);
  impl_->http->listen(options_.host, options_.port);
  impl_->http->start();
}

void Server::stop() {
  impl_->stopping = true;
  if (impl_->http) impl_->http->stop();
}

int Server::port() const {
  return impl_->http ? impl_->http->port() : 0;
}

std::string Server::metrics_text() const {
  return impl_->metrics();
}

}  // namespace ff::server
