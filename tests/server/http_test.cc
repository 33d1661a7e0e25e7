// The HTTP layer alone (an echo handler, no model): keep-alive with pipelined requests, the
// cases that close the connection, timeouts, limits, the connection cap, hang-up detection and
// responses written later from other threads.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/http.h"

namespace ff::server {
namespace {

// Replies with "<method> <path> <body>"; /stream answers as an SSE-style stream.
void echo(const HttpRequest& r, const std::shared_ptr<HttpResponse>& c) {
  if (r.path == "/stream") {
    c->begin_stream(200, "text/event-stream");
    c->write("data: one\n\n");
    return;  // the stream ends when the last reference to the response goes
  }
  c->respond(200, "text/plain", r.method + " " + r.path + " " + r.body);
}

struct EchoServer {
  HttpServer http;
  explicit EchoServer(HttpOptions o = {}, HttpHandler h = echo) : http(std::move(h), o) {
    http.listen("127.0.0.1", 0);
    http.start();
  }
};

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void send_str(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), ssize_t(s.size()));
}

// Reads one whole (Content-Length) response from fd, keeping extra bytes in `buf`.
std::string read_response(int fd, std::string& buf) {
  char chunk[4096];
  for (;;) {
    const size_t he = buf.find("\r\n\r\n");
    if (he != std::string::npos) {
      const size_t cl = buf.find("Content-Length: ");
      if (cl != std::string::npos && cl < he) {
        const size_t len = std::stoul(buf.substr(cl + 16));
        if (buf.size() >= he + 4 + len) {
          std::string r = buf.substr(0, he + 4 + len);
          buf.erase(0, he + 4 + len);
          return r;
        }
      }
    }
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return "<closed> " + buf;
    buf.append(chunk, size_t(n));
  }
}

bool closed_by_server(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}

