// The event loop behind HttpServer (see http.h for the behaviour, http_connection.h for the
// threading, docs/server.md for why epoll on a thread of our own rather than a library).
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include "core/core.h"
#include "server/http.h"
#include "server/http_connection.h"
#include "server/http_wire.h"

namespace ff::server {

using Clock = std::chrono::steady_clock;

namespace {

// Bytes of a next (pipelined) request read while one is being answered; past it reading pauses.
constexpr size_t kReadAhead = size_t(64) << 10;
// How long a closing connection is drained so the client can read a final response.
constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr auto kSweepEvery = std::chrono::milliseconds(50);

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The error bodies the loop itself sends, in the OpenAI API's shape (messages are plain ASCII).
std::string error_response(int status, const std::string& message, const char* type) {
  const std::string body = "{\"error\":{\"message\":\"" + message + "\",\"type\":\"" + type +
                           "\",\"param\":null,\"code\":null}}";
  return "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

using detail::Connection;
// ---- the loop ----

struct HttpServer::Loop {
  Loop(HttpHandler& h, const HttpOptions& o, std::shared_ptr<TaskPool> t)
      : handler(h), options(o), tasks(std::move(t)), waker(std::make_shared<detail::Waker>()) {
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    FF_CHECK(epfd >= 0, "http server: epoll_create1: {}", std::strerror(errno));
    spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ~Loop() {
    if (listen_fd >= 0) ::close(listen_fd);
    if (spare_fd >= 0) ::close(spare_fd);
    ::close(epfd);
  }

  void run();
  void accept_all();
  void reject(int fd);
  void add(std::shared_ptr<Connection> c);
  void on_readable(Connection& c, bool hangup);
  void process_input(Connection& c);
  void dispatch(Connection& c);
  void reply_and_close(Connection& c, int status, const std::string& message);
  void flush(Connection& c);
  void finish_request(Connection& c, bool keep);
  void start_draining(Connection& c);
  void close_conn(Connection& c);
  void update_interest(Connection& c);
  void sweep(Clock::time_point now);
  std::shared_ptr<Connection> find(int fd) {
    auto it = conns.find(fd);
    return it == conns.end() ? nullptr : it->second;
  }

  HttpHandler& handler;
  const HttpOptions& options;
  std::shared_ptr<TaskPool> tasks;
  std::shared_ptr<detail::Waker> waker;
  int epfd = -1, listen_fd = -1, spare_fd = -1;
  int max_connections = 0;
  std::atomic<bool> stopping{false};
  std::unordered_map<int, std::shared_ptr<Connection>> conns;
  int64_t open_counted = 0;
  mutable std::mutex stats_mu;
  HttpStats stats;
};

void HttpServer::Loop::run() {
  epoll_event evs[256];
  Clock::time_point next_sweep = Clock::now() + kSweepEvery;
  while (!stopping.load()) {
    const int n = ::epoll_wait(epfd, evs, 256, int(kSweepEvery.count()));
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      const uint32_t ev = evs[i].events;
      if (fd == listen_fd) {
        accept_all();
        continue;
      }
      if (fd == waker->efd) {
        uint64_t v;
        [[maybe_unused]] const ssize_t r = ::read(waker->efd, &v, sizeof v);
        std::vector<std::shared_ptr<Connection>> dirty;
        {
          std::lock_guard<std::mutex> lock(waker->mu);
          dirty.swap(waker->dirty);
        }
        for (auto& c : dirty) flush(*c);
        continue;
      }
      std::shared_ptr<Connection> c = find(fd);
      if (!c) continue;
      if (ev & EPOLLERR) {
        close_conn(*c);
        continue;
      }
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) on_readable(*c, ev & (EPOLLRDHUP | EPOLLHUP));
      if ((ev & EPOLLOUT) && find(fd) == c) flush(*c);
    }
    const Clock::time_point now = Clock::now();
    if (now >= next_sweep) {
      sweep(now);
      next_sweep = now + kSweepEvery;
    }
  }
  // Stopping: every connection closes (in-flight responses see closed(), on_close runs).
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [fd, c] : conns) all.push_back(c);
  for (auto& c : all) close_conn(*c);
}

void HttpServer::Loop::accept_all() {
  for (int i = 0; i < 256; ++i) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
        // Out of descriptors: free the spare one to take the connection off the queue and refuse
        // it, rather than leave it there and spin on a listening socket that stays readable.
        ::close(spare_fd);
        fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          const std::string r = error_response(503, "too many open connections", "server_error");
          [[maybe_unused]] const ssize_t w = ::send(fd, r.data(), r.size(), MSG_NOSIGNAL);
          ::close(fd);
          std::lock_guard<std::mutex> lock(stats_mu);
          ++stats.accepted;
          ++stats.rejected;
        }
        spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      return;  // EAGAIN: nothing more waiting (or an error to retry at the next wake-up)
    }
    {
      std::lock_guard<std::mutex> lock(stats_mu);
      ++stats.accepted;
    }
    if (open_counted >= max_connections || stopping.load()) {
      reject(fd);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_shared<Connection>(fd, waker, options);
    c->deadline = Clock::now() + seconds(options.header_timeout_s);
    add(std::move(c));
  }
}

