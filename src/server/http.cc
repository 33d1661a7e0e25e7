#include "server/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/core.h"

namespace ff::server {

namespace {

const char* status_text(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

void set_timeouts(int fd, double seconds) {
  timeval tv{};
  tv.tv_sec = time_t(seconds);
  tv.tv_usec = suseconds_t((seconds - double(tv.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// Parses "Name: value" lines after the first line of `head` into `headers`.
void parse_headers(std::string_view head, std::map<std::string, std::string>* headers) {
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    const size_t next = head.find("\r\n", pos + 2);
    std::string_view line =
        head.substr(pos + 2, next == std::string_view::npos ? head.npos : next - pos - 2);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos)
      (*headers)[lower(std::string(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    pos = next;
  }
}

}  // namespace

// ---- HttpConnection ----

bool HttpConnection::send_all(std::string_view data) {
  if (failed_) return false;
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed_ = true;
      return false;
    }
    data.remove_prefix(size_t(n));
  }
  return true;
}

bool HttpConnection::respond(int status, std::string_view content_type, std::string_view body) {
  responded_ = true;
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                     "\r\nContent-Type: " + std::string(content_type) +
                     "\r\nContent-Length: " + std::to_string(body.size()) +
                     (keep_alive_ ? "\r\nConnection: keep-alive\r\nKeep-Alive: timeout=" +
                                        std::to_string(HttpServer::kKeepAliveSeconds)
                                  : std::string("\r\nConnection: close")) +
                     "\r\n\r\n";
  return send_all(head) && send_all(body);
}

bool HttpConnection::begin_stream(int status, std::string_view content_type) {
  streamed_ = true;
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                     "\r\nContent-Type: " + std::string(content_type) +
                     "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
  return send_all(head);
}

bool HttpConnection::write(std::string_view data) {
  return send_all(data);
}

bool HttpConnection::peer_closed() const {
  if (failed_) return true;
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  if (p.revents & POLLIN) {
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
  }
  return false;
}

// ---- HttpServer ----

HttpServer::HttpServer(HttpHandler handler, int num_workers)
    : handler_(std::move(handler)), num_workers_(std::max(1, num_workers)) {}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::listen(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  FF_CHECK(rc == 0, "cannot resolve {}: {}", host, gai_strerror(rc));
  int fd = -1;
  std::string err;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 256) == 0) break;
    err = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  FF_CHECK(fd >= 0, "cannot listen on {}:{}: {}", host, port, err);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                     : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
}

void HttpServer::start() {
  FF_CHECK(listen_fd_ >= 0, "http server: start() before listen()");
  for (int i = 0; i < num_workers_; ++i) workers_.emplace_back([this] { worker_loop(); });
  acceptor_ = std::thread([this] { accept_loop(); });
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  cv_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  for (int fd : pending_) ::close(fd);
  pending_.clear();
}

void HttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back(fd);
    }
    cv_.notify_one();
  }
}

void HttpServer::worker_loop() {
  for (;;) {
    int fd = -1;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;
      fd = pending_.front();
      pending_.pop_front();
    }
    serve(fd);
    ::close(fd);
  }
}

// Reads one request from fd into `req`, starting with the bytes already in `buf` (left over
// from the previous request on this connection) and leaving any bytes past it there. Malformed
// or oversized requests get their error response here; false means: close the connection.
bool HttpServer::read_request(int fd, std::string& buf, HttpRequest& req, HttpConnection& conn) {
  size_t header_end = std::string::npos;
  char chunk[8192];
  while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > kMaxHeaderBytes) {
      conn.respond(413, "text/plain", "headers too large\n");
      return false;
    }
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf.append(chunk, size_t(n));
  }
  const std::string_view head(buf.data(), header_end);
  const std::string_view first = head.substr(0, head.find("\r\n"));
  const size_t sp1 = first.find(' ');
  const size_t sp2 = sp1 == first.npos ? first.npos : first.find(' ', sp1 + 1);
  if (sp2 == first.npos) {
    conn.respond(400, "text/plain", "malformed request line\n");
    return false;
  }
  req.method = std::string(first.substr(0, sp1));
  req.version = std::string(first.substr(sp2 + 1));
  const std::string target(first.substr(sp1 + 1, sp2 - sp1 - 1));
  const size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) req.query = target.substr(q + 1);
  parse_headers(head, &req.headers);
  size_t content_length = 0;
  if (auto it = req.headers.find("content-length"); it != req.headers.end()) {
    try {
      content_length = std::stoul(it->second);
    } catch (...) {
      conn.respond(400, "text/plain", "bad Content-Length\n");
      return false;
    }
  }
  if (req.headers.count("transfer-encoding")) {
    conn.respond(400, "text/plain", "chunked request bodies are not supported\n");
    return false;
  }
  if (content_length > kMaxBodyBytes) {
    conn.respond(413, "text/plain", "body too large\n");
    return false;
  }
  if (auto it = req.headers.find("expect");
      it != req.headers.end() && lower(it->second) == "100-continue")
    conn.write("HTTP/1.1 100 Continue\r\n\r\n");
  buf.erase(0, header_end + 4);
  while (buf.size() < content_length) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf.append(chunk, size_t(n));
  }
  req.body = buf.substr(0, content_length);
  buf.erase(0, content_length);
  return true;
}

