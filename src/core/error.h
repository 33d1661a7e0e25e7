// Errors. Functions that can fail on input throw ff::Error with a one-line message naming the
// thing at fault (file, tensor, field, argument); the CLI prints it and exits non-zero, the server
// maps it to a 4xx. A broken internal invariant (a bug, never the caller's input) throws
// ff::InternalError instead, which the server maps to a 5xx and the engine confines to the
// requests it concerns. The two are distinct types so that neither is mistaken for the other.
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

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

// Text from an input file as it may appear in a message: control bytes (a newline, ...) become
// \xNN, so that the message stays one line.
inline std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    if (uint8_t(c) < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", uint8_t(c));
    else
      out += c;
  }
  return out;
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
