// The chat page in a real headless browser (Debian's chromium), driven over the DevTools
// protocol (--remote-debugging-pipe: JSON messages ending in NUL, commands on fd 3, replies and
// events on fd 4): type a message, press Enter, watch the reply stream in, and compare it with
// the API's answer to the same conversation. Skips when chromium is not installed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

std::string find_chromium() {
  if (const char* env = std::getenv("FF_CHROMIUM")) return env;
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

class Browser {
 public:
  Browser(const std::string& binary, const std::string& profile_dir) {
    int to_chrome[2], from_chrome[2];
    if (::pipe(to_chrome) != 0 || ::pipe(from_chrome) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(to_chrome[0], 3);
      ::dup2(from_chrome[1], 4);
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 1);
      ::dup2(null, 2);
      for (int fd = 5; fd < 1024; ++fd) ::close(fd);
      const std::string profile = "--user-data-dir=" + profile_dir;
      ::execl(binary.c_str(), binary.c_str(), "--headless", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
              "--remote-debugging-pipe", profile.c_str(), "about:blank", (char*)nullptr);
      ::_exit(127);
    }
    ::close(to_chrome[0]);
    ::close(from_chrome[1]);
    out_ = to_chrome[1];
    in_ = from_chrome[0];
  }
  ~Browser() {
    if (pid_ > 0) {
      call("Browser.close", json::object(), "", 2);
      for (int i = 0; i < 100; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        ::usleep(20000);
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    if (out_ >= 0) ::close(out_);
    if (in_ >= 0) ::close(in_);
  }
  bool ok() const { return pid_ > 0; }

  // Sends a command and waits (at most `timeout_s`) for its reply; events are skipped.
  json call(const std::string& method, const json& params, const std::string& session = "",
            double timeout_s = 20) {
    const int id = ++next_id_;
    json msg = {{"id", id}, {"method", method}, {"params", params}};
    if (!session.empty()) msg["sessionId"] = session;
    const std::string text = msg.dump() + std::string(1, '\0');
    if (::write(out_, text.data(), text.size()) != ssize_t(text.size())) return nullptr;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      size_t nul;
      while ((nul = buffer_.find('\0')) != std::string::npos) {
        json reply = json::parse(buffer_.substr(0, nul), nullptr, false);
        buffer_.erase(0, nul + 1);
        if (reply.is_object() && reply.value("id", -1) == id) return reply;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return nullptr;
      pollfd p{in_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) return nullptr;
      char chunk[65536];
      const ssize_t n = ::read(in_, chunk, sizeof chunk);
      if (n <= 0) return nullptr;
      buffer_.append(chunk, size_t(n));
    }
  }

  // Evaluates a JS expression in the page and returns its value (null on failure).
  json eval(const std::string& session, const std::string& expr) {
    const json r =
        call("Runtime.evaluate", {{"expression", expr}, {"returnByValue", true}}, session);
    if (r.is_null() || !r.contains("result") || !r["result"].contains("result")) return nullptr;
    return r["result"]["result"].value("value", json(nullptr));
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
  int next_id_ = 0;
  std::string buffer_;
};

TEST(ChatPage, TypeMessageSeeStreamedAnswer) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "chromium not installed (apt-get install chromium): headless-browser test "
                    "of the chat page skipped";
  TestServer srv;
  const std::string profile =
      (std::filesystem::temp_directory_path() / ("ff-chat-page-" + std::to_string(::getpid())))
          .string();
  {
    Browser browser(chromium, profile);
    ASSERT_TRUE(browser.ok());
    const json target = browser.call(
        "Target.createTarget", {{"url", "http://127.0.0.1:" + std::to_string(srv.port()) + "/"}});
    ASSERT_FALSE(target.is_null()) << "chromium did not answer over the DevTools pipe";
    const json attached = browser.call(
        "Target.attachToTarget", {{"targetId", target["result"]["targetId"]}, {"flatten", true}});
    ASSERT_FALSE(attached.is_null());
    const std::string session = attached["result"]["sessionId"];
    const auto wait_for = [&](const std::string& expr, double seconds) {
      for (int i = 0; i < int(seconds * 20); ++i) {
        if (browser.eval(session, expr) == json(true)) return true;
        ::usleep(50000);
      }
      return false;
    };
    ASSERT_TRUE(
        wait_for("document.readyState === 'complete' && "
                 "document.getElementById('model').textContent === 'default-model'",
                 20));
    // Type the message and press Enter, as a user would.
    browser.eval(session, "document.getElementById('input').focus()");
    browser.call("Input.insertText", {{"text", "Hello, who are you?"}}, session);
    ASSERT_EQ(browser.eval(session, "document.getElementById('input').value"),
              "Hello, who are you?");
    for (const char* type : {"keyDown", "keyUp"})
      browser.call("Input.dispatchKeyEvent",
                   {{"type", type},
                    {"key", "Enter"},
                    {"code", "Enter"},
                    {"windowsVirtualKeyCode", 13},
                    {"nativeVirtualKeyCode", 13}},
                   session);
    ASSERT_TRUE(wait_for("document.body.dataset.state === 'done'", 30));
    const json reply = browser.eval(session, "document.getElementById('reply-1').textContent");
    const json chunks =
        browser.eval(session, "Number(document.getElementById('reply-1').dataset.chunks)");
    const json user = browser.eval(session, "document.querySelector('.msg.user').textContent");
    const json cls = browser.eval(session, "document.getElementById('reply-1').className");
    EXPECT_EQ(user, "Hello, who are you?");
    EXPECT_EQ(cls, "msg assistant");
    ASSERT_TRUE(reply.is_string());
    // The page asked for temperature 0 and 128 tokens: the API's answer to the same message.
    const json api = json::parse(
        srv.post("/v1/chat/completions",
                 {{"messages", {{{"role", "user"}, {"content", "Hello, who are you?"}}}},
                  {"temperature", 0},
                  {"max_tokens", 128}})
            .body);
    const std::string expected = api["choices"][0]["message"]["content"];
    EXPECT_FALSE(expected.empty());
    EXPECT_EQ(reply.get<std::string>(), expected);
    EXPECT_GT(chunks.get<double>(), 1) << "the reply did not arrive in streamed pieces";
  }
  std::filesystem::remove_all(profile);
  EXPECT_EQ(srv.wait_pages_released(), 0);
}

}  // namespace
}  // namespace ff::server::testing
