// Runs this test binary again in a child process with one environment variable set and one
// (disabled) test selected, for checking what a process reads from its environment at start-up.
#pragma once
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

namespace ff::testing {

// `name`='`value`' <this binary> --gtest_filter=`test` (run even though disabled); returns its
// output (stdout and stderr), or "" when it cannot be started.
inline std::string run_self_with_env(const std::string& name, const std::string& value,
                                     const std::string& test) {
  std::array<char, 4096> self{};
  const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) return "";
  const std::string cmd = name + "='" + value + "' '" + std::string(self.data(), size_t(n)) +
                          "' --gtest_also_run_disabled_tests --gtest_filter=" + test + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  return out;
}

}  // namespace ff::testing
