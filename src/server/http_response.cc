#include "server/http.h"

#include "core/core.h"
#include "server/http_connection.h"

namespace ff::server {

using detail::Connection;

namespace {

std::string response_head(int status, std::string_view content_type, const std::string& length,
                          bool keep_alive, double keep_alive_s) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) +
                  "\r\nContent-Type: " + std::string(content_type);
  if (!length.empty()) h += "\r\nContent-Length: " + length;
  if (length.empty()) h += "\r\nCache-Control: no-cache";
  h += keep_alive ? "\r\nConnection: keep-alive\r\nKeep-Alive: timeout=" +
                        std::to_string(int(keep_alive_s))
                  : std::string("\r\nConnection: close");
  return h + "\r\n\r\n";
}

}  // namespace

// The request a response answers is fixed when it is made, so a response that outlives its
// request on a kept connection can never write into the next request's answer.
HttpResponse::HttpResponse(std::shared_ptr<Connection> conn) : conn_(std::move(conn)) {
  std::lock_guard<std::mutex> lock(conn_->mu);
  seq_ = conn_->seq;
}

HttpResponse::~HttpResponse() {
  if (!started()) {
    respond(500, "application/json",
            "{\"error\":{\"message\":\"internal error: the request got no response\",\"type\":"
            "\"server_error\",\"param\":null,\"code\":null}}");
  } else {
    end();
  }
}

bool HttpResponse::respond(int status, std::string_view content_type, std::string_view body) {
  Connection& c = *conn_;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.seq != seq_ || c.started || c.closed) return false;
    c.started = c.ended = true;
    if (!c.queue_locked(response_head(status, content_type, std::to_string(body.size()),
                                      c.keep_alive, c.keep_alive_s)) ||
        !c.queue_locked(body)) {
      c.waker->wake(conn_);
      return false;
    }
  }
  c.waker->wake(conn_);
  return true;
}

bool HttpResponse::begin_stream(int status, std::string_view content_type) {
  Connection& c = *conn_;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.seq != seq_ || c.started || c.closed) return false;
    c.started = c.streaming = true;
    c.keep_alive = false;
    c.queue_locked(response_head(status, content_type, "", false, 0));
  }
  c.waker->wake(conn_);
  return true;
}

bool HttpResponse::write(std::string_view data) {
  Connection& c = *conn_;
  bool ok = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.seq != seq_ || !c.streaming || c.ended || c.closed) return false;
    ok = c.queue_locked(data);
  }
  c.waker->wake(conn_);
  return ok;
}

void HttpResponse::end() {
  Connection& c = *conn_;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.seq != seq_ || !c.streaming || c.ended) return;
    c.ended = true;
  }
  c.waker->wake(conn_);
}

bool HttpResponse::started() const {
  std::lock_guard<std::mutex> lock(conn_->mu);
  return conn_->seq != seq_ || conn_->started;
}

bool HttpResponse::closed() const {
  std::lock_guard<std::mutex> lock(conn_->mu);
  return conn_->closed || conn_->overflow;
}

void HttpResponse::on_close(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(conn_->mu);
    if (conn_->seq != seq_) return;  // that request was answered in full
    if (!conn_->closed) {
      conn_->on_close = std::move(fn);
      return;
    }
  }
  if (fn) fn();
}

}  // namespace ff::server
