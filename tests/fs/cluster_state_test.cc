// mgmtd's rules without transport: registration, heartbeats and leases, chain creation, the state
// machine applied on updates (offline targets move to the end, versions bump, one syncing target
// per chain, a restarted node passes through waiting and syncing), and a restart on the same
// store keeping the chain tables.
#include <gtest/gtest.h>

#include "fs/fs.h"
#include "fs/mgmtd/cluster_state.h"

namespace ff::fs {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kLease{1000};

struct Cluster {
  std::unique_ptr<KvEngine> kv = make_memory_kv();
  Clock::time_point now = Clock::time_point{} + std::chrono::hours(1);
  std::unique_ptr<ClusterState> s = std::make_unique<ClusterState>(*kv, kLease, now);

  // Nodes 1..3 with targets n*100+1, n*100+2, heartbeating `online`, one table of replication 3.
  void start() {
    for (uint32_t n = 1; n <= 3; ++n) {
      ASSERT_EQ(s->register_node(n, "h:" + std::to_string(n), {n * 100 + 1, n * 100 + 2}, now), "");
      beat(n, LocalState::Online);
    }
    ASSERT_EQ(s->create_chains(1, 3), "");
  }
  void beat(uint32_t n, LocalState st) {
    ASSERT_TRUE(s->heartbeat(n, {{n * 100 + 1, st}, {n * 100 + 2, st}}, now));
  }
  void advance(milliseconds d) { now += d; }
  std::string chain(uint32_t id) {
    const Routing r = s->routing();
    std::string out;
    for (const TargetRoute& t : r.chains.at(id).targets)
      out += (out.empty() ? "" : " ") + std::to_string(t.target_id) + ":" + state_name(t.state);
    return out;
  }
};

TEST(ClusterState, CreatesChainsOnDifferentNodesWithSpreadHeads) {
  Cluster c;
  c.start();
  const Routing r = c.s->routing();
  ASSERT_EQ(r.tables.at(1).chain_ids.size(), 2u);
  std::set<uint32_t> heads, all;
  for (const auto& [id, ch] : r.chains) {
    EXPECT_EQ(ch.version, 1u);
    std::set<uint32_t> nodes;
    for (const TargetRoute& t : ch.targets) {
      nodes.insert(t.node_id);
      all.insert(t.target_id);
      EXPECT_EQ(t.state, PublicState::Serving);
    }
    EXPECT_EQ(nodes.size(), 3u) << describe(ch);
    heads.insert(ch.targets[0].node_id);
  }
  EXPECT_EQ(all.size(), 6u);
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_EQ(r.chain_for(1, 7, 0), r.tables.at(1).chain_ids[1]);
  EXPECT_EQ(r.chain_for(1, 7, 1), r.tables.at(1).chain_ids[0]);
}

TEST(ClusterState, RefusesBadRequests) {
  Cluster c;
  EXPECT_NE(c.s->register_node(0, "h", {1}, c.now), "");
  EXPECT_NE(c.s->register_node(1, "h", {}, c.now), "");
  ASSERT_EQ(c.s->register_node(1, "h:1", {101, 102}, c.now), "");
  EXPECT_NE(c.s->register_node(2, "h:2", {101}, c.now).find("belongs to node 1"),
            std::string::npos);
  EXPECT_NE(c.s->register_node(1, "h:1", {101}, c.now).find("no longer has"), std::string::npos);
  EXPECT_FALSE(c.s->heartbeat(9, {}, c.now));
  // Chains need heartbeats from their targets, enough nodes, and a new table id.
  EXPECT_NE(c.s->create_chains(1, 1).find("offline"), std::string::npos);
  c.beat(1, LocalState::Online);
  EXPECT_NE(c.s->create_chains(1, 2).find("2 replicas need targets on 2 nodes"), std::string::npos);
  EXPECT_NE(c.s->create_chains(1, 0), "");
  EXPECT_EQ(c.s->create_chains(1, 1), "");
  EXPECT_NE(c.s->create_chains(1, 1).find("exists"), std::string::npos);
}

TEST(ClusterState, ExpiredLeaseMovesTargetsToTheEndAndBumpsVersions) {
  Cluster c;
  c.start();
  const uint64_t v0 = c.s->version();
  c.advance(milliseconds(600));
  c.beat(1, LocalState::UpToDate);
  c.beat(3, LocalState::UpToDate);
  EXPECT_FALSE(c.s->update(c.now));  // node 2 still within its lease
  c.advance(milliseconds(600));
  c.beat(1, LocalState::UpToDate);
  c.beat(3, LocalState::UpToDate);
  EXPECT_TRUE(c.s->update(c.now));
  EXPECT_GT(c.s->version(), v0);
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:offline");
  EXPECT_EQ(c.s->routing().chains.at(1).version, 2u);
  EXPECT_EQ(c.chain(2), "302:serving 102:serving 202:offline");
  EXPECT_FALSE(c.s->update(c.now));  // nothing more changes
}

TEST(ClusterState, RestartedNodeGoesOfflineWaitingSyncingServing) {
  Cluster c;
  c.start();
  // Node 2 restarts within its lease: registering alone takes its targets out of the chains.
  ASSERT_EQ(c.s->register_node(2, "h:2b", {201, 202}, c.now), "");
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:offline");
  EXPECT_EQ(c.s->routing().nodes.at(2), "h:2b");
  c.beat(2, LocalState::Online);
  c.beat(1, LocalState::UpToDate);
  c.beat(3, LocalState::UpToDate);
  EXPECT_TRUE(c.s->update(c.now));
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:waiting");
  EXPECT_TRUE(c.s->update(c.now));
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:syncing");
  // An up-to-date claim from a syncing target makes it serve (its sync is done).
  c.beat(2, LocalState::UpToDate);
  EXPECT_TRUE(c.s->update(c.now));
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:serving");
}

TEST(ClusterState, OneSyncingTargetPerChain) {
  Cluster c;
  c.start();
  ASSERT_EQ(c.s->register_node(2, "h:2", {201, 202}, c.now), "");
  ASSERT_EQ(c.s->register_node(3, "h:3", {301, 302}, c.now), "");
  c.beat(1, LocalState::UpToDate);
  c.beat(2, LocalState::Online);
  c.beat(3, LocalState::Online);
  c.s->update(c.now);
  c.s->update(c.now);
  EXPECT_EQ(c.chain(1), "101:serving 201:syncing 301:waiting");
  c.beat(2, LocalState::UpToDate);
  c.s->update(c.now);
  EXPECT_EQ(c.chain(1), "101:serving 201:serving 301:syncing");
}

TEST(ClusterState, AllServingFailedKeepsOneLastServing) {
  Cluster c;
  c.start();
  c.advance(milliseconds(1500));  // every lease expires
  EXPECT_TRUE(c.s->update(c.now));
  EXPECT_EQ(c.chain(1), "101:lastsrv 201:offline 301:offline");
  // Another target coming back cannot serve before the last serving one.
  c.beat(2, LocalState::Online);
  c.s->update(c.now);
  c.s->update(c.now);
  EXPECT_EQ(c.chain(1), "101:lastsrv 201:waiting 301:offline");
  c.beat(1, LocalState::Online);
  c.s->update(c.now);
  EXPECT_EQ(c.chain(1), "101:serving 201:syncing 301:offline");
}

TEST(ClusterState, RestartOnTheSameStoreKeepsTables) {
  Cluster c;
  c.start();
  c.advance(milliseconds(1500));
  c.beat(1, LocalState::UpToDate);
  c.beat(3, LocalState::UpToDate);
  c.s->update(c.now);
  const Routing before = c.s->routing();
  c.s = std::make_unique<ClusterState>(*c.kv, kLease, c.now);
  Routing after = c.s->routing();
  EXPECT_EQ(after.version, before.version);
  EXPECT_EQ(after.tables, before.tables);
  EXPECT_EQ(after.nodes, before.nodes);
  for (const auto& [id, ch] : before.chains) {
    ASSERT_TRUE(after.chains.count(id));
    EXPECT_EQ(after.chains.at(id).version, ch.version);
    ASSERT_EQ(after.chains.at(id).targets.size(), ch.targets.size());
    for (size_t i = 0; i < ch.targets.size(); ++i) {
      EXPECT_EQ(after.chains.at(id).targets[i].target_id, ch.targets[i].target_id);
      EXPECT_EQ(after.chains.at(id).targets[i].state, ch.targets[i].state);
    }
  }
  // Nothing moves at the first update after the restart, while the leases run.
  EXPECT_FALSE(c.s->update(c.now));
  // And the nodes that keep sending heartbeats keep their chains.
  c.advance(milliseconds(800));
  c.beat(1, LocalState::UpToDate);
  c.beat(3, LocalState::UpToDate);
  c.beat(2, LocalState::Online);
  c.s->update(c.now);
  c.s->update(c.now);
  EXPECT_EQ(c.chain(1), "101:serving 301:serving 201:syncing");
}

}  // namespace
}  // namespace ff::fs
