// A PCRE2 regex that matches what HF tokenizers' Oniguruma regexes match.
//
// tokenizer.json patterns are written for Oniguruma (Ruby syntax, UTF-8). PCRE2 with UTF + UCP
// reads the same syntax; the classes whose Unicode meaning differs are rewritten before
// compiling: \s / \S (Oniguruma: White_Space; PCRE2 also counts U+180E), \w / \W (Oniguruma:
// letters, marks, numbers, connector punctuation; PCRE2 10.42: letters, numbers, '_') and \h / \H
// (Oniguruma: a hex digit; PCRE2: horizontal space). Iteration follows the `onig` crate's
// find_iter: after a match ending at e, the search resumes at e, and an empty match right where the
// previous match ended is skipped by stepping one code point.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ff {

class UnicodeRegex {
 public:
  // Throws ff::Error "<context>: bad regex ...: <PCRE2 message>" when the pattern does not compile.
  UnicodeRegex(std::string_view pattern, std::string_view context);
  ~UnicodeRegex();
  UnicodeRegex(UnicodeRegex&&) noexcept;
  UnicodeRegex& operator=(UnicodeRegex&&) noexcept;

  // Appends the [begin, end) byte offsets of every match in text, in order. text must be valid
  // UTF-8 (not checked again here).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  // The pattern that matches `literal` exactly.
  static std::string escape(std::string_view literal);
  // The pattern rewritten for PCRE2 (see the file comment); exposed for tests.
  static std::string from_oniguruma(std::string_view pattern);

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::string context_;
};

// Whether the code point at the start / end of s is a word character as Rust's regex \w sees it
// (alphabetic, mark, decimal number, connector punctuation, join control); used by the
// single_word flag of added tokens.
bool starts_with_word_char(std::string_view s);
bool ends_with_word_char(std::string_view s);

}  // namespace ff
