// The transactional store on etcd (v3 API through its JSON gateway, /v3/kv/*; keys and values
// base64): a transaction reads at the store's revision when it began (range requests at that
// revision) and commits as one etcd Txn whose comparisons say that nothing it read changed:
//   - a key read present: its mod_revision is still the one read (a change or a delete fails it);
//   - a key read absent: its create_revision is still 0 (no such key now);
//   - a range read: no key in it has a create_revision newer than the read revision (a new key
//     fails it), with each key the range returned compared as above (changes and deletes).
// A request whose answer is lost makes the commit's outcome unknown.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/core.h"
#include "fs/txn.h"
#include "fs/txn_buffer.h"

namespace ff::fs {
namespace {

using json = nlohmann::json;

std::string base64(std::string_view in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v =
        uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += t[(v >> s) & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string unbase64(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else
      continue;  // '=' and anything else
    acc = acc << 6 | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

// etcd has no empty key: a range from the start begins at "\0".
std::string from(std::string_view begin) {
  return begin.empty() ? std::string(1, '\0') : std::string(begin);
}

// etcd writes 64-bit numbers as strings.
int64_t num(const json& j, const char* field) {
  if (!j.contains(field)) return 0;
  const json& v = j[field];
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
}

// One HTTP/1.1 connection to the gateway, reopened when it fails.
class Http {
 public:
  explicit Http(std::string endpoint) : endpoint_(std::move(endpoint)) {
    const size_t colon = endpoint_.rfind(':');
    FF_CHECK(colon != std::string::npos, "etcd: endpoint {} is not host:port", endpoint_);
    host_ = endpoint_.substr(0, colon);
    port_ = endpoint_.substr(colon + 1);
  }
  ~Http() { drop(); }

  // POSTs body to path; false (and *sent tells whether the request went out) on failure.
  bool post(const std::string& path, const std::string& body, std::string* reply, bool* sent) {
    std::lock_guard lk(mu_);
    *sent = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (fd_ < 0 && !connect_()) return false;
      const std::string req =
          "POST " + path + " HTTP/1.1\r\nHost: " + endpoint_ +
          "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\n\r\n" + body;
      if (!send_all(req)) {  // a connection the server closed: once more on a new one
        drop();
        continue;
      }
      *sent = true;
      if (read_reply(reply)) return true;
      drop();
      return false;
    }
    return false;
  }

 private:
  bool connect_() {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host_.c_str(), port_.c_str(), &hints, &res) != 0) return false;
    for (addrinfo* a = res; a; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
        break;
      }
      ::close(fd);
    }
    freeaddrinfo(res);
    buf_.clear();
    return fd_ >= 0;
  }
  void drop() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buf_.clear();
  }
  bool send_all(const std::string& s) {
    for (size_t done = 0; done < s.size();) {
      const ssize_t n = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += size_t(n);
    }
    return true;
  }
  bool fill() {
    char tmp[16384];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, size_t(n));
    return true;
  }
  bool read_reply(std::string* body) {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return false;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    for (char& c : head) c = char(std::tolower(uint8_t(c)));
    const size_t cl = head.find("content-length:");
    if (cl != std::string::npos) {
      const size_t n = std::stoull(head.substr(cl + 15));
      while (buf_.size() < n)
        if (!fill()) return false;
      *body = buf_.substr(0, n);
      buf_.erase(0, n);
      return true;
    }
    if (head.find("transfer-encoding: chunked") == std::string::npos) return false;
    body->clear();
    for (;;) {
      size_t eol;
      while ((eol = buf_.find("\r\n")) == std::string::npos)
        if (!fill()) return false;
      const size_t n = std::stoull(buf_.substr(0, eol), nullptr, 16);
      buf_.erase(0, eol + 2);
      while (buf_.size() < n + 2)
        if (!fill()) return false;
      body->append(buf_, 0, n);
      buf_.erase(0, n + 2);
      if (n == 0) return true;
    }
  }

  std::mutex mu_;
  std::string endpoint_, host_, port_;
  int fd_ = -1;
  std::string buf_;
};

struct Core {
  explicit Core(std::string endpoint) : http(std::move(endpoint)) {}
  Http http;
  Injection injection;

  // A gateway call; ff::Error when etcd does not answer or answers an error.
  json call(const std::string& path, const json& req, bool* sent = nullptr) {
    std::string reply;
    bool was_sent = false;
    const bool ok = http.post(path, req.dump(), &reply, &was_sent);
    if (sent) *sent = was_sent;
    FF_CHECK(ok, "etcd: no answer to {}", path);
    json j;
    try {
      j = json::parse(reply);
    } catch (const json::exception&) {
      fail("etcd: {} answered something that is not JSON", path);
    }
    FF_CHECK(!j.contains("error"), "etcd: {}: {}", path, j["error"].dump());
    return j;
  }
};