// Past max_connections: a 503, then the usual drain and close, outside the count (but bounded:
// beyond a small allowance such connections are refused without the drain).
void HttpServer::Loop::reject(int fd) {
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    ++stats.rejected;
  }
  const std::string r = error_response(
      503, "the server is at its limit of " + std::to_string(max_connections) + " connections",
      "server_error");
  if (int64_t(conns.size()) - open_counted >= 256) {
    [[maybe_unused]] const ssize_t w = ::send(fd, r.data(), r.size(), MSG_NOSIGNAL);
    ::close(fd);
    return;
  }
  auto c = std::make_shared<Connection>(fd, waker, options);
  c->counted = false;
  add(c);
  c->phase = Connection::Phase::Busy;
  {
    std::lock_guard<std::mutex> lock(c->mu);
    c->started = c->ended = true;
    c->queue_locked(r);
  }
  flush(*c);
}

void HttpServer::Loop::add(std::shared_ptr<Connection> c) {
  if (c->counted) ++open_counted;
  c->interest = EPOLLIN | EPOLLRDHUP;
  epoll_event ev{};
  ev.events = c->interest;
  ev.data.fd = c->fd;
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
  conns[c->fd] = std::move(c);
  std::lock_guard<std::mutex> lock(stats_mu);
  stats.open = open_counted;
}

void HttpServer::Loop::on_readable(Connection& c, bool hangup) {
  char buf[64 << 10];
  if (c.phase == Connection::Phase::Draining) {
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      close_conn(c);  // EOF or error: the client has everything it is going to read
      return;
    }
  }
  const bool busy_before = c.phase == Connection::Phase::Busy;
  for (;;) {
    if (c.phase == Connection::Phase::Busy && c.in.size() >= kReadAhead) break;
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (c.phase == Connection::Phase::Idle && c.kept) {
        c.phase = Connection::Phase::Head;
        c.deadline = Clock::now() + seconds(options.header_timeout_s);
      }
      c.in.append(buf, size_t(n));
      continue;
    }
    if (n == 0) {
      c.peer_eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_conn(c);  // reset
    return;
  }
  // Reading may have paused at the read-ahead limit before reaching the end of the stream.
  if (hangup) c.peer_eof = true;
  if (c.peer_eof && busy_before) {
    close_conn(c);  // hung up while being answered
    return;
  }
  process_input(c);
  if (c.peer_eof && c.phase != Connection::Phase::Busy) {
    close_conn(c);  // closed with nothing (or half a request) to answer
    return;
  }
  update_interest(c);
}

