// fs::next_chain against the target-state table of docs/fs-design.md (3FS's design notes), one
// cell at a time, then whole failure / recovery stories, then invariants over random chains.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "fs/fs.h"

namespace ff::fs {
namespace {

constexpr PublicState S = PublicState::Serving, L = PublicState::LastServing,
                      Sy = PublicState::Syncing, W = PublicState::Waiting,
                      Off = PublicState::Offline;
constexpr LocalState Up = LocalState::UpToDate, On = LocalState::Online, Down = LocalState::Offline;

// Targets numbered 1, 2, ... in the given order.
std::vector<ChainTarget> chain(std::initializer_list<std::pair<PublicState, LocalState>> ts) {
  std::vector<ChainTarget> c;
  uint32_t id = 1;
  for (const auto& [s, l] : ts) c.push_back({id++, s, l});
  return c;
}

// The expected chain: (id, new public state) in order; local states carried over.
void expect_next(const std::vector<ChainTarget>& old,
                 std::initializer_list<std::pair<uint32_t, PublicState>> want) {
  const std::vector<ChainTarget> got = next_chain(old);
  std::vector<ChainTarget> expected;
  for (const auto& [id, s] : want) {
    ChainTarget t = old[id - 1];
    t.state = s;
    expected.push_back(t);
  }
  EXPECT_EQ(got, expected) << "from " << describe(old) << "\n got " << describe(got) << "\nwant "
                           << describe(expected);
}

// Row "serving".
TEST(ChainState, ServingStaysServingWhileAlive) {
  expect_next(chain({{S, Up}, {S, On}}), {{1, S}, {2, S}});
}
TEST(ChainState, ServingWithoutPredecessorFailsToLastServing) {
  expect_next(chain({{S, Down}}), {{1, L}});
  expect_next(chain({{S, Down}, {S, Down}, {S, Down}}), {{1, L}, {2, Off}, {3, Off}});
}
TEST(ChainState, ServingWithAServingPeerFailsToOfflineAtTheEnd) {
  expect_next(chain({{S, Down}, {S, Up}, {S, Up}}), {{2, S}, {3, S}, {1, Off}});
  expect_next(chain({{S, Up}, {S, Down}, {S, Up}}), {{1, S}, {3, S}, {2, Off}});
}

// Row "lastsrv".
TEST(ChainState, LastServingReturnsToServing) {
  expect_next(chain({{L, Up}, {Off, Down}}), {{1, S}, {2, Off}});
  expect_next(chain({{L, On}, {Off, Down}}), {{1, S}, {2, Off}});
}
TEST(ChainState, LastServingStaysWhileDown) {
  expect_next(chain({{L, Down}, {Off, Down}}), {{1, L}, {2, Off}});
}
TEST(ChainState, LastServingGoesOfflineOnceAnotherServes) {
  expect_next(chain({{S, Up}, {L, Up}}), {{1, S}, {2, Off}});
  expect_next(chain({{S, Up}, {L, Down}}), {{1, S}, {2, Off}});
}

// Row "syncing".
TEST(ChainState, SyncingUpToDateServes) {
  expect_next(chain({{S, Up}, {Sy, Up}}), {{1, S}, {2, S}});
}
TEST(ChainState, SyncingOnlineKeepsSyncingBehindAServingTarget) {
  expect_next(chain({{S, Up}, {Sy, On}}), {{1, S}, {2, Sy}});
}
TEST(ChainState, SyncingOnlineWaitsWithoutAServingTarget) {
  expect_next(chain({{S, Down}, {Sy, On}}), {{1, L}, {2, W}});
}
TEST(ChainState, SyncingDownGoesOffline) {
  expect_next(chain({{S, Up}, {Sy, Down}}), {{1, S}, {2, Off}});
}

// Row "waiting".
TEST(ChainState, WaitingUpToDateKeepsWaiting) {
  expect_next(chain({{S, Up}, {W, Up}}), {{1, S}, {2, W}});
}
TEST(ChainState, WaitingOnlineSyncsBehindAServingTarget) {
  expect_next(chain({{S, Up}, {W, On}}), {{1, S}, {2, Sy}});
}
TEST(ChainState, AtMostOneTargetSyncs) {
  expect_next(chain({{S, Up}, {W, On}, {W, On}}), {{1, S}, {2, Sy}, {3, W}});
  expect_next(chain({{S, Up}, {Sy, On}, {W, On}}), {{1, S}, {2, Sy}, {3, W}});
}
TEST(ChainState, WaitingOnlineWaitsWithoutAServingTarget) {
  expect_next(chain({{L, Down}, {W, On}}), {{1, L}, {2, W}});
}
TEST(ChainState, WaitingDownGoesOffline) {
  expect_next(chain({{S, Up}, {W, Down}}), {{1, S}, {2, Off}});
}

// Row "offline".
TEST(ChainState, OfflineThatReturnsWaits) {
  expect_next(chain({{S, Up}, {Off, Up}}), {{1, S}, {2, W}});
  expect_next(chain({{S, Up}, {Off, On}}), {{1, S}, {2, W}});
}
TEST(ChainState, OfflineStaysOfflineWhileDown) {
  expect_next(chain({{S, Up}, {Off, Down}}), {{1, S}, {2, Off}});
}

// Order: serving, last-serving, syncing, waiting, offline; the head is the first serving one.
TEST(ChainState, NewOrderPutsServingFirst) {
  expect_next(chain({{Off, On}, {W, Up}, {S, Up}}), {{3, S}, {2, W}, {1, W}});
}

// The head fails, returns, syncs and serves again (at the end of the chain).
TEST(ChainState, HeadFailureAndRecovery) {
  std::vector<ChainTarget> c = chain({{S, Up}, {S, Up}, {S, Up}});
  c[0].local = Down;
  c = next_chain(c);
  EXPECT_EQ(describe(c), "t2:serving/up-to-date, t3:serving/up-to-date, t1:offline/offline");
  c[2].local = On;  // restarted
  c = next_chain(c);
  EXPECT_EQ(c[2].state, W);
  c = next_chain(c);
  EXPECT_EQ(c[2].state, Sy);
  EXPECT_EQ(next_chain(c), c) << "a syncing target stays syncing until it is up to date";
  c[2].local = Up;  // sync done
  c = next_chain(c);
  EXPECT_EQ(describe(c), "t2:serving/up-to-date, t3:serving/up-to-date, t1:serving/up-to-date");
}

// Every serving target fails: the chain waits for the first (last-serving) one, even when another
// comes back first; that one syncs from it afterwards.
TEST(ChainState, WholeChainFailureWaitsForTheLastServing) {
  std::vector<ChainTarget> c = chain({{S, Down}, {S, Down}, {S, Down}});
  c = next_chain(c);
  EXPECT_EQ(describe(c), "t1:lastsrv/offline, t2:offline/offline, t3:offline/offline");
  c[1].local = On;  // t2 returns first
  c = next_chain(c);
  EXPECT_EQ(describe(c), "t1:lastsrv/offline, t2:waiting/online, t3:offline/offline");
  c = next_chain(c);
  EXPECT_EQ(c[1].state, W) << "no serving target to sync from";
  c[0].local = On;  // t1 returns
  c = next_chain(c);
  EXPECT_EQ(describe(c), "t1:serving/online, t2:syncing/online, t3:offline/offline");
}

// Invariants along random histories: chains start all serving, then each update sees random
// local states (a target that syncs becomes up to date at random too).
TEST(ChainState, InvariantsAlongRandomHistories) {
  std::mt19937 g(42);
  const LocalState ls[] = {Up, On, Down};
  for (int history = 0; history < 2000; ++history) {
    const int n = 1 + int(g() % 5);
    std::vector<ChainTarget> c;
    for (int i = 0; i < n; ++i) c.push_back({uint32_t(i + 1), S, Up});
    for (int step = 0; step < 20; ++step) {
      for (ChainTarget& t : c) t.local = ls[g() % 3];
      const std::vector<ChainTarget> next = next_chain(c);
      ASSERT_EQ(next.size(), c.size());
      int syncing = 0, serving = 0, lastsrv = 0;
      for (size_t i = 0; i < next.size(); ++i) {
        syncing += next[i].state == Sy;
        serving += next[i].state == S;
        lastsrv += next[i].state == L;
        if (next[i].state == S || next[i].state == Sy) {
          EXPECT_NE(next[i].local, Down) << describe(c);
        }
        if (i > 0) {
          EXPECT_LE(int(next[i - 1].state), int(next[i].state)) << describe(next);
        }
        // Only a target that was serving or syncing (with the data) may serve next.
        const auto was = std::find_if(c.begin(), c.end(), [&](const ChainTarget& t) {
          return t.target_id == next[i].target_id;
        });
        if (next[i].state == S) {
          EXPECT_TRUE(was->state == S || was->state == Sy || was->state == L) << describe(c);
        }
      }
      EXPECT_LE(syncing, 1) << describe(c);
      EXPECT_LE(lastsrv, 1) << describe(c);
      EXPECT_TRUE(serving == 0 || lastsrv == 0) << describe(c);
      if (syncing) {
        EXPECT_GT(serving, 0) << describe(c);
      }
      EXPECT_TRUE(serving > 0 || lastsrv == 1) << "a chain without a serving target must wait "
                                                  "for its last one: "
                                               << describe(next);
      c = next;
    }
  }
}

}  // namespace
}  // namespace ff::fs
