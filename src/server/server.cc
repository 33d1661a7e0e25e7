#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "server/http.h"
#include "server/openai.h"

namespace ff::server {

namespace {

std::string sse(const json& j) {
  return "data: " + dump(j) + "\n\n";
}

// X-Request-Id values taken as a request's id: short and printable, so they can name it in logs.
bool usable_request_id(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c > 32 && c < 127; });
}

}  // namespace

// Server-wide counters, shared with the requests in flight (which may outlive a stopped Server).
struct Counters {
  std::atomic<int64_t> rejected{0};       // HTTP 4xx
  std::atomic<int64_t> disconnects{0};    // clients that left before their response ended
  std::atomic<int64_t> server_errors{0};  // requests answered with a 5xx or an error event
};

class ActiveRequest;

// The generation requests in flight; each holds itself here until its response has ended.
struct Registry {
  std::mutex mu;
  std::unordered_map<const ActiveRequest*, std::shared_ptr<ActiveRequest>> active;

  void add(std::shared_ptr<ActiveRequest> r) {
    std::lock_guard<std::mutex> lock(mu);
    const ActiveRequest* key = r.get();
    active.emplace(key, std::move(r));
  }
  void remove(const ActiveRequest* r) {
    std::shared_ptr<ActiveRequest> last;  // destroyed outside the lock
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = active.find(r); it != active.end()) {
      last = std::move(it->second);
      active.erase(it);
    }
  }
  std::vector<std::shared_ptr<ActiveRequest>> take_all() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::shared_ptr<ActiveRequest>> all;
    for (auto& [k, v] : active) all.push_back(std::move(v));
    active.clear();
    return all;
  }
};

// One completion request from submission to the last byte of its response. The engine's output
// callback and the connection's close callback post pump() to the HTTP task pool; pump() forwards
// whatever the engine produced. The request's stream is cancelled when this object is destroyed,
// so every way out (response ended, client gone, server stopped, an exception) frees its pages.
class ActiveRequest : public std::enable_shared_from_this<ActiveRequest> {
 public:
  ActiveRequest(ApiRequest req, Tokenizer tokenizer, const std::string& model_name,
                std::string response_id, std::shared_ptr<HttpResponse> res,
                std::shared_ptr<engine::Stream> stream, std::shared_ptr<TaskPool> tasks,
                std::shared_ptr<Counters> counters, std::weak_ptr<Registry> registry)
      : req_(std::move(req)),
        tokenizer_(std::move(tokenizer)),
        rb_(req_, tokenizer_, model_name, std::move(response_id)),
        res_(std::move(res)),
        stream_(std::move(stream)),
        tasks_(std::move(tasks)),
        counters_(std::move(counters)),
        registry_(std::move(registry)) {}

