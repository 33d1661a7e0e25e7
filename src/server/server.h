// fireflyer server: the OpenAI-compatible HTTP API over an Engine (the module's public header).
//
//   POST /v1/completions, POST /v1/chat/completions   streamed (SSE, ending `data: [DONE]`) or not
//   GET  /v1/models                                   the one served model
//   GET  /health                                      200 {"status": "ok"}
//   GET  /metrics                                     Prometheus text (see docs/server.md)
//   GET  /                                            a chat page that streams replies
//
// Each connection is served by one of a fixed pool of HTTP worker threads, which submits its
// request to the engine and forwards the engine's output. A client that goes away (a failed
// write, or a hang-up seen while waiting) cancels its request, which frees its KV pages.
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
  int http_workers = 128;  // concurrent connections served
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

  struct Impl;

 private:
  engine::Engine& engine_;
  ServerOptions options_;
  std::unique_ptr<Impl> impl_;
};

// The HTML of the chat page served at `/`.
const std::string& chat_page_html();

}  // namespace ff::server
