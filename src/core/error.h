// Errors. Functions that can fail on input throw ff::Error with a one-line message naming the
// thing at fault (file, tensor, field, argument); the CLI prints it and exits non-zero, the server
// maps it to a 4xx. A broken internal invariant (a bug, never the caller's input) throws
// ff::InternalError instead, which the server maps to a 5xx and the engine confines to the
// requests it concerns. The two are distinct types so that neither is mistaken for the other.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ff {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& msg) : std::logic_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail_invariant(fmt::format_string<Args...> f, Args&&... args) {
  throw InternalError(fmt::format(f, std::forward<Args>(args)...));
}

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

// Checks an internal invariant; on failure throws ff::InternalError with the formatted message.
#define FF_INVARIANT(cond, ...)                     \
  do {                                              \
    if (!(cond)) ::ff::fail_invariant(__VA_ARGS__); \
  } while (0)