void HttpServer::Loop::process_input(Connection& c) {
  using Phase = Connection::Phase;
  for (;;) {
    if (c.phase == Phase::Idle) {
      if (c.in.empty()) return;
      c.phase = Phase::Head;
      if (c.kept) c.deadline = Clock::now() + seconds(options.header_timeout_s);
    }
    if (c.phase == Phase::Head) {
      const size_t he = c.in.find("\r\n\r\n");
      if (he == std::string::npos || he > options.max_header_bytes) {
        if (c.in.size() > options.max_header_bytes)
          reply_and_close(c, 431, "request headers are larger than the limit");
        return;
      }
      HttpRequest& req = c.req;
      req = HttpRequest{};
      const std::string_view head(c.in.data(), he);
      const std::string_view first = head.substr(0, head.find("\r\n"));
      const size_t sp1 = first.find(' ');
      const size_t sp2 = sp1 == first.npos ? first.npos : first.find(' ', sp1 + 1);
      if (sp1 == 0 || sp2 == first.npos || sp2 == sp1 + 1 ||
          first.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0) {
        reply_and_close(c, 400, "malformed request line");
        return;
      }
      req.method = std::string(first.substr(0, sp1));
      req.version = std::string(first.substr(sp2 + 1));
      const std::string target(first.substr(sp1 + 1, sp2 - sp1 - 1));
      const size_t q = target.find('?');
      req.path = target.substr(0, q);
      if (q != std::string::npos) req.query = target.substr(q + 1);
      if (!wire::parse_headers(head, &req.headers)) {
        reply_and_close(c, 400, "malformed header line");
        return;
      }
      if (req.headers.count("transfer-encoding")) {
        reply_and_close(c, 400, "chunked request bodies are not supported");
        return;
      }
      c.body_len = 0;
      if (auto it = req.headers.find("content-length"); it != req.headers.end()) {
        const std::string& v = it->second;
        if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != v.npos) {
          reply_and_close(c, 400, "bad Content-Length");
          return;
        }
        c.body_len = std::stoull(v);
      }
      if (c.body_len > options.max_body_bytes) {
        reply_and_close(c, 413, "the request body is larger than the limit");
        return;
      }
      c.in.erase(0, he + 4);
      c.phase = Phase::Body;
      c.deadline = Clock::now() + seconds(options.body_timeout_s);
      if (auto it = req.headers.find("expect"); it != req.headers.end() &&
                                                wire::lower(it->second) == "100-continue" &&
                                                c.in.size() < c.body_len) {
        std::lock_guard<std::mutex> lock(c.mu);
        c.queue_locked("HTTP/1.1 100 Continue\r\n\r\n");
        waker->wake(find(c.fd));
      }
    }
    if (c.phase == Phase::Body) {
      if (c.in.size() < c.body_len) return;
      c.req.body = c.in.substr(0, c.body_len);
      c.in.erase(0, c.body_len);
      dispatch(c);
    }
    return;  // Busy or Draining: one request at a time
  }
}

void HttpServer::Loop::dispatch(Connection& c) {
  const HttpRequest& req = c.req;
  std::string connection;
  if (auto it = req.headers.find("connection"); it != req.headers.end())
    connection = wire::lower(it->second);
  const bool keep =
      !stopping.load() && !c.peer_eof &&
      (req.version == "HTTP/1.1" ? connection != "close" : connection == "keep-alive");
  {
    std::lock_guard<std::mutex> lock(c.mu);
    ++c.seq;
    c.started = c.ended = c.streaming = false;
    c.keep_alive = keep;
    c.on_close = nullptr;
  }
  c.phase = Connection::Phase::Busy;
  c.last_progress = Clock::now();
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    ++stats.requests;
  }
  auto res = std::make_shared<HttpResponse>(find(c.fd));
  tasks->post([h = &handler, req = std::move(c.req), res] {
    if (res->closed()) return;
    try {
      (*h)(req, res);
    } catch (const std::exception& e) {
      if (!res->started())
        res->respond(500, "application/json",
                     "{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\","
                     "\"param\":null,\"code\":null}}");
      std::fprintf(stderr, "fireflyer: handler for %s failed: %s\n", req.path.c_str(), e.what());
    }
  });
  c.req = HttpRequest{};
}

void HttpServer::Loop::reply_and_close(Connection& c, int status, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(c.mu);
    ++c.seq;
    c.started = c.ended = true;
    c.streaming = false;
    c.keep_alive = false;
    c.queue_locked(error_response(status, message, "invalid_request_error"));
  }
  c.phase = Connection::Phase::Busy;
  c.last_progress = Clock::now();
  flush(c);
}

void HttpServer::Loop::flush(Connection& c) {
  bool pending = false, done = false, keep = false;
  {
    std::unique_lock<std::mutex> lock(c.mu);
    if (c.closed) return;
    if (c.overflow) {
      lock.unlock();
      close_conn(c);
      return;
    }
    if (!c.was_pending) c.last_progress = Clock::now();
    while (c.out_off < c.out.size()) {
      const ssize_t n =
          ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += size_t(n);
        c.last_progress = Clock::now();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      lock.unlock();
      close_conn(c);  // the peer is gone
      return;
    }
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    } else if (c.out_off > (size_t(1) << 20)) {
      c.out.erase(0, c.out_off);
      c.out_off = 0;
    }
    pending = !c.out.empty();
    c.was_pending = pending;
    done = c.ended && !pending;
    keep = c.keep_alive && !c.streaming;
  }
  if (done && c.phase == Connection::Phase::Busy) {
    finish_request(c, keep);
    return;
  }
  update_interest(c);
}

void HttpServer::Loop::finish_request(Connection& c, bool keep) {
  if (!keep || c.peer_eof || stopping.load()) {
    start_draining(c);
    return;
  }
  c.phase = Connection::Phase::Idle;
  c.kept = true;
  c.deadline = Clock::now() + seconds(options.keep_alive_s);
  process_input(c);  // a pipelined next request may be waiting
  update_interest(c);
}

