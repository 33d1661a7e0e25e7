// HTTP/1.1 over POSIX sockets: an event-driven server and a blocking client, what the OpenAI API
// needs and no more (private to the server module; see docs/server.md, "HTTP front end").
//
// Server: one event-loop thread (epoll, level-triggered) owns every socket. It accepts, reads and
// parses requests, writes responses, and enforces the timeouts, so an idle or slow connection
// costs a few hundred bytes of memory and no thread. A parsed request goes to a handler on a small
// TaskPool; the handler answers through an HttpResponse, from any thread and at any later time
// (streaming responses are fed as the engine produces output). Responses are queued per
// connection and written by the loop.
//
//   Connection life:  accepted -> [request headers -> body -> handler -> response]* -> closed
//   Timeouts (HttpOptions): a request's headers must arrive within header_timeout_s of the
//   connection opening (or of its first byte on a kept connection), its body within
//   body_timeout_s of the headers; a kept connection may idle keep_alive_s between requests; a
//   response that makes no write progress for write_timeout_s is dropped. An expired request
//   gets 408 and the connection closes; an idle kept connection closes silently.
//   Limits: max_header_bytes (431), max_body_bytes (413), Content-Length bodies only (chunked
//   bodies: 400), max_connections open at once: a connection past it gets 503 and is closed.
//   Keep-alive: a whole response keeps the connection (HTTP/1.1 unless `Connection: close`;
//   HTTP/1.0 only with `Connection: keep-alive`); pipelined requests are answered in order, one
//   at a time. A streamed response ends with the connection.
//   Hang-up: a peer that closes or resets the connection while its request is being answered is
//   seen at once (EPOLLRDHUP); the response's on_close callback runs and later writes do nothing.
//   After a final response the server shuts its side and drains the socket briefly before
//   closing, so the client reads the whole response even if it sent more.
//
// Client: blocking, one request per connection, the body handed out as it arrives (for SSE).
// The tests and bench/serve use it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ff::server {

struct HttpRequest {
  std::string method;
  std::string version;                         // "HTTP/1.1", "HTTP/1.0"
  std::string path;                            // without the query
  std::string query;                           // after '?', undecoded
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// A fixed set of threads running posted tasks in order of posting. Shared (shared_ptr) by whoever
// posts, so work can be posted from anywhere at any time; after shutdown() a post does nothing.
class TaskPool {
 public:
  explicit TaskPool(int threads);
  ~TaskPool();
  void post(std::function<void()> task);
  // Runs what is queued, then joins the threads. Tasks must not block for long.
  void shutdown();

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

namespace detail {
struct Connection;
}

// The answer to one request. Thread-safe; every call is cheap (it queues bytes for the loop).
// A response is either whole (respond) or a stream (begin_stream, write..., end). Calls after the
// response ended or the connection closed do nothing and return false.
class HttpResponse {
 public:
  explicit HttpResponse(std::shared_ptr<detail::Connection> conn);
  // A response never started gets a 500; a stream never ended is ended.
  ~HttpResponse();
  HttpResponse(const HttpResponse&) = delete;
  HttpResponse& operator=(const HttpResponse&) = delete;

  bool respond(int status, std::string_view content_type, std::string_view body);
  bool begin_stream(int status, std::string_view content_type);
  bool write(std::string_view data);
  void end();  // ends a stream; the connection closes once its bytes are sent
  bool started() const;
  // True once the connection is gone (peer hang-up, reset, write failure or timeout, server stop).
  bool closed() const;
  // Runs `fn` once, on the loop's thread, when the connection closes before the response has
  // been sent; at once (on the caller's thread) if it already has. `fn` must be quick.
  void on_close(std::function<void()> fn);

 private:
  std::shared_ptr<detail::Connection> conn_;
  uint64_t seq_ = 0;  // the connection's request this answers
};

using HttpHandler =
    std::function<void(const HttpRequest&, const std::shared_ptr<HttpResponse>& response)>;

struct HttpOptions {
  int handler_threads = 4;  // TaskPool threads running handlers and deferred work
  int max_connections = 0;  // open at once; 0: from the open-file limit (see HttpServer)
  double header_timeout_s = 10;
  double body_timeout_s = 30;
  double keep_alive_s = 5;
  double write_timeout_s = 30;
  size_t max_header_bytes = size_t(64) << 10;
  size_t max_body_bytes = size_t(16) << 20;
  size_t max_queued_output = size_t(8)
                             << 20;  // per connection; a client this far behind is dropped
};

struct HttpStats {
  int64_t open = 0;       // connections open now
  int64_t accepted = 0;   // connections accepted, ever
  int64_t rejected = 0;   // connections answered 503 (past max_connections)
  int64_t timed_out = 0;  // connections closed by a timeout
  int64_t requests = 0;   // requests handed to the handler
};

class HttpServer {
 public:
  explicit HttpServer(HttpHandler handler, HttpOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; port 0 picks a free one. Throws ff::Error naming the address.
  void listen(const std::string& host, int port);
  int port() const { return port_; }
  void start();
  // Stops accepting, closes every connection (their on_close callbacks run), finishes the queued
  // tasks and joins the threads. Idempotent.
  void stop();

  // The pool the handlers run on, for work a handler defers (posting after stop() does nothing).
  const std::shared_ptr<TaskPool>& tasks() const { return tasks_; }
  // max_connections as configured, or derived from the open-file limit at listen().
  int max_connections() const { return max_connections_; }
  HttpStats stats() const;

  struct Loop;

 private:
  HttpHandler handler_;
  HttpOptions options_;
  int port_ = 0;
  int max_connections_ = 0;
  std::shared_ptr<TaskPool> tasks_;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  bool started_ = false;
};

struct HttpResult {
  int status = 0;  // 0: no response (connection failed)
  std::map<std::string, std::string> headers;
  std::string body;
  std::string error;
};

// Sends one request to 127.0.0.1-style `host`:`port`. on_body (optional) gets each piece of the
// body as it arrives and may return false to hang up early. timeout_s bounds each socket read.
// `headers` are extra request header lines ("Name: value").
HttpResult http_request(const std::string& host, int port, const std::string& method,
                        const std::string& path, const std::string& body = {},
                        const std::function<bool(std::string_view)>& on_body = {},
                        double timeout_s = 120, const std::vector<std::string>& headers = {});

// The reason phrase of a status code ("Not Found"), "Status" for unknown ones.
const char* status_text(int status);

}  // namespace ff::server