  void start() {
    std::weak_ptr<ActiveRequest> weak = weak_from_this();
    res_->on_close([weak] {
      // On the HTTP loop's thread: stop the engine's work at once, account for it in a task.
      if (auto self = weak.lock()) {
        self->stream_->cancel();
        self->client_gone_.store(true);
        self->schedule_pump();
      }
    });
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (req_.stream) {
        if (!res_->begin_stream(200, "text/event-stream") ||
            (req_.endpoint == Endpoint::Chat && !res_->write(sse(rb_.chunk("", {}))))) {
          gone();
          return;
        }
      }
    }
    stream_->on_output([weak] {
      if (auto self = weak.lock()) self->schedule_pump();
    });
  }

  void pump() {
    std::lock_guard<std::mutex> lock(mu_);
    pump_queued_.store(false);
    if (done_) return;
    if (client_gone_.load() || res_->closed()) {
      gone();
      return;
    }
    try {
      for (;;) {
        engine::StreamOutput out = stream_->take(std::chrono::milliseconds(0));
        if (out.text.empty() && out.logprobs.empty() && !out.finished) return;
        if (req_.stream)
          forward_text(out);
        else
          collect_text(out);
        if (out.finished) {
          if (out.finish == FinishReason::Error || out.finish == FinishReason::Cancelled)
            fail(out.finish == FinishReason::Error ? out.error : "the request was cancelled");
          else
            send_final(out);
          return;
        }
        if (res_->closed()) {
          gone();
          return;
        }
      }
    } catch (const std::exception& e) {
      fail(std::string("internal error: ") + e.what());
    }
  }

 private:
  // Posts pump() to the task pool unless one is queued and not yet started (it will see
  // whatever arrived or changed meanwhile).
  void schedule_pump() {
    if (pump_queued_.exchange(true)) return;
    tasks_->post([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->pump();
    });
  }

  void forward_text(const engine::StreamOutput& out) {
    fault::point("server.stream", stream_->id());
    if (!out.text.empty() || !out.logprobs.empty())
      res_->write(sse(rb_.chunk(out.text, out.logprobs)));
  }

  void collect_text(const engine::StreamOutput& out) {
    text_ += out.text;
    logprobs_.insert(logprobs_.end(), out.logprobs.begin(), out.logprobs.end());
  }

  // A completed request: the finish chunk (and usage) then [DONE], or the whole response.
  void send_final(const engine::StreamOutput& out) {
    if (req_.stream) {
      res_->write(sse(rb_.finish_chunk(out)));
      if (req_.include_usage) res_->write(sse(rb_.usage_chunk(out)));
      res_->write("data: [DONE]\n\n");
      res_->end();
    } else {
      res_->respond(200, "application/json", dump(rb_.full(text_, logprobs_, out)));
    }
    complete();
  }

  // The request failed: an HTTP 500 before anything was sent, else an `error` event and [DONE]
  // (never a status line inside an event stream).
  void fail(const std::string& message) {
    counters_->server_errors.fetch_add(1);
    const json body = error_body({500, message, "", "", "server_error"});
    if (res_->started()) {
      res_->write(sse(body));
      res_->write("data: [DONE]\n\n");
      res_->end();
    } else {
      res_->respond(500, "application/json", dump(body));
    }
    complete();
  }

  void gone() {
    if (done_) return;
    counters_->disconnects.fetch_add(1);
    complete();
  }

  void complete() {
    done_ = true;
    stream_->cancel();  // harmless when it finished; frees the pages when it did not
    if (auto registry = registry_.lock()) registry->remove(this);
  }

  const ApiRequest req_;
  const Tokenizer tokenizer_;  // a handle on shared tables: valid however long this lives
  ResponseBuilder rb_;
  const std::shared_ptr<HttpResponse> res_;
  engine::CancelOnExit stream_;
  const std::shared_ptr<TaskPool> tasks_;
  const std::shared_ptr<Counters> counters_;
  const std::weak_ptr<Registry> registry_;
  std::mutex mu_;  // one pump at a time
  bool done_ = false;
  std::string text_;  // non-streamed: the text so far
  std::vector<LogprobEntry> logprobs_;
  std::atomic<bool> pump_queued_{false};
  std::atomic<bool> client_gone_{false};
};

struct Server::Impl {
  Impl(engine::Engine& e, const ServerOptions& o) : engine(e), options(o) {}

  void handle(const HttpRequest& req, const std::shared_ptr<HttpResponse>& res);
  void generate(Endpoint endpoint, const HttpRequest& req,
                const std::shared_ptr<HttpResponse>& res);
  void reply_error(HttpResponse& res, const ApiError& e) {
    if (e.status >= 400 && e.status < 500) counters->rejected.fetch_add(1);
    if (e.status >= 500) counters->server_errors.fetch_add(1);
    res.respond(e.status, "application/json", dump(error_body(e)));
  }
  std::string metrics() const;

  engine::Engine& engine;
  ServerOptions options;
  std::unique_ptr<HttpServer> http;
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
  std::shared_ptr<Registry> registry = std::make_shared<Registry>();
};

