// The HTTP layer alone (an echo handler, no model): keep-alive with pipelined requests, the
// cases that close the connection, and an idle kept connection giving its worker up.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "server/http.h"

namespace ff::server {
namespace {

// Replies with "<method> <path> <body>"; /stream answers as an SSE-style stream.
struct EchoServer {
  HttpServer http;
  explicit EchoServer(int workers)
      : http(
            [](const HttpRequest& r, HttpConnection& c) {
              if (r.path == "/stream") {
                c.begin_stream(200, "text/event-stream");
                c.write("data: one\n\n");
                return;
              }
              c.respond(200, "text/plain", r.method + " " + r.path + " " + r.body);
            },
            workers) {
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
  EchoServer s(2);
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
  EchoServer s(2);
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

// One worker: a kept, idle connection must not make the next client wait kKeepAliveSeconds.
TEST(Http, IdleKeptConnectionYieldsToAWaitingClient) {
  EchoServer s(1);
  const int a = connect_to(s.http.port());
  send_str(a, "GET /a HTTP/1.1\r\n\r\n");
  std::string buf;
  EXPECT_NE(read_response(a, buf).find("keep-alive"), std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  const int b = connect_to(s.http.port());
  send_str(b, "GET /b HTTP/1.1\r\nConnection: close\r\n\r\n");
  std::string buf_b;
  EXPECT_NE(read_response(b, buf_b).find("GET /b "), std::string::npos);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(waited, 2.0) << "the idle connection held the only worker";
  EXPECT_TRUE(closed_by_server(a));
  ::close(a);
  ::close(b);
}

}  // namespace
}  // namespace ff::server