void HttpServer::Loop::start_draining(Connection& c) {
  ::shutdown(c.fd, SHUT_WR);
  c.phase = Connection::Phase::Draining;
  c.deadline = Clock::now() + kDrainTime;
  c.in.clear();
  if (c.peer_eof) {
    close_conn(c);
    return;
  }
  update_interest(c);
}

void HttpServer::Loop::close_conn(Connection& c) {
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.closed) return;
    c.closed = true;
    if (c.phase == Connection::Phase::Busy) fn = std::move(c.on_close);
    c.on_close = nullptr;
  }
  ::epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  if (c.counted) --open_counted;
  std::shared_ptr<Connection> keep_alive_until_done = find(c.fd);
  conns.erase(c.fd);
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    stats.open = open_counted;
  }
  if (fn) fn();
}

void HttpServer::Loop::update_interest(Connection& c) {
  bool pending = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.closed) return;
    pending = c.out_off < c.out.size();
  }
  uint32_t want = pending ? uint32_t(EPOLLOUT) : 0u;
  if (c.phase == Connection::Phase::Draining) {
    want |= EPOLLIN | EPOLLRDHUP;
  } else if (!c.peer_eof) {
    want |= EPOLLRDHUP;
    if (c.phase != Connection::Phase::Busy || c.in.size() < kReadAhead) want |= EPOLLIN;
  }
  if (want == c.interest) return;
  c.interest = want;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd;
  ::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
}

void HttpServer::Loop::sweep(Clock::time_point now) {
  using Phase = Connection::Phase;
  std::vector<std::shared_ptr<Connection>> expired;
  for (auto& [fd, c] : conns) {
    if (c->phase == Phase::Busy) {
      std::lock_guard<std::mutex> lock(c->mu);
      if (c->out_off < c->out.size() && now - c->last_progress > seconds(options.write_timeout_s))
        expired.push_back(c);
    } else if (now >= c->deadline) {
      expired.push_back(c);
    }
  }
  for (auto& c : expired) {
    if (c->closed) continue;
    {
      std::lock_guard<std::mutex> lock(stats_mu);
      ++stats.timed_out;
    }
    switch (c->phase) {
      case Phase::Idle:
        if (c->kept) {
          close_conn(*c);  // an idle kept connection just closes
        } else {
          reply_and_close(*c, 408, "no request arrived within the header timeout");
        }
        break;
      case Phase::Head:
        reply_and_close(*c, 408, "the request headers did not arrive within the header timeout");
        break;
      case Phase::Body:
        reply_and_close(*c, 408, "the request body did not arrive within the body timeout");
        break;
      case Phase::Busy:
      case Phase::Draining:
        close_conn(*c);
        break;
    }
  }
}

// ---- HttpServer ----

HttpServer::HttpServer(HttpHandler handler, HttpOptions options)
    : handler_(std::move(handler)),
      options_(options),
      tasks_(std::make_shared<TaskPool>(options.handler_threads)),
      loop_(std::make_unique<Loop>(handler_, options_, tasks_)) {}

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
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) break;
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
  loop_->listen_fd = fd;
  // Descriptors beyond the connections: the listener, epoll, eventfd, the spare, model files,
  // and the allowance of refused connections still draining.
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const int64_t limit = rl.rlim_cur == RLIM_INFINITY ? int64_t(1) << 20 : int64_t(rl.rlim_cur);
  const int64_t derived = std::max<int64_t>(16, limit - 512);
  max_connections_ =
      int(options_.max_connections > 0 ? std::min<int64_t>(options_.max_connections, derived)
                                       : std::min<int64_t>(derived, 1 << 20));
  loop_->max_connections = max_connections_;
}

void HttpServer::start() {
  FF_CHECK(loop_->listen_fd >= 0, "http server: start() before listen()");
  FF_CHECK(!started_, "http server: started twice");
  started_ = true;
  for (int fd : {loop_->listen_fd, loop_->waker->efd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(loop_->epfd, EPOLL_CTL_ADD, fd, &ev);
  }
  thread_ = std::thread([this] { loop_->run(); });
}

void HttpServer::stop() {
  if (loop_->stopping.exchange(true)) return;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(loop_->waker->efd, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(loop_->waker->mu);
    loop_->waker->stopped = true;
    loop_->waker->dirty.clear();
  }
  tasks_->shutdown();
}

HttpStats HttpServer::stats() const {
  std::lock_guard<std::mutex> lock(loop_->stats_mu);
  return loop_->stats;
}

}  // namespace ff::server
