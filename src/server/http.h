// A small HTTP/1.1 server and client over POSIX sockets: what the OpenAI API needs and no more.
//
// Server: one accept thread hands connections to a fixed pool of worker threads. Bodies by
// Content-Length (chunked request bodies are refused with 400), at most kMaxHeaderBytes of
// headers and kMaxBodyBytes of body. A response is either whole (Content-Length) or a stream
// whose body ends when the connection closes, which is how Server-Sent Events are sent.
// Keep-alive: after a whole response the connection serves the client's next request (HTTP/1.1
// unless it sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`; pipelined
// requests are answered in order). An idle kept connection holds its worker for at most
// kKeepAliveSeconds, and is closed at once when another connection is waiting for a worker.
// Streams always close the connection. A handler learns that its client went away from a failed
// write or from peer_closed(), which polls the socket for a hang-up without reading.
//
// Client: blocking, one request per connection, the body handed out as it arrives (for SSE).
// The tests and bench/serve use it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
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

class HttpConnection {
 public:
  explicit HttpConnection(int fd) : fd_(fd) {}
  // A whole response. Returns false when the client is gone.
  bool respond(int status, std::string_view content_type, std::string_view body);
  // Starts a streamed response (body until close); then write() pieces of it.
  bool begin_stream(int status, std::string_view content_type);
  bool write(std::string_view data);
  // True when the peer has closed or reset the connection.
  bool peer_closed() const;
  bool failed() const { return failed_; }
  // Whether respond() offers to keep the connection (the server decides per request).
  void set_keep_alive(bool keep) { keep_alive_ = keep; }
  // True when the connection can serve another request: a whole response was sent and kept.
  bool reusable() const { return keep_alive_ && responded_ && !streamed_ && !failed_; }

 private:
  bool send_all(std::string_view data);
  int fd_;
  bool failed_ = false;
  bool keep_alive_ = false, responded_ = false, streamed_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpConnection&)>;

class HttpServer {
 public:
  static constexpr size_t kMaxHeaderBytes = 64 << 10;
  static constexpr size_t kMaxBodyBytes = 16 << 20;
  static constexpr int kKeepAliveSeconds = 5;

  HttpServer(HttpHandler handler, int num_workers);
  ~HttpServer();
  // Binds and listens; port 0 picks a free one. Throws ff::Error naming the address.
  void listen(const std::string& host, int port);
  int port() const { return port_; }
  void start();
  // Stops accepting, waits for the workers (handlers must return on their own).
  void stop();

 private:
  void accept_loop();
  void worker_loop();
  void serve(int fd);
  bool read_request(int fd, std::string& buf, HttpRequest& req, HttpConnection& conn);
  bool await_next_request(int fd);

  HttpHandler handler_;
  int num_workers_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> pending_;
};

struct HttpResult {
  int status = 0;  // 0: no response (connection failed)
  std::map<std::string, std::string> headers;
  std::string body;
  std::string error;
};

// Sends one request to 127.0.0.1-style `host`:`port`. on_body (optional) gets each piece of the
// body as it arrives and may return false to hang up early. timeout_s bounds each socket read.
HttpResult http_request(const std::string& host, int port, const std::string& method,
                        const std::string& path, const std::string& body = {},
                        const std::function<bool(std::string_view)>& on_body = {},
                        double timeout_s = 120);

}  // namespace ff::server
