// Runs the fireflyer binary (FF_CLI_PATH) for the CLI tests.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace ff::testing {

struct CliRun {
  int status;       // the exit status, -1 if killed by a signal
  std::string out;  // what reached the pipe (see run_cli)
};

// Runs `fireflyer <args> <redirect>` through the shell and captures what reaches the pipe: by
// default stdout and stderr together; "2>/dev/null" keeps stdout only, "2>&1 >/dev/null" stderr
// only.
inline CliRun run_cli(const std::string& args, const std::string& redirect = "2>&1") {
  const std::string cmd = std::string(FF_CLI_PATH) + " " + args + " " + redirect;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace ff::testing
