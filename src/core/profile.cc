#include "core/profile.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace ff::profile {
namespace {

bool enabled_from_env() {
  const char* v = std::getenv("FF_PROFILE");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

std::atomic<bool>& flag() {
  static std::atomic<bool> on{enabled_from_env()};
  return on;
}

struct Registry {
  std::mutex mu;
  std::vector<Entry> entries;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

bool enabled() {
  return flag().load(std::memory_order_relaxed);
}

void set_enabled(bool on) {
  flag().store(on, std::memory_order_relaxed);
}

void add(const char* name, double seconds) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (Entry& e : r.entries)
    if (e.name == name) {
      ++e.calls;
      e.seconds += seconds;
      return;
    }
  r.entries.push_back({name, 1, seconds});
}

std::vector<Entry> entries() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.entries;
}

void reset() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries.clear();
}

std::string report() {
  std::vector<Entry> es = entries();
  if (es.empty()) return {};
  std::stable_sort(es.begin(), es.end(),
                   [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  double largest = 0.0;
  size_t width = 5;
  for (const Entry& e : es) {
    largest = std::max(largest, e.seconds);
    width = std::max(width, e.name.size());
  }
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-*s %9s %12s %10s %7s\n", int(width), "stage", "calls",
                "total ms", "ms/call", "share");
  out += line;
  for (const Entry& e : es) {
    std::snprintf(line, sizeof line, "%-*s %9lld %12.2f %10.3f %6.1f%%\n", int(width),
                  e.name.c_str(), static_cast<long long>(e.calls), e.seconds * 1e3,
                  e.seconds * 1e3 / double(e.calls),
                  largest > 0.0 ? 100.0 * e.seconds / largest : 0.0);
    out += line;
  }
  return out;
}

}  // namespace ff::profile