class EtcdTxn final : public BufferedTxn {
 public:
  EtcdTxn(std::shared_ptr<Core> core, bool writable)
      : BufferedTxn(writable, core->injection), core_(std::move(core)) {
    // The store's current revision: any answer's header carries it.
    const json r = core_->call("/v3/kv/range", {{"key", base64("\x01")}, {"count_only", true}});
    revision_ = num(r["header"], "revision");
  }
  uint64_t read_version() const override { return uint64_t(revision_); }

 private:
  std::optional<std::string> stored(std::string_view key, bool track) override {
    const json r = core_->call("/v3/kv/range",
                               {{"key", base64(key)}, {"revision", std::to_string(revision_)}});
    const bool found = r.contains("kvs") && !r["kvs"].empty();
    if (track) reads_[std::string(key)] = found ? num(r["kvs"][0], "mod_revision") : 0;
    if (!found) return std::nullopt;
    return unbase64(r["kvs"][0].value("value", ""));
  }
  std::map<std::string, std::string> stored_range(std::string_view begin, std::string_view end,
                                                  size_t want) override {
    json req = {{"key", base64(from(begin))},
                {"range_end", base64(end.empty() ? std::string_view("\0", 1) : end)},
                {"revision", std::to_string(revision_)}};
    if (want != SIZE_MAX) req["limit"] = std::to_string(want);
    const json r = core_->call("/v3/kv/range", req);
    std::map<std::string, std::string> all;
    if (r.contains("kvs"))
      for (const json& kv : r["kvs"]) {
        std::string k = unbase64(kv["key"].get<std::string>());
        reads_[k] = num(kv, "mod_revision");  // each key returned is checked as a point read
        all.emplace(std::move(k), unbase64(kv.value("value", "")));
      }
    return all;
  }
  TxnStatus commit_writes(bool check) override {
    json compare = json::array();
    if (check) {
      for (const auto& [k, mod] : reads_) {
        if (mod > 0)
          compare.push_back({{"key", base64(k)},
                             {"target", "MOD"},
                             {"result", "EQUAL"},
                             {"mod_revision", std::to_string(mod)}});
        else
          compare.push_back({{"key", base64(k)},
                             {"target", "CREATE"},
                             {"result", "EQUAL"},
                             {"create_revision", "0"}});
      }
      for (const auto& [b, e] : ranges_)
        compare.push_back({{"key", base64(from(b))},
                           {"range_end", base64(e.empty() ? std::string("\0", 1) : e)},
                           {"target", "CREATE"},
                           {"result", "LESS"},
                           {"create_revision", std::to_string(revision_ + 1)}});
    }
    json success = json::array();
    for (const auto& [k, v] : writes_) {
      if (v)
        success.push_back({{"request_put", {{"key", base64(k)}, {"value", base64(*v)}}}});
      else
        success.push_back({{"request_delete_range", {{"key", base64(k)}}}});
    }
    if (success.empty()) return TxnStatus::Committed;
    bool sent = false;
    try {
      const json r = core_->call("/v3/kv/txn", {{"compare", compare}, {"success", success}}, &sent);
      return r.value("succeeded", false) ? TxnStatus::Committed : TxnStatus::Conflict;
    } catch (const Error&) {
      return sent ? TxnStatus::Unknown : TxnStatus::Failed;
    }
  }

  std::shared_ptr<Core> core_;
  int64_t revision_ = 0;
  std::map<std::string, int64_t> reads_;  // key -> mod_revision read (0: absent)
};

class EtcdTxnStore final : public TxnStore {
 public:
  explicit EtcdTxnStore(const std::string& endpoint) : core_(std::make_shared<Core>(endpoint)) {
    core_->call("/v3/kv/range", {{"key", base64("\x01")}, {"count_only", true}});
  }
  std::unique_ptr<Txn> begin() override { return std::make_unique<EtcdTxn>(core_, true); }
  std::unique_ptr<ReadTxn> begin_read() override { return std::make_unique<EtcdTxn>(core_, false); }
  void inject(TxnStatus what, int count, bool applied) override {
    core_->injection.set(what, count, applied);
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<TxnStore> open_etcd_txn_store(const std::string& endpoint) {
  return std::make_unique<EtcdTxnStore>(endpoint);
}

}  // namespace ff::fs
