// The opt-in stage profile: recording, nesting, the on/off switch and the report.
#include <gtest/gtest.h>

#include <thread>

#include "core/core.h"

namespace ff {
namespace {

// Restores the switch and clears the entries around each test.
class Profile : public ::testing::Test {
 protected:
  void SetUp() override {
    was_on_ = profile::enabled();
    profile::reset();
  }
  void TearDown() override {
    profile::set_enabled(was_on_);
    profile::reset();
  }
  bool was_on_ = false;
};

const profile::Entry* find(const std::vector<profile::Entry>& es, const std::string& name) {
  for (const auto& e : es)
    if (e.name == name) return &e;
  return nullptr;
}

TEST_F(Profile, OffRecordsNothing) {
  profile::set_enabled(false);
  { profile::Scope s("stage"); }
  EXPECT_TRUE(profile::entries().empty());
  EXPECT_EQ(profile::report(), "");
}

TEST_F(Profile, NestedScopesAccumulateCallsAndTime) {
  profile::set_enabled(true);
  for (int i = 0; i < 3; ++i) {
    profile::Scope outer("outer");
    {
      profile::Scope inner("inner");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  const auto es = profile::entries();
  ASSERT_EQ(es.size(), 2u);
  EXPECT_EQ(es[0].name, "inner");  // entries are in the order first recorded: a call is recorded
                                   // when it ends, and the inner one ends first
  const auto* outer = find(es, "outer");
  const auto* inner = find(es, "inner");
  ASSERT_TRUE(outer && inner);
  EXPECT_EQ(outer->calls, 3);
  EXPECT_EQ(inner->calls, 3);
  EXPECT_GE(inner->seconds, 0.006);
  EXPECT_GE(outer->seconds, inner->seconds);  // the inner stage's time is inside the outer one
}

TEST_F(Profile, StopEndsTheCallOnce) {
  profile::set_enabled(true);
  {
    profile::Scope s("early");
    s.stop();
    s.stop();
  }
  const auto es = profile::entries();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].calls, 1);
}

TEST_F(Profile, SameTextIsOneEntryAndReportListsIt) {
  profile::set_enabled(true);
  const std::string a = "stage.a";
  profile::add(a.c_str(), 0.001);
  profile::add("stage.a", 0.003);
  profile::add("stage.c", 0.0005);
  profile::add("stage.b", 0.002);
  const auto es = profile::entries();
  ASSERT_EQ(es.size(), 3u);
  EXPECT_EQ(es[0].name, "stage.a");
  EXPECT_EQ(es[1].name, "stage.c");  // entries() keeps the order first recorded
  EXPECT_EQ(es[0].calls, 2);
  EXPECT_DOUBLE_EQ(es[0].seconds, 0.004);
  const std::string r = profile::report();
  EXPECT_NE(r.find("stage.a"), std::string::npos) << r;
  EXPECT_NE(r.find("100.0%"), std::string::npos) << r;  // share of the largest total
  EXPECT_NE(r.find("50.0%"), std::string::npos) << r;
  EXPECT_LT(r.find("stage.a"), r.find("stage.b")) << r;  // largest total first
  EXPECT_LT(r.find("stage.b"), r.find("stage.c")) << r;
  profile::reset();
  EXPECT_TRUE(profile::entries().empty());
}

TEST_F(Profile, ThreadsRecordIntoOneTable) {
  profile::set_enabled(true);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([] {
      for (int i = 0; i < 100; ++i) profile::Scope s("shared");
    });
  for (auto& t : ts) t.join();
  const auto es = profile::entries();
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].calls, 400);
}

}  // namespace
}  // namespace ff
