// `fireflyer serve` as a subprocess: prints its URL and a curl example, answers on a free
// loopback port, exits cleanly on SIGTERM; a bad model directory is a one-line error, exit 1.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>

#include "server_test_util.h"

namespace ff::server::testing {
namespace {

TEST(ServeCli, StartsAnswersAndStops) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    const std::string model = fixture("default-model");
    ::execl(FF_CLI_PATH, FF_CLI_PATH, "serve", "--model", model.c_str(), "--host", "127.0.0.1",
            "--port", "0", (char*)nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  std::smatch m;
  const std::regex url(R"(http://127\.0\.0\.1:(\d+))");
  for (int i = 0;
       i < 300 && !(std::regex_search(text, m, url) && text.find("curl") != std::string::npos);
       ++i) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, size_t(n));
    }
  }
  ASSERT_TRUE(std::regex_search(text, m, url)) << text;
  EXPECT_NE(text.find("curl"), std::string::npos);
  const int port = std::stoi(m[1]);
  HttpResult health = http_request("127.0.0.1", port, "GET", "/health", {}, {}, 10);
  EXPECT_EQ(health.status, 200);
  HttpResult r =
      http_request("127.0.0.1", port, "POST", "/v1/completions",
                   R"({"model": "default-model", "prompt": "Mr. Darcy", "max_tokens": 4})", {}, 30);
  EXPECT_EQ(r.status, 200) << r.body;
  ::kill(pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::usleep(25000);
  if (::waitpid(pid, &status, WNOHANG) == 0 && !WIFEXITED(status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "fireflyer serve did not stop on SIGTERM";
  }
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ::close(out[0]);
}

TEST(ServeCli, BadModelDirIsAnError) {
  const std::string cmd =
      std::string(FF_CLI_PATH) + " serve --model /nonexistent/dir --port 0 2>&1";
  int status = 0;
  const std::string out = run_command(cmd, &status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
}

}  // namespace
}  // namespace ff::server::testing
