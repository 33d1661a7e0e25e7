// A connection's state, shared by the HTTP event loop (http_server.cc) and the responses written
// to it from other threads (http_response.cc). Private to the server module.
//
// Threads: the loop thread owns every socket and all of a Connection's "loop side" fields; any
// thread may call an HttpResponse, which appends to the connection's output under its mutex and
// wakes the loop through the Waker's eventfd. Only the loop reads, writes or closes a socket, so a
// closed connection's fd number, reused by a later accept, is never touched through a stale
// Connection.
#pragma once
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/core.h"
#include "server/http.h"

namespace ff::server {

namespace detail {

struct Connection;

// What the loop shares with responders: the connections that have output to write.
struct Waker {
  int efd = -1;
  std::mutex mu;
  std::vector<std::shared_ptr<Connection>> dirty;
  bool stopped = false;  // the loop is gone: nothing is queued (which would keep connections)

  Waker() : efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    FF_CHECK(efd >= 0, "http server: eventfd: {}", std::strerror(errno));
  }
  ~Waker() { ::close(efd); }
  void wake(std::shared_ptr<Connection> c) {
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopped) return;
      first = dirty.empty();
      dirty.push_back(std::move(c));
    }
    if (first) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(efd, &one, sizeof one);
    }
  }
};

struct Connection {
  enum class Phase { Idle, Head, Body, Busy, Draining };

  Connection(int f, std::shared_ptr<Waker> w, const HttpOptions& o)
      : fd(f), waker(std::move(w)), max_queued(o.max_queued_output), keep_alive_s(o.keep_alive_s) {}

  const int fd;
  const std::shared_ptr<Waker> waker;
  const size_t max_queued;
  const double keep_alive_s;

  // The response side, guarded by mu (any thread).
  std::mutex mu;
  std::string out;  // queued bytes, written from out_off
  size_t out_off = 0;
  uint64_t seq = 0;      // the request the current response answers
  bool started = false;  // a status line was queued
  bool ended = false;    // the response is complete (whole, or its stream ended)
  bool streaming = false;
  bool keep_alive = false;
  bool closed = false;
  bool overflow = false;  // the client fell max_queued bytes behind
  std::function<void()> on_close;

  // The loop side (loop thread only).
  Phase phase = Phase::Idle;
  bool kept = false;    // between requests of a kept connection
  bool counted = true;  // counts towards max_connections (not a 503'd one)
  bool peer_eof = false;
  bool was_pending = false;  // output was waiting at the end of the last flush
  std::chrono::steady_clock::time_point deadline;
  std::chrono::steady_clock::time_point last_progress;  // of the output, while some is waiting
  std::string in;
  HttpRequest req;
  size_t body_len = 0;
  uint32_t interest = 0;

  // Queues bytes for the current response; false when they cannot be sent any more.
  bool queue_locked(std::string_view bytes) {
    if (closed) return false;
    out.append(bytes);
    if (out.size() - out_off > max_queued) overflow = true;
    return !overflow;
  }
};

}  // namespace detail

}  // namespace ff::server