TEST(Http, KeepAliveAnswersPipelinedRequestsInOrder) {
  EchoServer s;
  const int fd = connect_to(s.http.port());
  send_str(fd,
           "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
           "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
           "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buf;
  const std::string r1 = read_response(fd, buf), r2 = read_response(fd, buf),
                    r3 = read_response(fd, buf);
  EXPECT_NE(r1.find("Connection: keep-alive"), std::string::npos) << r1;
  EXPECT_NE(r1.find("\r\n\r\nGET /a "), std::string::npos) << r1;
  EXPECT_NE(r2.find("\r\n\r\nPOST /b hello"), std::string::npos) << r2;
  EXPECT_NE(r3.find("\r\n\r\nGET /c "), std::string::npos) << r3;
  // A later request on the same connection, asking to close: answered, then closed.
  send_str(fd, "GET /d HTTP/1.1\r\nConnection: close\r\n\r\n");
  const std::string r4 = read_response(fd, buf);
  EXPECT_NE(r4.find("Connection: close"), std::string::npos) << r4;
  EXPECT_NE(r4.find("GET /d "), std::string::npos) << r4;
  EXPECT_TRUE(closed_by_server(fd));
  ::close(fd);
}

TEST(Http, Http10StreamsAndChunkedBodiesClose) {
  EchoServer s;
  {  // HTTP/1.0 without keep-alive
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /a HTTP/1.0\r\n\r\n");
    std::string buf;
    EXPECT_NE(read_response(fd, buf).find("Connection: close"), std::string::npos);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  {  // HTTP/1.0 asking for keep-alive
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
    std::string buf;
    EXPECT_NE(read_response(fd, buf).find("Connection: keep-alive"), std::string::npos);
    EXPECT_NE(read_response(fd, buf).find("GET /b "), std::string::npos);
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
  {  // a stream ends with the connection
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /stream HTTP/1.1\r\n\r\n");
    std::string got;
    char chunk[256];
    for (ssize_t n; (n = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) got.append(chunk, size_t(n));
    EXPECT_NE(got.find("data: one"), std::string::npos) << got;
    ::close(fd);
  }
  {  // chunked request bodies are refused
    const int fd = connect_to(s.http.port());
    send_str(fd, "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    std::string buf;
    const std::string r = read_response(fd, buf);
    EXPECT_NE(r.find("400 Bad Request"), std::string::npos) << r;
    EXPECT_TRUE(closed_by_server(fd));
    ::close(fd);
  }
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Waits (bounded) until the server closes fd; returns the bytes it sent before, or "<open>".
std::string read_until_closed(int fd, double seconds) {
  timeval tv{0, 100000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  const auto t0 = std::chrono::steady_clock::now();
  char chunk[4096];
  while (since(t0) < seconds) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n == 0) return got;
    if (n > 0) got.append(chunk, size_t(n));
  }
  return "<open>";
}

// One handler thread and hundreds of connections that send nothing or half a request: they
// cost no thread, so a request on a fresh connection is answered at once.
TEST(Http, IdleAndHalfSentConnectionsDoNotBlockOthers) {
  HttpOptions o;
  o.handler_threads = 1;
  EchoServer s(o);
  std::vector<int> idle;
  for (int i = 0; i < 400; ++i) idle.push_back(connect_to(s.http.port()));
  for (int i = 0; i < 100; ++i) {
    idle.push_back(connect_to(s.http.port()));
    send_str(idle.back(), "GET /slow HTTP/1.1\r\nHost: x\r\n");
  }
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    std::string buf;
    EXPECT_NE(read_response(fd, buf).find("GET /health"), std::string::npos);
    EXPECT_LT(since(t0), 0.1);
    ::close(fd);
  }
  EXPECT_GE(s.http.stats().open, 500);
  for (int fd : idle) ::close(fd);
}

TEST(Http, HeaderBodyAndKeepAliveTimeouts) {
  HttpOptions o;
  o.header_timeout_s = 0.3;
  o.body_timeout_s = 0.3;
  o.keep_alive_s = 0.3;
  EchoServer s(o);
  const auto t0 = std::chrono::steady_clock::now();
  const int silent = connect_to(s.http.port());
  const int half = connect_to(s.http.port());
  send_str(half, "GET /a HTTP/1.1\r\nHo");
  const int no_body = connect_to(s.http.port());
  send_str(no_body, "POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  const int kept = connect_to(s.http.port());
  send_str(kept, "GET /a HTTP/1.1\r\n\r\n");
  std::string buf;
  EXPECT_NE(read_response(kept, buf).find("keep-alive"), std::string::npos);
  EXPECT_NE(read_until_closed(silent, 3).find("408 Request Timeout"), std::string::npos);
  EXPECT_NE(read_until_closed(half, 3).find("408 Request Timeout"), std::string::npos);
  const std::string body_timeout = read_until_closed(no_body, 3);
  EXPECT_NE(body_timeout.find("408"), std::string::npos) << body_timeout;
  EXPECT_NE(body_timeout.find("body timeout"), std::string::npos) << body_timeout;
  EXPECT_EQ(read_until_closed(kept, 3), "");  // an idle kept connection closes silently
  EXPECT_LT(since(t0), 2.0);
  EXPECT_EQ(s.http.stats().timed_out, 4);
  for (int fd : {silent, half, no_body, kept}) ::close(fd);
  // Closed on the server's side once the clients have read the 408s and closed theirs.
  for (int i = 0; i < 200 && s.http.stats().open > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(s.http.stats().open, 0);
}

TEST(Http, MalformedAndOversizedRequests) {
  HttpOptions o;
  o.max_header_bytes = 1024;
  o.max_body_bytes = 100;
  EchoServer s(o);
  const auto expect_status = [&](const std::string& request, const std::string& status) {
    const int fd = connect_to(s.http.port());
    send_str(fd, request);
    const std::string r = read_until_closed(fd, 5);
    EXPECT_EQ(r.rfind("HTTP/1.1 " + status, 0), 0u) << request.substr(0, 60) << " -> " << r;
    EXPECT_NE(r.find("\"error\""), std::string::npos) << r;
    ::close(fd);
  };
  expect_status("GARBAGE\r\n\r\n", "400");
  expect_status("GET /a SPDY/3\r\n\r\n", "400");
  expect_status("GET /a HTTP/1.1\r\nno colon here\r\n\r\n", "400");
  expect_status("POST /a HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "400");
  expect_status("POST /a HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", "400");
  expect_status("POST /a HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "413");
  expect_status("GET /a HTTP/1.1\r\nX-Big: " + std::string(2000, 'x') + "\r\n\r\n", "431");
  expect_status("GET /a HTTP/1.1\r\nX-Big: " + std::string(2000, 'x'), "431");  // no end yet
  // Still serving.
  const int fd = connect_to(s.http.port());
  send_str(fd, "POST /ok HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b'));
  std::string buf;
  EXPECT_NE(read_response(fd, buf).find("POST /ok bbbb"), std::string::npos);
  ::close(fd);
}

// Past max_connections a connection gets a clean 503 and is closed; a freed slot serves again.
TEST(Http, ConnectionCapAnswers503) {
  HttpOptions o;
  o.max_connections = 5;
  EchoServer s(o);
  EXPECT_EQ(s.http.max_connections(), 5);
  std::vector<int> held;
  for (int i = 0; i < 5; ++i) held.push_back(connect_to(s.http.port()));
  for (int i = 0; i < 200 && s.http.stats().open < 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const int extra = connect_to(s.http.port());
  send_str(extra, "GET /a HTTP/1.1\r\n\r\n");
  const std::string r = read_until_closed(extra, 5);
  EXPECT_EQ(r.rfind("HTTP/1.1 503 Service Unavailable", 0), 0u) << r;
  EXPECT_NE(r.find("5 connections"), std::string::npos) << r;
  ::close(extra);
  EXPECT_EQ(s.http.stats().rejected, 1);
  ::close(held.back());
  held.pop_back();
  for (int i = 0; i < 200 && s.http.stats().open >= 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const int again = connect_to(s.http.port());
  send_str(again, "GET /b HTTP/1.1\r\n\r\n");
  std::string buf;
  EXPECT_NE(read_response(again, buf).find("GET /b"), std::string::npos);
  ::close(again);
  for (int fd : held) ::close(fd);
}

// Responses may be written later from another thread; a client's hang-up is seen at once.
TEST(Http, DeferredResponsesAndHangUp) {
  std::mutex mu;
  std::vector<std::shared_ptr<HttpResponse>> parked;
  std::atomic<int> closed_calls{0};
  EchoServer s({}, [&](const HttpRequest& r, const std::shared_ptr<HttpResponse>& res) {
    if (r.path == "/later" || r.path == "/stream") {
      if (r.path == "/stream") res->begin_stream(200, "text/event-stream");
      res->on_close([&] { closed_calls.fetch_add(1); });
      std::lock_guard<std::mutex> lock(mu);
      parked.push_back(res);
      return;
    }
    if (r.path == "/throw") throw std::runtime_error("boom");
    if (r.path == "/nothing") return;  // dropped without an answer
    echo(r, res);
  });
  const auto take_parked = [&] {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!parked.empty()) {
          auto p = parked.back();
          parked.pop_back();
          return p;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ADD_FAILURE() << "no parked request";
    return std::shared_ptr<HttpResponse>();
  };
  {  // answered from this thread, later; then the stale response cannot touch the next request
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /later HTTP/1.1\r\n\r\n");
    auto res = take_parked();
    ASSERT_TRUE(res);
    EXPECT_TRUE(res->respond(200, "text/plain", "late"));
    std::string buf;
    EXPECT_NE(read_response(fd, buf).find("\r\n\r\nlate"), std::string::npos);
    send_str(fd, "GET /next HTTP/1.1\r\n\r\n");
    EXPECT_FALSE(res->respond(200, "text/plain", "stale"));
    EXPECT_NE(read_response(fd, buf).find("GET /next"), std::string::npos);
    ::close(fd);
  }
  {  // a client hanging up mid-stream: on_close runs promptly, writes then fail
    const int fd = connect_to(s.http.port());
    send_str(fd, "GET /stream HTTP/1.1\r\n\r\n");
    auto res = take_parked();
    ASSERT_TRUE(res);
    EXPECT_TRUE(res->write("data: x\n\n"));
    const auto t0 = std::chrono::steady_clock::now();
    ::close(fd);
    while (closed_calls.load() == 0 && since(t0) < 2)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(closed_calls.load(), 1);
    EXPECT_LT(since(t0), 0.2);
    EXPECT_TRUE(res->closed());
    EXPECT_FALSE(res->write("data: y\n\n"));
    bool called_at_once = false;
    res->on_close([&] { called_at_once = true; });
    EXPECT_TRUE(called_at_once);
  }
  {  // a handler that throws gets a 500; one that drops its response without answering too
    for (const char* path : {"/throw", "/nothing"}) {
      const int fd = connect_to(s.http.port());
      send_str(fd, std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
      std::string buf;
      const std::string r = read_response(fd, buf);
      EXPECT_EQ(r.rfind("HTTP/1.1 500", 0), 0u) << path << ": " << r;
      ::close(fd);
    }
  }
}

}  // namespace
}  // namespace ff::server
