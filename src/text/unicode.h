// UTF-8 and Unicode helpers for the tokenizer: code point decoding, lossy UTF-8 repair with the
// same replacement rule as Rust's String::from_utf8_lossy (what HF tokenizers' decoders use), the
// Unicode White_Space property, and GPT-2's byte-level alphabet (each byte 0..255 is shown as one
// printable code point: '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the other 68
// bytes become U+0100.. in byte order, so a space is U+0120 'Ġ' and a newline U+010A 'Ċ').
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ff {

// Decodes the code point starting at s[i] and advances i past it. s must be valid UTF-8.
char32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, char32_t cp);

// Byte offset of the first byte that does not belong to a well-formed UTF-8 sequence (overlongs,
// surrogates and code points above U+10FFFF are ill-formed), or npos when s is valid.
size_t utf8_find_invalid(std::string_view s);

// Appends `bytes` to `out` as valid UTF-8, replacing each maximal ill-formed subpart with U+FFFD
// (Unicode's "substitution of maximal subparts", as Rust's from_utf8_lossy does). When
// `at_end` is false, a trailing sequence that is incomplete but could still become valid is left
// unconsumed. Returns the number of bytes consumed.
size_t utf8_lossy_append(std::string_view bytes, bool at_end, std::string& out);

// Unicode White_Space (what Rust's char::is_whitespace and regex \s match).
bool is_unicode_white_space(char32_t cp);

// GPT-2 byte-level alphabet: the UTF-8 text of the code point standing for each byte, and back.
const std::array<std::string, 256>& byte_level_alphabet();
// The byte a code point stands for, or -1 if it is not in the alphabet.
int byte_level_byte(char32_t cp);

}  // namespace ff
