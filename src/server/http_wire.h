// Pieces of the HTTP/1.1 wire format shared by the server loop and the client.
#pragma once
#include <algorithm>
#include <map>
#include <string>
#include <string_view>

namespace ff::server::wire {

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

inline std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

// Parses the "Name: value" lines after the first line of `head` (which ends before the blank
// line) into `headers`, names lower-cased. Returns false on a line without a colon.
inline bool parse_headers(std::string_view head, std::map<std::string, std::string>* headers) {
  size_t pos = head.find("\r\n");
  bool ok = true;
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    const size_t next = head.find("\r\n", pos + 2);
    std::string_view line =
        head.substr(pos + 2, next == std::string_view::npos ? head.npos : next - pos - 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      ok = false;
    } else {
      (*headers)[lower(std::string(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    }
    pos = next;
  }
  return ok;
}

}  // namespace ff::server::wire
