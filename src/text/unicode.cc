#include "text/unicode.h"

namespace ff {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed sequence a lead byte starts and the allowed range of its second
// byte (Unicode table 3-7); length 0 for a byte that can never start a sequence.
struct LeadInfo {
  int len;
  uint8_t lo, hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of s[i..] that form a valid prefix of a sequence (>= 1 when the lead byte is
// valid), and whether that prefix is a complete sequence.
struct Prefix {
  size_t valid;
  bool complete;
};

Prefix scan_sequence(std::string_view s, size_t i) {
  const LeadInfo info = lead_info(uint8_t(s[i]));
  if (info.len == 0) return {0, false};
  if (info.len == 1) return {1, true};
  size_t n = 1;
  for (; n < size_t(info.len); ++n) {
    if (i + n >= s.size()) return {n, false};
    const uint8_t b = uint8_t(s[i + n]);
    const bool ok = n == 1 ? (b >= info.lo && b <= info.hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {n, false};
  }
  return {n, true};
}

std::array<std::string, 256> make_byte_level_alphabet() {
  std::array<std::string, 256> out;
  int next_extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const char32_t cp = printable ? char32_t(b) : char32_t(256 + next_extra++);
    utf8_append(out[b], cp);
  }
  return out;
}

}  // namespace

char32_t utf8_next(std::string_view s, size_t& i) {
  const uint8_t b0 = uint8_t(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t cp = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

size_t utf8_find_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (uint8_t(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const Prefix p = scan_sequence(s, i);
    if (!p.complete) return i;
    i += p.valid;
  }
  return std::string_view::npos;
}

size_t utf8_lossy_append(std::string_view bytes, bool at_end, std::string& out) {
  size_t i = 0, run = 0;  // [run, i) is valid text not yet copied
  while (i < bytes.size()) {
    if (uint8_t(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const Prefix p = scan_sequence(bytes, i);
    if (p.complete) {
      i += p.valid;
      continue;
    }
    out.append(bytes.substr(run, i - run));
    const bool truncated = p.valid > 0 && i + p.valid == bytes.size();
    if (truncated && !at_end) return i;
    out.append(kReplacement);
    i += p.valid > 0 ? p.valid : 1;
    run = i;
  }
  out.append(bytes.substr(run, i - run));
  return i;
}

bool is_unicode_white_space(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

const std::array<std::string, 256>& byte_level_alphabet() {
  static const std::array<std::string, 256> alphabet = make_byte_level_alphabet();
  return alphabet;
}

int byte_level_byte(char32_t cp) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t;
    t.fill(-1);
    const auto& alphabet = byte_level_alphabet();
    for (int b = 0; b < 256; ++b) {
      size_t i = 0;
      t[utf8_next(alphabet[b], i)] = int16_t(b);
    }
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

}  // namespace ff