void Server::Impl::handle(const HttpRequest& req, const std::shared_ptr<HttpResponse>& res) {
  const auto want = [&](const char* method) {
    if (req.method == method) return true;
    reply_error(*res,
                {405, fmt::format("{} {} is not allowed; use {}", req.method, req.path, method), "",
                 "method_not_allowed"});
    return false;
  };
  try {
    if (req.path == "/v1/completions" || req.path == "/v1/chat/completions") {
      if (want("POST"))
        generate(req.path == "/v1/completions" ? Endpoint::Completions : Endpoint::Chat, req, res);
    } else if (req.path == "/tokenize") {
      if (want("POST"))
        res->respond(200, "application/json",
                     dump(tokenize(req.body, engine.tokenizer(), options.model_name,
                                   engine.context_length())));
    } else if (req.path == "/detokenize") {
      if (want("POST"))
        res->respond(200, "application/json",
                     dump(detokenize(req.body, engine.tokenizer(), options.model_name)));
    } else if (req.path == "/v1/models") {
      if (!want("GET")) return;
      json model = {{"id", options.model_name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "fireflyer"},
                    {"max_model_len", engine.context_length()}};
      res->respond(200, "application/json",
                   dump({{"object", "list"}, {"data", json::array({model})}}));
    } else if (req.path == "/health") {
      if (want("GET")) res->respond(200, "application/json", "{\"status\":\"ok\"}");
    } else if (req.path == "/metrics") {
      if (want("GET")) res->respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics());
    } else if (req.path == "/" || req.path == "/index.html") {
      if (want("GET")) res->respond(200, "text/html; charset=utf-8", chat_page_html());
    } else {
      reply_error(*res, {404, "no route " + req.path, "", "not_found"});
    }
  } catch (const ApiError& e) {
    reply_error(*res, e);
  } catch (const Error& e) {  // bad input the engine or the tokenizer refused
    reply_error(*res, {400, e.what(), "", "", "invalid_request_error"});
  } catch (const std::exception& e) {  // a bug or an injected fault: not the client's doing
    reply_error(*res, {500, std::string("internal error: ") + e.what(), "", "", "server_error"});
  }
}

void Server::Impl::generate(Endpoint endpoint, const HttpRequest& request,
                            const std::shared_ptr<HttpResponse>& res) {
  ApiRequest req = parse_request(endpoint, request.body, options.model_name, engine.tokenizer(),
                                 engine.context_length());
  // The engine knows the request by the client's X-Request-Id, else by the response id.
  std::string response_id = new_response_id(endpoint);
  std::string request_id = response_id;
  if (auto it = request.headers.find("x-request-id");
      it != request.headers.end() && usable_request_id(it->second))
    request_id = it->second;
  std::shared_ptr<engine::Stream> stream =
      engine.submit(std::move(req.prompt), req.params, std::move(request_id));
  auto active = std::make_shared<ActiveRequest>(
      std::move(req), engine.tokenizer(), options.model_name, std::move(response_id), res,
      std::move(stream), http->tasks(), counters, registry);
  registry->add(active);
  active->start();
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
  metric("requests_rejected_total", "counter", "Requests answered with an HTTP 4xx.",
         double(counters->rejected.load()));
  metric("server_errors_total", "counter",
         "Requests answered with an HTTP 5xx or an SSE error event.",
         double(counters->server_errors.load()));
  metric("client_disconnects_total", "counter", "Requests whose client went away.",
         double(counters->disconnects.load()));
  metric("invariant_violations_total", "counter",
         "Internal consistency checks that failed (bugs; see the log).",
         double(s.invariant_violations));
  if (http) {
    const HttpStats h = http->stats();
    metric("http_connections_open", "gauge", "HTTP connections open.", double(h.open));
    metric("http_connections_max", "gauge", "HTTP connections accepted at once.",
           double(http->max_connections()));
    metric("http_connections_total", "counter", "HTTP connections accepted.", double(h.accepted));
    metric("http_connections_rejected_total", "counter",
           "HTTP connections refused with 503 (past the connection limit).", double(h.rejected));
    metric("http_timeouts_total", "counter",
           "HTTP connections closed by a header, body, keep-alive or write timeout.",
           double(h.timed_out));
  }
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
  HttpOptions ho;
  ho.handler_threads = options_.http_threads;
  ho.max_connections = options_.max_connections;
  ho.header_timeout_s = options_.header_timeout_s;
  ho.body_timeout_s = options_.body_timeout_s;
  ho.keep_alive_s = options_.keep_alive_s;
  impl_->http = std::make_unique<HttpServer>(
      [impl = impl_.get()](const HttpRequest& r, const std::shared_ptr<HttpResponse>& res) {
        impl->handle(r, res);
      },
      ho);
  impl_->http->listen(options_.host, options_.port);
  impl_->http->start();
}

// Closing the connections cancels their requests (on_close); what is left in the registry (a
// request whose handler was still running) is cancelled as its last reference goes.
void Server::stop() {
  if (impl_->http) impl_->http->stop();
  impl_->registry->take_all();
}

int Server::port() const {
  return impl_->http ? impl_->http->port() : 0;
}

int Server::max_connections() const {
  return impl_->http ? impl_->http->max_connections() : 0;
}

std::string Server::metrics_text() const {
  return impl_->metrics();
}

}  // namespace ff::server
