#include "fs/wire.h"

#include <algorithm>
#include <cstring>

namespace ff::fs {

wire::RoutingInfo to_wire(const Routing& r) {
  wire::RoutingInfo w;
  w.set_version(r.version);
  for (const auto& [id, address] : r.nodes) {
    auto* n = w.add_nodes();
    n->set_node_id(id);
    n->set_address(address);
  }
  for (const auto& [id, c] : r.chains) {
    auto* wc = w.add_chains();
    wc->set_chain_id(c.chain_id);
    wc->set_version(c.version);
    for (const TargetRoute& t : c.targets) {
      auto* wt = wc->add_targets();
      wt->set_target_id(t.target_id);
      wt->set_node_id(t.node_id);
      wt->set_public_state(uint32_t(t.state));
      wt->set_local_state(uint32_t(t.local));
    }
  }
  for (const auto& [id, t] : r.tables) {
    auto* wt = w.add_tables();
    wt->set_table_id(t.table_id);
    wt->set_version(t.version);
    for (const uint32_t c : t.chain_ids) wt->add_chain_ids(c);
  }
  for (const std::string& m : r.meta) w.add_meta(m);
  return w;
}

Routing from_wire(const wire::RoutingInfo& w) {
  Routing r;
  r.version = w.version();
  for (const auto& n : w.nodes()) r.nodes[n.node_id()] = n.address();
  for (const auto& wc : w.chains()) {
    ChainRoute c;
    c.chain_id = wc.chain_id();
    c.version = wc.version();
    for (const auto& wt : wc.targets())
      c.targets.push_back({wt.target_id(), wt.node_id(), PublicState(wt.public_state()),
                           LocalState(wt.local_state())});
    r.chains[c.chain_id] = std::move(c);
  }
  for (const auto& wt : w.tables()) {
    TableRoute t;
    t.table_id = wt.table_id();
    t.version = wt.version();
    t.chain_ids.assign(wt.chain_ids().begin(), wt.chain_ids().end());
    r.tables[t.table_id] = std::move(t);
  }
  r.meta.assign(w.meta().begin(), w.meta().end());
  return r;
}

void to_wire(const Inode& n, wire::InodeMsg* w) {
  w->set_id(n.id);
  w->set_type(uint32_t(n.type));
  w->set_mode(n.mode);
  w->set_uid(n.uid);
  w->set_gid(n.gid);
  w->set_nlink(n.nlink);
  w->set_length(n.length);
  w->set_atime_ns(n.atime_ns);
  w->set_mtime_ns(n.mtime_ns);
  w->set_ctime_ns(n.ctime_ns);
  w->set_table_id(n.layout.table_id);
  w->set_chunk_size(n.layout.chunk_size);
  w->set_stripe(n.layout.stripe);
  w->set_seed(n.layout.seed);
  w->set_parent(n.parent);
  w->set_target(n.target);
}

Inode from_wire(const wire::InodeMsg& w) {
  Inode n;
  n.id = w.id();
  n.type = FileType(w.type());
  n.mode = w.mode();
  n.uid = w.uid();
  n.gid = w.gid();
  n.nlink = w.nlink();
  n.length = w.length();
  n.atime_ns = w.atime_ns();
  n.mtime_ns = w.mtime_ns();
  n.ctime_ns = w.ctime_ns();
  n.layout = Layout{w.table_id(), w.chunk_size(), w.stripe(), w.seed()};
  n.parent = w.parent();
  n.target = w.target();
  return n;
}

wire::ChunkMetaMsg to_wire(const ChunkMeta& m) {
  wire::ChunkMetaMsg w;
  w.set_chunk_id(id_bytes(m.id));
  w.set_chain_version(m.chain_version);
  w.set_committed(m.committed);
  w.set_update(m.update);
  w.set_length(m.length);
  w.set_crc(m.crc32c);
  return w;
}

ChunkMeta from_wire(const wire::ChunkMetaMsg& w) {
  ChunkMeta m;
  id_from(w.chunk_id(), &m.id);
  m.chain_version = w.chain_version();
  m.committed = w.committed();
  m.update = w.update();
  m.length = w.length();
  m.crc32c = w.crc();
  return m;
}

bool id_from(const std::string& bytes, ChunkId* id) {
  if (bytes.size() != id->bytes.size()) return false;
  std::memcpy(id->bytes.data(), bytes.data(), bytes.size());
  return true;
}

void exclusive_port(grpc::ServerBuilder& b) {
  b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  // A name is resolved again at most this often after a failed connection (default: 30 s).
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 100);
  // Its own subchannels: a channel made again after a failure starts without the old backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(128 << 20);
  args.SetMaxSendMessageSize(128 << 20);
  // An IPv4 literal needs no resolver at all.
  const bool ipv4 =
      !address.empty() && address.find_first_not_of("0123456789.:") == std::string::npos;
  return grpc::CreateCustomChannel(ipv4 ? "ipv4:" + address : address,
                                   grpc::InsecureChannelCredentials(), args);
}

template <class Stub, class Make>
std::shared_ptr<Stub> StubCache::get(std::map<std::string, Entry<Stub>>& map,
                                     const std::string& address, Make&& make) {
  std::lock_guard lk(mu_);
  Entry<Stub>& e = map[address];
  const auto now = std::chrono::steady_clock::now();
  // gRPC's reconnect backoff ignores the channel arguments in the Debian build (1.51) and grows
  // to seconds; a peer that restarts is reached sooner through a new channel.
  if (!e.stub || (e.channel->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE &&
                  now - e.made > std::chrono::milliseconds(200))) {
    e.channel = make_channel(address);
    e.stub = make(e.channel);
    e.made = now;
  }
  return e.stub;
}

std::shared_ptr<wire::Storage::Stub> StubCache::storage(const std::string& address) {
  return get(storage_, address, [](const auto& ch) { return wire::Storage::NewStub(ch); });
}

std::shared_ptr<wire::Mgmtd::Stub> StubCache::mgmtd(const std::string& address) {
  return get(mgmtd_, address, [](const auto& ch) { return wire::Mgmtd::NewStub(ch); });
}

std::shared_ptr<wire::Meta::Stub> StubCache::meta(const std::string& address) {
  return get(meta_, address, [](const auto& ch) { return wire::Meta::NewStub(ch); });
}

bool get_routing(StubCache& stubs, const std::string& mgmtd, uint64_t known, int wait_ms,
                 wire::RoutingInfo* out, grpc::ClientContext* ctx) {
  wire::GetRoutingReq req;
  req.set_known_version(known);
  req.set_wait_ms(uint32_t(std::max(wait_ms, 0)));
  wire::GetRoutingRsp rsp;
  grpc::ClientContext own;
  if (!ctx) ctx = &own;
  set_deadline(*ctx, std::max(wait_ms, 0) + 2000);
  if (!stubs.mgmtd(mgmtd)->GetRouting(ctx, req, &rsp).ok()) return false;
  *out = std::move(*rsp.mutable_routing());
  return true;
}

}  // namespace ff::fs
