// StorageServer: opening the targets, the gRPC server, registration with mgmtd, heartbeats (the
// lease) and the routing they bring back.
#include <filesystem>

#include "core/core.h"
#include "fs/storage/storage_impl.h"

namespace ff::fs {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

wire::Code to_code(ChunkError e) {
  switch (e) {
    case ChunkError::None:
      return wire::OK;
    case ChunkError::NotFound:
      return wire::NOT_FOUND;
    case ChunkError::NotCommitted:
      return wire::NOT_COMMITTED;
    case ChunkError::BadRange:
      return wire::BAD_RANGE;
    case ChunkError::NoSpace:
      return wire::NO_SPACE;
    case ChunkError::ChecksumMismatch:
      return wire::CHECKSUM_ERROR;
    case ChunkError::BadVersion:
      return wire::NEED_FULL_CHUNK;
  }
  return wire::IO_ERROR;
}

ChunkLocks::Guard::Guard(ChunkLocks& l, uint32_t target, const ChunkId& id)
    : locks_(l), key_(target, id) {
  Entry* e;
  {
    std::lock_guard lk(l.mu_);
    auto& slot = l.map_[key_];
    if (!slot) slot = std::make_unique<Entry>();
    e = slot.get();
    ++e->users;
  }
  e->m.lock();
}

ChunkLocks::Guard::~Guard() {
  std::lock_guard lk(locks_.mu_);
  const auto it = locks_.map_.find(key_);
  it->second->m.unlock();
  if (--it->second->users == 0) locks_.map_.erase(it);
}

std::shared_ptr<const Routing> StorageServer::Impl::routing() const {
  std::lock_guard lk(routing_mu);
  return routing_ptr;
}

void StorageServer::Impl::set_routing(const wire::RoutingInfo& w) {
  std::lock_guard lk(routing_mu);
  if (w.version() <= routing_ptr->version) return;
  routing_ptr = std::make_shared<const Routing>(from_wire(w));
}

bool StorageServer::Impl::refresh_routing(uint64_t known, int wait_ms) {
  wire::RoutingInfo got;
  if (!get_routing(stubs, opt.mgmtd, known, wait_ms, &got)) return false;
  set_routing(got);
  return true;
}

bool StorageServer::Impl::lease_valid() const {
  return registered && now_ms() - last_heartbeat_ms < lease_ms / 2;
}

LocalState StorageServer::Impl::local_state(uint32_t target) const {
  const auto r = routing();
  for (const auto& [id, c] : r->chains)
    if (const TargetRoute* t = c.find(target)) {
      if (t->state == PublicState::Serving) return LocalState::UpToDate;
      std::lock_guard lk(routing_mu);
      const auto s = synced.find(target);
      if (t->state == PublicState::Syncing && s != synced.end() && s->second == c.version)
        return LocalState::UpToDate;
      return LocalState::Online;
    }
  return LocalState::Online;
}

bool StorageServer::Impl::sleep_ms(int ms) {
  std::unique_lock lk(mu);
  wake.wait_for(lk, std::chrono::milliseconds(ms), [&] { return stopping; });
  return !stopping;
}

void StorageServer::Impl::register_with_mgmtd(int deadline_ms) {
  const int64_t until = now_ms() + deadline_ms;
  std::string last_error = "no answer";
  while (now_ms() < until) {
    wire::RegisterReq req;
    req.set_node_id(opt.node_id);
    req.set_address(address);
    for (const auto& [t, e] : engines) req.add_target_ids(t);
    wire::RegisterRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, 2000);
    const grpc::Status s = stubs.mgmtd(opt.mgmtd)->Register(&ctx, req, &rsp);
    if (s.ok() && rsp.status().code() == wire::OK) {
      heartbeat_ms = int(rsp.heartbeat_ms());
      lease_ms = int(rsp.lease_ms());
      set_routing(rsp.routing());
      last_heartbeat_ms = now_ms();
      registered = true;
      return;
    }
    if (s.ok()) fail("storage node {}: mgmtd refused it: {}", opt.node_id, rsp.status().message());
    last_error = s.error_message();
    if (!sleep_ms(200)) break;
  }
  fail("storage node {}: cannot register with mgmtd at {}: {}", opt.node_id, opt.mgmtd, last_error);
}

void StorageServer::Impl::heartbeat_loop() {
  while (sleep_ms(heartbeat_ms)) {
    wire::HeartbeatReq req;
    req.set_node_id(opt.node_id);
    req.set_routing_version(routing()->version);
    for (const auto& [t, e] : engines) {
      auto* tl = req.add_targets();
      tl->set_target_id(t);
      tl->set_local_state(uint32_t(local_state(t)));
    }
    wire::HeartbeatRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, std::max(heartbeat_ms, 500));
    if (!stubs.mgmtd(opt.mgmtd)->Heartbeat(&ctx, req, &rsp).ok()) continue;
    if (rsp.status().code() == wire::UNKNOWN_TARGET) {  // mgmtd lost us: register again
      registered = false;
      try {
        register_with_mgmtd(heartbeat_ms * 4);
      } catch (const Error&) {
      }
      continue;
    }
    if (rsp.status().code() != wire::OK) continue;
    last_heartbeat_ms = now_ms();
    if (rsp.has_routing()) set_routing(rsp.routing());
  }
}

StorageServer::StorageServer(const StorageOptions& options) : impl_(std::make_unique<Impl>()) {
  tune_allocator();
  Impl& m = *impl_;
  m.opt = options;
  FF_CHECK(options.node_id > 0 && options.node_id < 40000000, "storage: node id {} is not valid",
           options.node_id);
  FF_CHECK(options.targets > 0 && options.targets < 100, "storage: {} targets per node (1 to 99)",
           options.targets);
  FF_CHECK(!options.mgmtd.empty(), "storage: no mgmtd address");
  FF_CHECK(!options.data_dir.empty(), "storage: no data directory");
  for (uint32_t i = 0; i < options.targets; ++i) {
    const uint32_t id = options.node_id * 100 + i + 1;
    m.engines[id] = std::make_unique<ChunkEngine>(fmt::format("{}/target-{}", options.data_dir, id),
                                                  options.capacity, options.fsync);
  }
  grpc::ServerBuilder b;
  exclusive_port(b);
  int port = 0;
  b.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  b.SetMaxReceiveMessageSize(128 << 20);
  b.SetMaxSendMessageSize(128 << 20);
  b.RegisterService(&m);
  m.server = b.BuildAndStart();
  FF_CHECK(m.server && port > 0, "storage node {}: cannot listen on {}", options.node_id,
           options.listen);
  m.address = options.listen.substr(0, options.listen.rfind(':')) + ":" + std::to_string(port);
  try {
    m.register_with_mgmtd(options.request_deadline_ms);
  } catch (...) {
    m.server->Shutdown(std::chrono::system_clock::now());
    throw;
  }
  m.heartbeat_thread = std::thread([&m] { m.heartbeat_loop(); });
  m.sync_thread = std::thread([&m] { m.sync_loop(); });
}

StorageServer::~StorageServer() {
  stop();
}

void StorageServer::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    if (m.stopping) return;
    m.stopping = true;
    m.wake.notify_all();
  }
  m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  m.heartbeat_thread.join();
  m.sync_thread.join();
}

std::string StorageServer::address() const {
  return impl_->address;
}

std::vector<uint32_t> StorageServer::target_ids() const {
  std::vector<uint32_t> out;
  for (const auto& [t, e] : impl_->engines) out.push_back(t);
  return out;
}

}  // namespace ff::fs
