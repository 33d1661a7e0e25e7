#include "text/stop.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace ff {
namespace {

struct Streamed {
  std::vector<std::string> chunks;  // what push() returned, one per piece pushed
  std::string flushed;
  FinishReason reason = FinishReason::None;
  std::string all() const {
    std::string s;
    for (const auto& c : chunks) s += c;
    return s + flushed;
  }
};

// Pushes pieces with token ids 1000 + index until the checker finishes, then flushes.
Streamed feed(StopChecker& checker, const std::vector<std::string>& pieces) {
  Streamed run;
  for (size_t i = 0; i < pieces.size() && checker.finished() == FinishReason::None; ++i)
    run.chunks.push_back(checker.push(int32_t(1000 + i), pieces[i]));
  run.flushed = checker.flush();
  run.reason = checker.finished();
  EXPECT_EQ(checker.text(), run.all());
  return run;
}

StopConditions stops(std::vector<std::string> s) {
  StopConditions c;
  c.stop_strings = std::move(s);
  return c;
}

TEST(Stop, NoConditionsPassesTextThrough) {
  StopChecker checker(StopConditions{});
  const Streamed run = feed(checker, {"Hello", ", ", "world"});
  EXPECT_EQ(run.chunks, (std::vector<std::string>{"Hello", ", ", "world"}));
  EXPECT_EQ(run.reason, FinishReason::None);
  EXPECT_EQ(checker.num_tokens(), 3);
  EXPECT_EQ(checker.matched_stop_string(), -1);
}

TEST(Stop, StopStringAcrossTokensIsHeldBackAndDropped) {
  StopChecker checker(stops({"world"}));
  const Streamed run = feed(checker, {"Hello", " wor", "ld!", "never"});
  // " wor" could start "world": only " " goes out; "ld!" completes it.
  EXPECT_EQ(run.chunks, (std::vector<std::string>{"Hello", " ", ""}));
  EXPECT_EQ(run.all(), "Hello ");
  EXPECT_EQ(run.reason, FinishReason::Stop);
  EXPECT_EQ(checker.num_tokens(), 3);
  EXPECT_EQ(checker.matched_stop_string(), 0);
  EXPECT_THROW(checker.push(1, "x"), Error);
}

TEST(Stop, HeldTextIsReleasedWhenItDivergesOrAtFlush) {
  StopChecker checker(stops({"world"}));
  EXPECT_EQ(checker.push(1, "wo"), "");
  EXPECT_EQ(checker.push(2, "w"), "wo");  // "wow": only the last "w" can still start "world"
  EXPECT_EQ(checker.push(3, "or"), "");
  EXPECT_EQ(checker.finished(), FinishReason::None);
  EXPECT_EQ(checker.flush(), "wor");
  EXPECT_EQ(checker.text(), "wowor");
  EXPECT_EQ(checker.flush(), "");
}

TEST(Stop, MaxTokensReleasesHeldText) {
  StopConditions c = stops({"cd"});
  c.max_tokens = 2;
  StopChecker checker(c);
  EXPECT_EQ(checker.push(1, "ab"), "ab");
  EXPECT_EQ(checker.push(2, "xc"), "xc");  // "c" could start "cd" but no token will follow
  EXPECT_EQ(checker.finished(), FinishReason::Length);
  EXPECT_STREQ(finish_reason_name(checker.finished()), "length");
  EXPECT_EQ(checker.flush(), "");
  EXPECT_EQ(checker.text(), "abxc");
  EXPECT_EQ(checker.num_tokens(), 2);
}

TEST(Stop, StopStringInTheLastAllowedTokenWins) {
  StopConditions c = stops({"END"});
  c.max_tokens = 2;
  StopChecker checker(c);
  const Streamed run = feed(checker, {"a", "bEND"});
  EXPECT_EQ(run.all(), "ab");
  EXPECT_EQ(run.reason, FinishReason::Stop);
}

TEST(Stop, EosStopsWithoutEmittingItsPiece) {
  StopConditions c = stops({"xyz"});
  c.eos_ids = {7, 9};
  StopChecker checker(c);
  EXPECT_EQ(checker.push(1, "abc x"), "abc ");
  EXPECT_EQ(checker.push(9, "<｜end▁of▁sentence｜>"), "x");  // held "x" released, EOS text not
  EXPECT_EQ(checker.finished(), FinishReason::Stop);
  EXPECT_STREQ(finish_reason_name(checker.finished()), "stop");
  EXPECT_EQ(checker.matched_eos(), 9);
  EXPECT_EQ(checker.matched_stop_string(), -1);
  EXPECT_EQ(checker.text(), "abc x");
  EXPECT_EQ(checker.num_tokens(), 2);
}

TEST(Stop, EosAsTheFirstToken) {
  StopConditions c;
  c.eos_ids = {1};
  c.max_tokens = 1;
  StopChecker checker(c);
  EXPECT_EQ(checker.push(1, "</s>"), "");
  EXPECT_EQ(checker.finished(), FinishReason::Stop);  // EOS beats the length limit
}

TEST(Stop, StopStringAtTheVeryStart) {
  StopChecker checker(stops({"###"}));
  const Streamed run = feed(checker, {"###", "more"});
  EXPECT_EQ(run.all(), "");
  EXPECT_EQ(run.reason, FinishReason::Stop);
  StopChecker split(stops({"###"}));
  EXPECT_EQ(feed(split, {"#", "#", "#tail"}).all(), "");
}

TEST(Stop, TextAfterTheStopStringInTheSamePieceIsDropped) {
  StopChecker checker(stops({"STOP"}));
  EXPECT_EQ(checker.push(1, "foo STOP bar"), "foo ");
  EXPECT_EQ(checker.text(), "foo ");
}

TEST(Stop, OverlappingCandidates) {
  // "ab" completes before "bc" could, however the text is split.
  for (const auto& pieces :
       std::vector<std::vector<std::string>>{{"a", "b", "c"}, {"abc"}, {"ab", "c"}}) {
    StopChecker checker(stops({"bc", "ab"}));
    const Streamed run = feed(checker, pieces);
    EXPECT_EQ(run.all(), "");
    EXPECT_EQ(checker.matched_stop_string(), 1);
  }
  // The earliest end wins over the earliest start: "bc" ends before "abcd" would.
  for (const auto& pieces :
       std::vector<std::vector<std::string>>{{"x", "a", "b", "c", "d"}, {"xabcd"}}) {
    StopChecker checker(stops({"abcd", "bc"}));
    EXPECT_EQ(feed(checker, pieces).all(), "xa");
    EXPECT_EQ(checker.matched_stop_string(), 1);
  }
  // Same end: the longer (earlier-starting) one wins.
  StopChecker same_end(stops({"c", "abc"}));
  EXPECT_EQ(feed(same_end, {"zab", "c"}).all(), "z");
  EXPECT_EQ(same_end.matched_stop_string(), 1);
}

TEST(Stop, HoldsTheLongestPossibleStopPrefix) {
  StopChecker checker(stops({"aab", "ab"}));
  EXPECT_EQ(checker.push(1, "xa"), "x");
  EXPECT_EQ(checker.push(2, "a"), "");   // "aa" may start "aab"
  EXPECT_EQ(checker.push(3, "a"), "a");  // "aaa": keep "aa"
  EXPECT_EQ(checker.push(4, "b"), "");   // "aab" and "ab" both end here; "aab" starts first
  EXPECT_EQ(checker.text(), "xa");
  EXPECT_EQ(checker.matched_stop_string(), 0);
}

TEST(Stop, MultibyteStopStringSplitInsideACharacter) {
  // "。" is E3 80 82; the tokens split it after its first two bytes.
  StopChecker checker(stops({"。"}));
  EXPECT_EQ(checker.push(1, "你好"), "你好");
  EXPECT_EQ(checker.push(2, "\xE3\x80"), "");
  EXPECT_EQ(checker.push(3, "\x82再见"), "");
  EXPECT_EQ(checker.finished(), FinishReason::Stop);
  EXPECT_EQ(checker.text(), "你好");
}

TEST(Stop, IncompleteUtf8IsHeldUntilTheCharacterCompletes) {
  StopChecker checker(StopConditions{});
  EXPECT_EQ(checker.push(1, "caf\xC3"), "caf");
  EXPECT_EQ(checker.push(2, "\xA9 "), "\xC3\xA9 ");  // é
  EXPECT_EQ(checker.push(3, "\xF0\x9F"), "");        // 😀 = F0 9F 98 80
  EXPECT_EQ(checker.push(4, "\x98"), "");
  EXPECT_EQ(checker.push(5, "\x80!"), "\xF0\x9F\x98\x80!");
  EXPECT_EQ(checker.push(6, "\xE2\x82"), "");
  EXPECT_EQ(checker.flush(), "\xE2\x82");  // released as-is at the end
  EXPECT_EQ(checker.text(), "caf\xC3\xA9 \xF0\x9F\x98\x80!\xE2\x82");
}

TEST(Stop, MultibyteStopPrefixHeldBack) {
  StopChecker checker(stops({"ü!"}));
  EXPECT_EQ(checker.push(1, "grün"), "grün");
  EXPECT_EQ(checker.push(2, "ü"), "");
  EXPECT_EQ(checker.push(3, "?"), "ü?");
  EXPECT_EQ(checker.push(4, "ü!"), "");
  EXPECT_EQ(checker.text(), "grünü?");
}

TEST(Stop, InvalidConditionsNameTheField) {
  auto message = [](StopConditions c) -> std::string {
    try {
      StopChecker checker(std::move(c));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(stops({"ok", ""})).find("stop string 1 is empty"), std::string::npos);
  EXPECT_NE(message(stops(std::vector<std::string>(17, "x"))).find("stop strings"),
            std::string::npos);
  EXPECT_NE(message(stops({std::string(2000, 'x')})).find("stop string 0"), std::string::npos);
  StopConditions c;
  c.max_tokens = 0;
  EXPECT_NE(message(c).find("max_tokens"), std::string::npos);
  c.max_tokens = -2;
  EXPECT_NE(message(c).find("max_tokens"), std::string::npos);
  EXPECT_EQ(message(stops(std::vector<std::string>(16, "x"))), "");
}

// Reference on the full text: the first end position where some stop string is complete; among
// those ending there the longest; the output is the text before it.
std::string reference_output(const std::string& text, const std::vector<std::string>& stop_strings,
                             bool* stopped) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const auto& s : stop_strings)
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0)
        best = std::max(best, s.size());
    if (best > 0) {
      *stopped = true;
      return text.substr(0, end - best);
    }
  }
  *stopped = false;
  return text;
}

bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const size_t len = b < 0x80             ? 1
                       : (b & 0xE0) == 0xC0 ? 2
                       : (b & 0xF0) == 0xE0 ? 3
                       : (b & 0xF8) == 0xF0 ? 4
                                            : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

TEST(Stop, RandomTextsAndSplitsMatchTheReference) {
  // Small alphabet so stop strings occur often; "é" and "€" make pieces split characters.
  const std::vector<std::string> alphabet = {"a", "b", "c", "\xC3\xA9", "\xE2\x82\xAC"};
  std::mt19937 gen(2024);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(gen); };
  int stopped_runs = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stop_strings(1 + pick(3));
    for (auto& s : stop_strings)
      for (size_t k = 0, len = 1 + pick(4); k < len; ++k) s += alphabet[pick(alphabet.size())];
    std::string text;
    for (size_t k = 0, len = pick(25); k < len; ++k) text += alphabet[pick(alphabet.size())];
    // Random byte-level split, so pieces may cut through a multi-byte character.
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t len = std::min(text.size() - at, 1 + pick(4));
      pieces.push_back(text.substr(at, len));
      at += len;
    }
    bool stopped = false;
    const std::string expected = reference_output(text, stop_strings, &stopped);
    stopped_runs += stopped;

    StopChecker checker(stops(stop_strings));
    const Streamed run = feed(checker, pieces);
    ASSERT_EQ(run.all(), expected) << "trial " << trial << " text " << text;
    ASSERT_EQ(run.reason, stopped ? FinishReason::Stop : FinishReason::None) << "trial " << trial;
    // Streaming never emitted a byte that a stop string later claimed, and (valid UTF-8 in) every
    // chunk is whole characters.
    for (const auto& chunk : run.chunks) ASSERT_TRUE(is_valid_utf8(chunk)) << "trial " << trial;
  }
  EXPECT_GT(stopped_runs, 1000);
}

}  // namespace
}  // namespace ff
