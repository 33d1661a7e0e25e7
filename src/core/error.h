// Errors: one exception type for the whole code base. Functions that can fail on input throw
// ff::Error with a one-line message naming the thing at fault (file, tensor, field, argument).
// The CLI prints it and exits non-zero; the server maps it to a 4xx.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ff {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ff

// Checks an input condition; on failure throws ff::Error with the formatted message.
#define FF_CHECK(cond, ...)               \
  do {                                    \
    if (!(cond)) ::ff::fail(__VA_ARGS__); \
  } while (0)
