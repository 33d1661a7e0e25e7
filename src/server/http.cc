#include "server/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/core.h"
#include "server/http_wire.h"
#include "server/server.h"

namespace ff::server {

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
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

namespace {

void set_timeouts(int fd, double seconds) {
  timeval tv{};
  tv.tv_sec = time_t(seconds);
  tv.tv_usec = suseconds_t((seconds - double(tv.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

// ---- TaskPool ----

TaskPool::TaskPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { run(); });
}

TaskPool::~TaskPool() {
  shutdown();
}

void TaskPool::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void TaskPool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  threads_.clear();
}

void TaskPool::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    try {
      task();
    } catch (const std::exception& e) {
      // A task that throws is a bug in its poster; keep the pool alive for everyone else.
      std::fprintf(stderr, "fireflyer: http task failed: %s\n", e.what());
    }
  }
}

int64_t raise_open_file_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur == RLIM_INFINITY ? int64_t(1) << 20 : int64_t(rl.rlim_cur);
}

// ---- client ----

HttpResult http_request(const std::string& host, int port, const std::string& method,
                        const std::string& path, const std::string& body,
                        const std::function<bool(std::string_view)>& on_body, double timeout_s,
                        const std::vector<std::string>& headers) {
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
  for (const std::string& h : headers) req += h + "\r\n";
  if (!body.empty() || method == "POST")
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  for (std::string_view rest = req; !rest.empty();) {
    const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.error = "send failed";
      ::close(fd);
      return r;
    }
    rest.remove_prefix(size_t(n));
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
    wire::parse_headers(head, &r.headers);
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
