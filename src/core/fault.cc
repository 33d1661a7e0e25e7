#include "core/fault.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

#include "core/error.h"

namespace ff::fault {
namespace {

struct Armed {
  Spec spec;
  int64_t fired = 0;
};

struct Registry {
  std::mutex mu;
  std::map<std::string, Armed, std::less<>> points;
  std::atomic<int> armed{0};

  void parse_into(std::string_view faults);
  void set(std::string_view name, Spec spec) {
    std::lock_guard<std::mutex> lock(mu);
    points[std::string(name)] = Armed{std::move(spec), 0};
    armed.store(int(points.size()));
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

void Registry::parse_into(std::string_view faults) {
  while (!faults.empty()) {
    const size_t comma = faults.find(',');
    std::string_view entry = faults.substr(0, comma);
    faults = comma == faults.npos ? std::string_view{} : faults.substr(comma + 1);
    if (entry.empty()) continue;
    Spec spec;
    if (const size_t star = entry.find('*'); star != entry.npos) {
      const std::string n(entry.substr(star + 1));
      char* end = nullptr;
      const long long c = std::strtoll(n.c_str(), &end, 10);
      FF_CHECK(!n.empty() && *end == '\0' && c >= 1,
               "FF_FAULTS: '{}': the count after '*' must be an integer >= 1", entry);
      spec.count = c;
      entry = entry.substr(0, star);
    }
    if (const size_t eq = entry.find('='); eq != entry.npos) {
      spec.key = std::string(entry.substr(eq + 1));
      entry = entry.substr(0, eq);
    }
    FF_CHECK(!entry.empty(), "FF_FAULTS: an entry has no point name");
    set(entry, std::move(spec));
  }
}

}  // namespace

void arm(std::string_view name, Spec spec) {
  registry().set(name, std::move(spec));
}

void disarm(std::string_view name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (auto it = r.points.find(name); it != r.points.end()) r.points.erase(it);
  r.armed.store(int(r.points.size()));
}

void disarm_all() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.points.clear();
  r.armed.store(0);
}

int64_t fired(std::string_view name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.points.find(name);
  return it == r.points.end() ? 0 : it->second.fired;
}

void arm_from_string(std::string_view faults) {
  registry().parse_into(faults);
}

void arm_from_env() {
  if (const char* env = std::getenv("FF_FAULTS"); env != nullptr && *env != '\0')
    arm_from_string(env);
}

namespace detail {

bool any_armed() {
  return registry().armed.load(std::memory_order_relaxed) != 0;
}

void hit(std::string_view name, std::string_view key) {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.points.find(name);
    if (it == r.points.end()) return;
    Armed& a = it->second;
    if (a.spec.count == 0) return;
    if (!a.spec.key.empty() && a.spec.key != key) return;
    if (a.spec.count > 0) --a.spec.count;
    ++a.fired;
  }
  throw InternalError(key.empty() ? fmt::format("fault injected at {}", name)
                                  : fmt::format("fault injected at {} ({})", name, key));
}

}  // namespace detail
}  // namespace ff::fault
