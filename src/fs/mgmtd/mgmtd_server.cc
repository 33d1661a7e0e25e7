// MgmtdServer: ClusterState behind gRPC, with a thread that expires leases and recomputes the
// chains every update_ms, and long polls of the routing info (GetRouting with wait_ms) woken by
// every change: that is how routing reaches clients; storage services get it in heartbeat replies.
#include <condition_variable>
#include <thread>

#include "core/core.h"
#include "fs/cluster.h"
#include "fs/mgmtd/cluster_state.h"
#include "fs/wire.h"

namespace ff::fs {

struct MgmtdServer::Impl final : wire::Mgmtd::Service {
  MgmtdOptions opt;
  std::unique_ptr<KvEngine> kv;
  std::unique_ptr<ClusterState> state;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  std::mutex mu;
  std::condition_variable changed;
  bool stopping = false;
  std::thread ticker;
  std::map<std::string, Clock::time_point> meta;  // metadata service -> lease end (under mu)

  // The routing info with the metadata services whose lease lasts.
  Routing routing_now() {
    Routing r = state->routing();
    std::lock_guard lk(mu);
    const auto now = Clock::now();
    for (auto it = meta.begin(); it != meta.end();)
      if (it->second < now) {
        it = meta.erase(it);
      } else {
        r.meta.push_back(it->first);
        ++it;
      }
    return r;
  }

  grpc::Status MetaHeartbeat(grpc::ServerContext*, const wire::MetaHeartbeatReq* req,
                             wire::MetaHeartbeatRsp* rsp) override {
    if (req->address().empty()) {
      set_status(rsp->mutable_status(), wire::BAD_REQUEST, "meta heartbeat: no address");
      return grpc::Status::OK;
    }
    std::lock_guard lk(mu);
    meta[req->address()] = Clock::now() + std::chrono::milliseconds(opt.lease_ms);
    rsp->set_lease_ms(uint32_t(opt.lease_ms));
    return grpc::Status::OK;
  }

  void notify() {
    std::lock_guard lk(mu);
    changed.notify_all();
  }

  grpc::Status Register(grpc::ServerContext*, const wire::RegisterReq* req,
                        wire::RegisterRsp* rsp) override {
    const std::vector<uint32_t> targets(req->target_ids().begin(), req->target_ids().end());
    const std::string err =
        state->register_node(req->node_id(), req->address(), targets, Clock::now());
    if (!err.empty()) {
      set_status(rsp->mutable_status(), wire::BAD_REQUEST, "register: " + err);
      return grpc::Status::OK;
    }
    notify();
    *rsp->mutable_routing() = to_wire(routing_now());
    rsp->set_heartbeat_ms(uint32_t(opt.heartbeat_ms));
    rsp->set_lease_ms(uint32_t(opt.lease_ms));
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const wire::HeartbeatReq* req,
                         wire::HeartbeatRsp* rsp) override {
    std::vector<std::pair<uint32_t, LocalState>> ts;
    for (const auto& t : req->targets()) {
      const uint32_t s = t.local_state();
      if (s != uint32_t(LocalState::UpToDate) && s != uint32_t(LocalState::Online) &&
          s != uint32_t(LocalState::Offline)) {
        set_status(rsp->mutable_status(), wire::BAD_REQUEST,
                   fmt::format("heartbeat: target {} has no local state {}", t.target_id(), s));
        return grpc::Status::OK;
      }
      ts.emplace_back(t.target_id(), LocalState(s));
    }
    if (!state->heartbeat(req->node_id(), ts, Clock::now())) {
      set_status(rsp->mutable_status(), wire::UNKNOWN_TARGET,
                 fmt::format("node {} is not registered", req->node_id()));
      return grpc::Status::OK;
    }
    if (state->version() != req->routing_version()) {
      *rsp->mutable_routing() = to_wire(routing_now());
    }
    return grpc::Status::OK;
  }

  grpc::Status GetRouting(grpc::ServerContext* ctx, const wire::GetRoutingReq* req,
                          wire::GetRoutingRsp* rsp) override {
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(std::min<uint32_t>(req->wait_ms(), 10000));
    {
      std::unique_lock lk(mu);
      changed.wait_until(lk, until, [&] {
        return stopping || ctx->IsCancelled() || state->version() != req->known_version();
      });
    }
    *rsp->mutable_routing() = to_wire(routing_now());
    return grpc::Status::OK;
  }

  grpc::Status CreateChains(grpc::ServerContext*, const wire::CreateChainsReq* req,
                            wire::CreateChainsRsp* rsp) override {
    const std::string err = state->create_chains(req->table_id(), req->replicas());
    if (!err.empty()) {
      set_status(rsp->mutable_status(), wire::BAD_REQUEST, "create chains: " + err);
      return grpc::Status::OK;
    }
    notify();
    *rsp->mutable_routing() = to_wire(routing_now());
    return grpc::Status::OK;
  }

  void tick_loop() {
    std::unique_lock lk(mu);
    while (!stopping) {
      changed.wait_for(lk, std::chrono::milliseconds(opt.update_ms));
      if (stopping) break;
      lk.unlock();
      const bool moved = state->update(Clock::now());
      lk.lock();
      if (moved) changed.notify_all();
    }
  }
};

MgmtdServer::MgmtdServer(const MgmtdOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = options;
  FF_CHECK(
      options.heartbeat_ms > 0 && options.lease_ms > options.heartbeat_ms && options.update_ms > 0,
      "mgmtd: need 0 < heartbeat ({} ms) < lease ({} ms) and an update interval",
      options.heartbeat_ms, options.lease_ms);
  m.kv = options.db_dir.empty() ? make_memory_kv() : open_rocksdb_kv(options.db_dir);
  m.state = std::make_unique<ClusterState>(*m.kv, std::chrono::milliseconds(options.lease_ms),
                                           Clock::now());
  grpc::ServerBuilder b;
  exclusive_port(b);
  int port = 0;
  b.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&m);
  m.server = b.BuildAndStart();
  FF_CHECK(m.server && port > 0, "mgmtd: cannot listen on {}", options.listen);
  m.address = options.listen.substr(0, options.listen.rfind(':')) + ":" + std::to_string(port);
  m.ticker = std::thread([&m] { m.tick_loop(); });
}

MgmtdServer::~MgmtdServer() {
  stop();
}

void MgmtdServer::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    if (m.stopping) return;
    m.stopping = true;
    m.changed.notify_all();
  }
  m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  m.ticker.join();
}

std::string MgmtdServer::address() const {
  return impl_->address;
}

Routing MgmtdServer::routing() const {
  return impl_->routing_now();
}

}  // namespace ff::fs