// Waits until the next request's first bytes arrive on an idle keep-alive connection: true when
// there is something to read, false to close it (the client closed it, kKeepAliveSeconds passed,
// the server is stopping, or another connection is waiting for a worker).
bool HttpServer::await_next_request(int fd) {
  for (int waited_ms = 0; waited_ms < kKeepAliveSeconds * 1000; waited_ms += 50) {
    if (stopping_) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!pending_.empty()) return false;
    }
    pollfd p{fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, 50);
    if (rc < 0 && errno != EINTR) return false;
    if (rc > 0) {
      if (p.revents & (POLLHUP | POLLERR)) return false;
      char c;
      return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
    }
  }
  return false;
}

void HttpServer::serve(int fd) {
  set_timeouts(fd, 30);
  std::string buf;  // bytes received but not yet consumed (a pipelined next request)
  for (;;) {
    HttpConnection conn(fd);
    HttpRequest req;
    if (!read_request(fd, buf, req, conn)) return;
    // HTTP/1.1 keeps the connection unless the client says close; HTTP/1.0 only on request.
    std::string connection;
    if (auto it = req.headers.find("connection"); it != req.headers.end())
      connection = lower(it->second);
    const bool keep = !stopping_ && (req.version == "HTTP/1.1" ? connection != "close"
                                                               : connection == "keep-alive");
    conn.set_keep_alive(keep);
    // Streams may run long; reads are done, writes keep a timeout so a stuck client is dropped.
    try {
      handler_(req, conn);
    } catch (const std::exception& e) {
      conn.set_keep_alive(false);
      conn.respond(500, "text/plain", std::string("internal error: ") + e.what() + "\n");
      return;
    }
    if (!conn.reusable()) return;
    if (buf.empty() && !await_next_request(fd)) return;
  }
}

// ---- client ----

HttpResult http_request(const std::string& host, int port, const std::string& method,
                        const std::string& path, const std::string& body,
                        const std::function<bool(std::string_view)>& on_body, double timeout_s) {
  HttpResult r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) {
    r.error = "cannot resolve " + host;
    return r;
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    r.error = "cannot connect to " + host + ":" + std::to_string(port);
    return r;
  }
  set_timeouts(fd, timeout_s);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + host + ":" +
                    std::to_string(port) + "\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST")
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  HttpConnection conn(fd);
  if (!conn.write(req)) {
    r.error = "send failed";
    ::close(fd);
    return r;
  }
  std::string buf;
  char chunk[8192];
  bool in_body = false;
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) r.error = "read failed or timed out";
    if (n <= 0) break;
    if (in_body) {
      if (on_body && !on_body(std::string_view(chunk, size_t(n)))) break;
      if (!on_body) r.body.append(chunk, size_t(n));
      continue;
    }
    buf.append(chunk, size_t(n));
    const size_t end = buf.find("\r\n\r\n");
    if (end == std::string::npos) continue;
    const std::string_view head(buf.data(), end);
    const size_t sp = head.find(' ');
    if (sp != head.npos) r.status = std::atoi(std::string(head.substr(sp + 1, 3)).c_str());
    parse_headers(head, &r.headers);
    in_body = true;
    const std::string rest = buf.substr(end + 4);
    if (!rest.empty()) {
      if (on_body && !on_body(rest)) break;
      if (!on_body) r.body += rest;
    }
  }
  ::close(fd);
  return r;
}

}  // namespace ff::server
