#include "text/unicode_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace ff {
namespace {

// Unicode White_Space, the set Oniguruma's \s matches.
constexpr std::string_view kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
constexpr std::string_view kOnigWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kHexDigit = "0-9A-Fa-f";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread JIT stack: PCRE2's default 32 KiB is too small for long runs of `\s+(?!\S)`.
struct ThreadMatchContext {
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  ThreadMatchContext() {
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchContext() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
  }
};

pcre2_match_context* thread_match_context() {
  thread_local ThreadMatchContext tmc;
  return tmc.context;
}

pcre2_code* compile(std::string_view pattern, std::string_view context) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!code) {
    fail("{}: bad regex '{}' at offset {}: {}", context, pattern, err_offset, pcre2_message(err));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when unavailable
  return code;
}

// Runs one match at `start`; returns false when there is none.
bool match_once(const pcre2_code* code, pcre2_match_data* md, std::string_view text, size_t start,
                uint32_t options, std::string_view context) {
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  pcre2_match_context* mc = thread_match_context();
  int rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK, md, mc);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                     md, mc);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) fail("{}: regex match failed: {}", context, pcre2_message(rc));
  return true;
}

size_t code_point_length(uint8_t lead) {
  return lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
}

}  // namespace

struct UnicodeRegex::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

UnicodeRegex::UnicodeRegex(std::string_view pattern, std::string_view context)
    : compiled_(std::make_unique<Compiled>()), context_(context) {
  compiled_->code = compile(from_oniguruma(pattern), context);
}

UnicodeRegex::~UnicodeRegex() = default;
UnicodeRegex::UnicodeRegex(UnicodeRegex&&) noexcept = default;
UnicodeRegex& UnicodeRegex::operator=(UnicodeRegex&&) noexcept = default;

void UnicodeRegex::find_all(std::string_view text,
                            std::vector<std::pair<size_t, size_t>>& out) const {
  const pcre2_code* code = compiled_->code;
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  FF_CHECK(md != nullptr, "{}: out of memory for regex match data", context_);
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.get());
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size() && match_once(code, md.get(), text, pos, 0, context_)) {
    const size_t begin = ovector[0], end = ovector[1];
    if (begin == end && have_last && last_end == end) {
      if (pos >= text.size()) break;
      pos += code_point_length(uint8_t(text[pos]));
      continue;
    }
    out.emplace_back(begin, end);
    pos = end;
    have_last = true;
    last_end = end;
  }
}

std::string UnicodeRegex::escape(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() + 4);
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ \t\n\r\f\v").find(c) != std::string_view::npos) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\f') {
        out += "\\f";
      } else if (c == '\v') {
        out += "\\x{0B}";
      } else {
        out += '\\';
        out += c;
      }
    } else {
      out += c;
    }
  }
  return out;
}

std::string UnicodeRegex::from_oniguruma(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      auto set = [&](std::string_view members, bool negated) {
        if (in_class && !negated) {
          out += members;
        } else if (in_class) {
          out += '\\';  // a negated class inside a class cannot be spelled out; keep PCRE2's
          out += e;
        } else {
          out += negated ? "[^" : "[";
          out += members;
          out += ']';
        }
      };
      if (e == 's' || e == 'S') {
        set(kWhiteSpace, e == 'S');
      } else if (e == 'w' || e == 'W') {
        set(kOnigWord, e == 'W');
      } else if (e == 'h' || e == 'H') {
        set(kHexDigit, e == 'H');
      } else if (e == 'Q') {
        const size_t stop = p.find("\\E", i + 1);
        const size_t to = stop == std::string_view::npos ? p.size() : stop + 2;
        out += p.substr(i - 1, to - (i - 1));
        i = to - 1;
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      const size_t stop = p.find(":]", i + 2);
      if (stop != std::string_view::npos) {
        out += p.substr(i, stop + 2 - i);
        i = stop + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

namespace {

bool is_word_char_at(std::string_view s, size_t pos) {
  // Rust regex's Unicode \w; Other_Alphabetic symbols (circled / squared letters) listed.
  static const std::unique_ptr<pcre2_code, void (*)(pcre2_code*)> code(
      compile("[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}\\x{24B6}-\\x{24E9}"
              "\\x{1F130}-\\x{1F149}\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}]",
              "word character class"),
      pcre2_code_free);
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code.get(), nullptr), pcre2_match_data_free);
  return match_once(code.get(), md.get(), s, pos, PCRE2_ANCHORED, "word character class");
}

}  // namespace

bool starts_with_word_char(std::string_view s) {
  return !s.empty() && is_word_char_at(s, 0);
}

bool ends_with_word_char(std::string_view s) {
  if (s.empty()) return false;
  size_t pos = s.size() - 1;
  while (pos > 0 && (uint8_t(s[pos]) & 0xC0) == 0x80) --pos;
  return is_word_char_at(s, pos);
}

}  // namespace ff
