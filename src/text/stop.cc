#include "text/stop.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace ff {
namespace {

// Bytes at the end of `s` that start a UTF-8 character whose remaining bytes have not arrived.
size_t incomplete_utf8_tail(std::string_view s) {
  for (size_t back = 1; back <= std::min<size_t>(4, s.size()); ++back) {
    const auto byte = static_cast<unsigned char>(s[s.size() - back]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = 0;
    if ((byte & 0xE0) == 0xC0)
      need = 2;
    else if ((byte & 0xF0) == 0xE0)
      need = 3;
    else if ((byte & 0xF8) == 0xF0)
      need = 4;
    return need > back ? back : 0;  // ASCII, invalid lead, or complete: nothing to wait for
  }
  return 0;
}

}  // namespace

void StopConditions::validate() const {
  FF_CHECK(stop_strings.size() <= kMaxStopStrings, "stop: at most {} stop strings, got {}",
           kMaxStopStrings, stop_strings.size());
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    FF_CHECK(!stop_strings[i].empty(), "stop: stop string {} is empty", i);
    FF_CHECK(stop_strings[i].size() <= kMaxStopStringBytes,
             "stop: stop string {} is {} bytes, the limit is {}", i, stop_strings[i].size(),
             kMaxStopStringBytes);
  }
  FF_CHECK(max_tokens == -1 || max_tokens >= 1,
           "stop: max_tokens must be -1 (unlimited) or >= 1, got {}", max_tokens);
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
    case FinishReason::None:
      break;
  }
  return "";
}

StopChecker::StopChecker(StopConditions conditions) : conditions_(std::move(conditions)) {
  conditions_.validate();
}

std::string StopChecker::emit(size_t n) {
  std::string out = held_.substr(0, n);
  held_.erase(0, n);
  text_ += out;
  return out;
}

size_t StopChecker::hold_length() const {
  size_t hold = incomplete_utf8_tail(held_);
  const std::string_view held = held_;
  for (const std::string& stop : conditions_.stop_strings) {
    // Longest proper prefix of `stop` that the held text ends with; longer ones cannot beat it.
    for (size_t len = std::min(held.size(), stop.size() - 1); len > hold; --len) {
      if (held.substr(held.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

std::string StopChecker::push(int32_t token, std::string_view piece) {
  FF_CHECK(finish_ == FinishReason::None, "stop: token {} pushed after generation finished ({})",
           token, finish_reason_name(finish_));
  ++num_tokens_;

  const auto& eos = conditions_.eos_ids;
  if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
    finish_ = FinishReason::Stop;
    matched_eos_ = token;
    return emit(held_.size());
  }

  held_.append(piece);
  // held_ had no complete stop string before this piece, so any match ends inside it. For one
  // stop string the first occurrence is also the one that ends first.
  size_t best_start = std::string::npos, best_end = std::string::npos;
  for (size_t i = 0; i < conditions_.stop_strings.size(); ++i) {
    const std::string& stop = conditions_.stop_strings[i];
    const size_t start = held_.find(stop);
    if (start == std::string::npos) continue;
    const size_t end = start + stop.size();
    if (end < best_end || (end == best_end && start < best_start)) {
      best_start = start;
      best_end = end;
      matched_stop_ = int(i);
    }
  }
  if (best_start != std::string::npos) {
    finish_ = FinishReason::Stop;
    std::string out = emit(best_start);
    held_.clear();
    return out;
  }

  if (conditions_.max_tokens != -1 && num_tokens_ >= conditions_.max_tokens) {
    finish_ = FinishReason::Length;
    return emit(held_.size());
  }
  return emit(held_.size() - hold_length());
}

std::string StopChecker::flush() {
  return emit(held_.size());
}

}  // namespace ff
