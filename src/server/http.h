// A small HTTP/1.1 server and client over POSIX sockets: what the OpenAI API needs and no more.
//
// Server: one accept thread hands connections to a fixed pool of worker threads. One request
// per connection (every response says `Connection: close`), bodies by Content-Length (no chunked
// request bodies), at most kMaxHeaderBytes of headers and kMaxBodyBytes of body. A response is
// either whole (Content-Length) or a stream whose body ends when the connection closes, which is
// how Server-Sent Events are sent. A handler learns that its client went away from a failed write
// or from peer_closed(), which polls the socket for a hang-up without reading.
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

 private:
  bool send_all(std::string_view data);
  int fd_;
  bool failed_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpConnection&)>;

class HttpServer {
 public:
  static constexpr size_t kMaxHeaderBytes = 64 << 10;
  static constexpr size_t kMaxBodyBytes = 16 << 20;

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
