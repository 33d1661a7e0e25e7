// fireflyer server: the OpenAI-compatible HTTP API over an Engine (the module's public header).
//
//   POST /v1/completions, POST /v1/chat/completions   streamed (SSE, ending `data: [DONE]`) or not
//   GET  /v1/models                                   the one served model
//   POST /tokenize, POST /detokenize                  token ids of a prompt or conversation, text
//   of ids GET  /health                                      200 {"status": "ok"} GET  /metrics
//   Prometheus text (see docs/server.md) GET  /                                            a chat
//   page that streams replies
//
// An event-driven HTTP front end (server/http.h) holds any number of connections; a small pool of
// threads parses requests, submits them to the engine and forwards the engine's output as it
// arrives (the engine wakes the request, nothing polls). A client that goes away cancels its
// request at once, which frees its KV pages; so does any other way a request's handling ends
// early (its stream is cancelled when the request's state is destroyed). A request the engine
// fails gets an HTTP 500 JSON error, or, once its SSE stream has begun, an `error` event and
// `data: [DONE]`; nothing but events is written after a stream begins. The X-Request-Id header
// names a request (in the engine, its errors and its fault-injection points).
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "engine/engine.h"

namespace ff::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see Server::port())
  std::string model_name = "default";
  int http_threads = 4;          // threads running handlers and forwarding output
  int max_connections = 0;       // open at once; 0: from the open-file limit
  double header_timeout_s = 10;  // a request's headers must arrive within this
  double body_timeout_s = 30;    // and its body within this after them
  double keep_alive_s = 5;       // an idle kept connection closes after this
};

class HttpServer;

class Server {
 public:
  Server(engine::Engine& engine, ServerOptions options);
  ~Server();
  // Binds and starts serving; throws ff::Error when the address cannot be used.
  void start();
  void stop();
  int port() const;
  const ServerOptions& options() const { return options_; }

  // The Prometheus text of /metrics.
  std::string metrics_text() const;
  // Connections the HTTP front end accepts at once (after start()).
  int max_connections() const;

  struct Impl;

 private:
  engine::Engine& engine_;
  ServerOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Raises this process's open-file soft limit to its hard limit (an idle connection costs a
// descriptor); returns the soft limit it got. `fireflyer serve` calls it at start.
int64_t raise_open_file_limit();

// The HTML of the chat page served at `/`.
const std::string& chat_page_html();

}  // namespace ff::server
