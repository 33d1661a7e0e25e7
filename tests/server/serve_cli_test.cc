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

// Starts `fireflyer serve` on a free port with `env` (NAME=value, may be empty) added; returns
// its pid, and the port (0 when it printed none) and everything it printed in *port / *text.
// ranks > 0: under mpirun with that many ranks and --ep (the experts spread over them).
pid_t start_serve(const std::string& env, int* port, std::string* text, int ranks = 0) {
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  EXPECT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    if (!env.empty()) ::putenv(const_cast<char*>(env.c_str()));
    const std::string model = fixture("default-model");
    if (ranks > 0) {
      for (const char* e :
           {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
            "OMPI_MCA_rmaps_base_oversubscribe=1", "OMPI_MCA_mpi_yield_when_idle=1",
            "OMPI_MCA_btl=self,vader", "OMPI_MCA_btl_vader_single_copy_mechanism=none"})
        ::putenv(const_cast<char*>(e));
      const std::string n = std::to_string(ranks);
      ::execl(FF_MPIEXEC, FF_MPIEXEC, "--timeout", "120", "-np", n.c_str(), FF_CLI_PATH, "serve",
              "--model", model.c_str(), "--host", "127.0.0.1", "--port", "0", "--ep",
              (char*)nullptr);
    }
    ::execl(FF_CLI_PATH, FF_CLI_PATH, "serve", "--model", model.c_str(), "--host", "127.0.0.1",
            "--port", "0", (char*)nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::smatch m;
  const std::regex url(R"(http://127\.0\.0\.1:(\d+))");
  for (int i = 0;
       i < 300 && !(std::regex_search(*text, m, url) && text->find("curl") != std::string::npos);
       ++i) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      text->append(buf, size_t(n));
    }
  }
  ::close(out[0]);
  *port = std::regex_search(*text, m, url) ? std::stoi(m[1]) : 0;
  return pid;
}

// SIGTERM, then the exit status (-1 after a SIGKILL when it did not stop).
int stop_serve(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::usleep(25000);
  if (::waitpid(pid, &status, WNOHANG) == 0 && !WIFEXITED(status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ServeCli, StartsAnswersAndStops) {
  int port = 0;
  std::string text;
  const pid_t pid = start_serve("", &port, &text);
  ASSERT_GT(port, 0) << text;
  EXPECT_NE(text.find("curl"), std::string::npos);
  // It raised its open-file limit and says how many connections that allows.
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(open-file limit \d+, up to \d+ connections)")))
      << text;
  HttpResult health = http_request("127.0.0.1", port, "GET", "/health", {}, {}, 10);
  EXPECT_EQ(health.status, 200);
  HttpResult r =
      http_request("127.0.0.1", port, "POST", "/v1/completions",
                   R"({"model": "default-model", "prompt": "Mr. Darcy", "max_tokens": 4})", {}, 30);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(stop_serve(pid), 0) << "fireflyer serve did not stop cleanly on SIGTERM";
}

// FF_FAULTS arms a fault point in the process: the named request fails with a 500, others pass.
TEST(ServeCli, FaultsFromTheEnvironment) {
  int port = 0;
  std::string text;
  const pid_t pid = start_serve("FF_FAULTS=model.forward=doomed", &port, &text);
  ASSERT_GT(port, 0) << text;
  const std::string body = R"({"prompt": "Mr. Darcy", "max_tokens": 4})";
  HttpResult bad = http_request("127.0.0.1", port, "POST", "/v1/completions", body, {}, 30,
                                {"X-Request-Id: doomed"});
  EXPECT_EQ(bad.status, 500) << bad.body;
  EXPECT_NE(bad.body.find("fault injected at model.forward (doomed)"), std::string::npos)
      << bad.body;
  HttpResult ok = http_request("127.0.0.1", port, "POST", "/v1/completions", body, {}, 30,
                               {"X-Request-Id: fine"});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(stop_serve(pid), 0);
  // A malformed value is refused at start-up with a one-line error.
  int status = 0;
  const std::string out =
      run_command("FF_FAULTS='x*0' " + std::string(FF_CLI_PATH) + " serve --model " +
                      fixture("default-model") + " --port 0 2>&1",
                  &status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(out, "error: FF_FAULTS: 'x*0': the count after '*' must be an integer >= 1\n");
}

// `serve --ep` under mpirun: rank 0 listens, the routed experts run on both ranks, and the
// greedy completion is the one a single process gives. (mpirun itself exits non-zero when it
// is signalled, so only the answers are compared.)
TEST(ServeCli, ExpertParallelAnswersAsOneProcess) {
  const std::string body = R"({"prompt": "Mr. Darcy", "max_tokens": 8, "temperature": 0})";
  const auto completion = [&](int ranks) {
    int port = 0;
    std::string text;
    const pid_t pid = start_serve("", &port, &text, ranks);
    EXPECT_GT(port, 0) << text;
    HttpResult r;
    if (port > 0) r = http_request("127.0.0.1", port, "POST", "/v1/completions", body, {}, 60);
    stop_serve(pid);
    EXPECT_EQ(r.status, 200) << r.body;
    const auto at = r.body.find("\"text\":");
    return at == std::string::npos ? std::string() : r.body.substr(at, r.body.find('}', at) - at);
  };
  const std::string one = completion(0), two = completion(2);
  EXPECT_FALSE(one.empty());
  EXPECT_EQ(two, one);
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
