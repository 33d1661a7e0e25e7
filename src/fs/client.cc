// StorageClient: routing from mgmtd (a long poll keeps it fresh), updates to the chain head with
// retries that keep their (channel, seq) so the head applies each once, reads from a random
// serving replica that fall over to the others.
#include <condition_variable>
#include <random>
#include <thread>

#include "core/core.h"
#include "fs/cluster.h"
#include "fs/wire.h"

namespace ff::fs {
namespace {

using Steady = std::chrono::steady_clock;

bool retryable(FsCode c) {
  return c == FsCode::NotHead || c == FsCode::StaleChainVersion || c == FsCode::NotServing ||
         c == FsCode::Unavailable || c == FsCode::Busy || c == FsCode::UnknownTarget;
}

FsStatus from_wire_status(const grpc::Status& g, const wire::Status& s) {
  if (!g.ok()) return {FsCode::Unavailable, g.error_message()};
  return {FsCode(s.code()), s.message()};
}

// A read's answer that another replica would give too (no point asking one).
bool settled(FsCode c) {
  return c == FsCode::Ok || c == FsCode::NotFound || c == FsCode::BadRange ||
         c == FsCode::BadRequest;
}

int ms_left(Steady::time_point until) {
  return int(std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(until - Steady::now()).count()));
}

}  // namespace

const char* code_name(FsCode c) {
  return wire::Code_Name(wire::Code(c)).c_str();
}

std::string FsStatus::str() const {
  return message.empty() ? code_name(code) : fmt::format("{}: {}", code_name(code), message);
}

struct StorageClient::Impl {
  ClientOptions opt;
  StubCache stubs;
  mutable std::mutex mu;
  std::shared_ptr<const Routing> routing = std::make_shared<Routing>();
  std::condition_variable cv;
  std::vector<uint64_t> seqs;
  std::vector<uint32_t> free_channels;
  bool stopping = false;
  grpc::ClientContext* watch_ctx = nullptr;
  std::thread watcher;
  std::minstd_rand rng{std::random_device{}()};

  std::shared_ptr<const Routing> current() const {
    std::lock_guard lk(mu);
    return routing;
  }

  // `watching`: the long poll of the watcher thread, which the destructor cancels.
  bool fetch(uint64_t known, int wait_ms, bool watching = false) {
    grpc::ClientContext ctx;
    if (watching) {
      std::lock_guard lk(mu);
      if (stopping) return false;
      watch_ctx = &ctx;
    }
    wire::RoutingInfo got;
    const bool ok = get_routing(stubs, opt.mgmtd, known, wait_ms, &got, &ctx);
    if (watching) {
      std::lock_guard lk(mu);
      watch_ctx = nullptr;
    }
    if (!ok) return false;
    std::lock_guard lk(mu);
    if (got.version() > routing->version) {
      routing = std::make_shared<const Routing>(from_wire(got));
    } else if (got.version() == routing->version &&
               !std::equal(got.meta().begin(), got.meta().end(), routing->meta.begin(),
                           routing->meta.end())) {
      // The metadata services' list is not versioned: a fetch of the same version brings it.
      auto r = std::make_shared<Routing>(*routing);
      r->meta.assign(got.meta().begin(), got.meta().end());
      routing = std::move(r);
    }
    return true;
  }

  void watch() {
    for (;;) {
      {
        std::lock_guard lk(mu);
        if (stopping) return;
      }
      if (!fetch(current()->version, 1000, true)) {
        std::unique_lock lk(mu);
        cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return stopping; });
      }
    }
  }

  uint32_t random(size_t n) {
    std::lock_guard lk(mu);
    return uint32_t(rng() % n);
  }

  void pause(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

  WriteResult update(wire::UpdateReq req) {
    uint32_t ch;
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return !free_channels.empty(); });
      ch = free_channels.back();
      free_channels.pop_back();
      req.set_seq(++seqs[ch]);
    }
    req.set_client_id(opt.client_id);
    req.set_channel(ch);
    WriteResult out;
    const auto until = Steady::now() + std::chrono::milliseconds(opt.deadline_ms);
    int attempts = 0;
    for (;; ++attempts) {
      const auto r = current();
      const ChainRoute* c = r->chain(req.chain_id());
      const TargetRoute* head = c ? c->head() : nullptr;
      if (!c) {
        if (attempts == 0 && fetch(r->version, 0)) continue;
        out.status = {FsCode::UnknownChain, fmt::format("no chain {}", req.chain_id())};
        break;
      }
      if (!head) {
        out.status = {FsCode::Unavailable,
                      fmt::format("chain {} has no serving target", req.chain_id())};
      } else {
        req.set_chain_version(c->version);
        req.set_target_id(head->target_id);
        wire::UpdateRsp rsp;
        grpc::ClientContext ctx;
        set_deadline(ctx, std::max(1, std::min(opt.rpc_timeout_ms, ms_left(until))));
        const grpc::Status g =
            stubs.storage(r->address_of(head->target_id))->Update(&ctx, req, &rsp);
        out.status = from_wire_status(g, rsp.status());
        out.version = rsp.version();
        out.length = rsp.length();
        out.crc = rsp.crc();
      }
      if (out.status.ok() || !retryable(out.status.code) || ms_left(until) == 0) break;
      if (out.status.code == FsCode::Busy)
        pause(10);
      else
        fetch(r->version, std::min(300, ms_left(until)));
    }
    if (!out.status.ok() && retryable(out.status.code))
      out.status.message += fmt::format(" (after {} attempts)", attempts + 1);
    std::lock_guard lk(mu);
    free_channels.push_back(ch);
    cv.notify_one();
    return out;
  }

  // One BatchRead to one target.
  std::vector<ReadResult> read_at(const Routing& r, uint32_t target,
                                  const std::vector<const ReadRequest*>& reads, int timeout_ms) {
    wire::BatchReadReq req;
    for (const ReadRequest* x : reads) {
      wire::ReadIo* io = req.add_ios();
      io->set_chain_id(x->chain_id);
      io->set_chunk_id(id_bytes(x->chunk));
      io->set_offset(x->offset);
      io->set_length(x->length);
      io->set_target_id(target);
    }
    wire::BatchReadRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, std::max(1, timeout_ms));
    const grpc::Status g = stubs.storage(r.address_of(target))->BatchRead(&ctx, req, &rsp);
    std::vector<ReadResult> out(reads.size());
    for (size_t i = 0; i < reads.size(); ++i) {
      out[i].target_id = target;
      if (!g.ok() || rsp.results_size() != int(reads.size())) {
        out[i].status = {FsCode::Unavailable, g.ok() ? "a short batch answer" : g.error_message()};
        continue;
      }
      const wire::ReadResult& w = rsp.results(int(i));
      out[i].status = {FsCode(w.status().code()), w.status().message()};
      out[i].data = w.data();
      out[i].version = w.version();
    }
    return out;
  }

  ReadResult read(const ReadRequest& x) {
    const auto until = Steady::now() + std::chrono::milliseconds(opt.deadline_ms);
    ReadResult last;
    for (int round = 0;; ++round) {
      const auto r = current();
      const ChainRoute* c = r->chain(x.chain_id);
      if (!c) {
        if (!fetch(r->version, 0) || !current()->chain(x.chain_id)) {
          last.status = {FsCode::UnknownChain, fmt::format("no chain {}", x.chain_id)};
          return last;
        }
        continue;
      }
      std::vector<uint32_t> targets;
      if (x.target_id)
        targets.push_back(x.target_id);
      else
        for (const TargetRoute* t : c->serving()) targets.push_back(t->target_id);
      if (!targets.empty())
        std::rotate(targets.begin(), targets.begin() + random(targets.size()), targets.end());
      if (targets.empty())
        last.status = {FsCode::Unavailable,
                       fmt::format("chain {} has no serving target", x.chain_id)};
      for (const uint32_t t : targets) {
        last = read_at(*r, t, {&x}, std::min(opt.rpc_timeout_ms, ms_left(until)))[0];
        if (settled(last.status.code)) return last;
        if (x.target_id) return last;  // that replica's answer, whatever it is
      }
      if (ms_left(until) == 0) return last;
      if (last.status.code == FsCode::NotCommitted)
        pause(2 + int(random(8)));
      else
        fetch(r->version, std::min(300, ms_left(until)));
    }
  }
};

StorageClient::StorageClient(const ClientOptions& options) : impl_(std::make_unique<Impl>()) {
  tune_allocator();
  Impl& m = *impl_;
  m.opt = options;
  FF_CHECK(!options.mgmtd.empty(), "fs client: no mgmtd address");
  FF_CHECK(options.channels > 0, "fs client: at least one channel");
  if (m.opt.client_id == 0) m.opt.client_id = (uint64_t(m.rng()) << 31) ^ m.rng() ^ 1;
  m.seqs.assign(options.channels, 0);
  for (uint32_t c = options.channels; c > 0; --c) m.free_channels.push_back(c - 1);
  m.fetch(0, 0);
  m.watcher = std::thread([&m] { m.watch(); });
}

StorageClient::~StorageClient() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    if (impl_->watch_ctx) impl_->watch_ctx->TryCancel();
    impl_->cv.notify_all();
  }
  impl_->watcher.join();
}

Routing StorageClient::refresh(uint64_t known, int wait_ms) {
  impl_->fetch(known, wait_ms);
  return *impl_->current();
}

Routing StorageClient::routing() const {
  return *impl_->current();
}

WriteResult StorageClient::write(uint32_t chain_id, const ChunkId& chunk, uint32_t offset,
                                 std::string_view data, uint32_t chunk_size) {
  wire::UpdateReq req;
  req.set_chain_id(chain_id);
  req.set_chunk_id(id_bytes(chunk));
  req.set_kind(wire::WRITE);
  req.set_offset(offset);
  req.set_data(std::string(data));
  req.set_chunk_size(chunk_size);
  return impl_->update(std::move(req));
}

WriteResult StorageClient::truncate(uint32_t chain_id, const ChunkId& chunk, uint32_t length,
                                    uint32_t chunk_size) {
  wire::UpdateReq req;
  req.set_chain_id(chain_id);
  req.set_chunk_id(id_bytes(chunk));
  req.set_kind(wire::TRUNCATE);
  req.set_length(length);
  req.set_chunk_size(chunk_size);
  return impl_->update(std::move(req));
}

WriteResult StorageClient::remove(uint32_t chain_id, const ChunkId& chunk) {
  wire::UpdateReq req;
  req.set_chain_id(chain_id);
  req.set_chunk_id(id_bytes(chunk));
  req.set_kind(wire::REMOVE);
  return impl_->update(std::move(req));
}

ReadResult StorageClient::read(const ReadRequest& r) {
  return impl_->read(r);
}

std::vector<ReadResult> StorageClient::batch_read(const std::vector<ReadRequest>& reads) {
  Impl& m = *impl_;
  std::vector<ReadResult> out(reads.size());
  const auto r = m.current();
  // One BatchRead per chosen replica; what fails there is read again one by one.
  std::map<uint32_t, std::vector<size_t>> by_target;
  std::vector<size_t> retry;
  for (size_t i = 0; i < reads.size(); ++i) {
    const ChainRoute* c = r->chain(reads[i].chain_id);
    const auto serving = c ? c->serving() : std::vector<const TargetRoute*>{};
    if (reads[i].target_id)
      by_target[reads[i].target_id].push_back(i);
    else if (serving.empty())
      retry.push_back(i);
    else
      by_target[serving[m.random(serving.size())]->target_id].push_back(i);
  }
  for (const auto& [t, idx] : by_target) {
    std::vector<const ReadRequest*> rs;
    for (const size_t i : idx) rs.push_back(&reads[i]);
    auto got = m.read_at(*r, t, rs, m.opt.rpc_timeout_ms);
    for (size_t k = 0; k < idx.size(); ++k) {
      if (settled(got[k].status.code) || reads[idx[k]].target_id)
        out[idx[k]] = std::move(got[k]);
      else
        retry.push_back(idx[k]);
    }
  }
  for (const size_t i : retry) out[i] = m.read(reads[i]);
  return out;
}

FsStatus StorageClient::query_last_chunk(uint32_t chain_id, uint64_t inode,
                                         std::optional<ChunkMeta>* out) {
  Impl& m = *impl_;
  const auto until = Steady::now() + std::chrono::milliseconds(m.opt.deadline_ms);
  for (;;) {
    const auto r = m.current();
    const ChainRoute* c = r->chain(chain_id);
    if (!c) return {FsCode::UnknownChain, fmt::format("no chain {}", chain_id)};
    FsStatus s{FsCode::Unavailable, fmt::format("chain {} has no serving target", chain_id)};
    if (const TargetRoute* head = c->head()) {
      wire::QueryLastReq req;
      req.set_chain_id(chain_id);
      req.set_target_id(head->target_id);
      req.set_inode(inode);
      wire::QueryLastRsp rsp;
      grpc::ClientContext ctx;
      set_deadline(ctx, std::max(1, std::min(m.opt.rpc_timeout_ms, ms_left(until))));
      const grpc::Status g =
          m.stubs.storage(r->address_of(head->target_id))->QueryLastChunk(&ctx, req, &rsp);
      s = from_wire_status(g, rsp.status());
      if (s.ok()) {
        *out = rsp.found() ? std::optional(from_wire(rsp.meta())) : std::nullopt;
        return s;
      }
    }
    if (!retryable(s.code) || ms_left(until) == 0) return s;
    m.fetch(r->version, std::min(300, ms_left(until)));
  }
}

FsStatus StorageClient::list_chunks(uint32_t target_id, std::vector<ChunkMeta>* out) {
  Impl& m = *impl_;
  const auto until = Steady::now() + std::chrono::milliseconds(m.opt.deadline_ms);
  for (;;) {
    const auto r = m.current();
    const std::string address = r->address_of(target_id);
    if (address.empty()) return {FsCode::UnknownTarget, fmt::format("no target {}", target_id)};
    wire::ListChunksReq req;
    req.set_target_id(target_id);
    wire::ListChunksRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, std::max(1, std::min(m.opt.rpc_timeout_ms, ms_left(until))));
    const grpc::Status g = m.stubs.storage(address)->ListChunks(&ctx, req, &rsp);
    const FsStatus s = from_wire_status(g, rsp.status());
    if (s.code == FsCode::Unavailable && ms_left(until) > 0) {  // a node restarting
      m.pause(50);
      continue;
    }
    out->clear();
    for (const auto& w : rsp.metas()) out->push_back(from_wire(w));
    return s;
  }
}

WriteResult StorageClient::send_update_to(uint32_t target_id, uint32_t chain_id,
                                          uint32_t chain_version, const ChunkId& chunk,
                                          uint32_t offset, std::string_view data,
                                          uint32_t chunk_size) {
  Impl& m = *impl_;
  wire::UpdateReq req;
  req.set_chain_id(chain_id);
  req.set_chain_version(chain_version);
  req.set_target_id(target_id);
  req.set_chunk_id(id_bytes(chunk));
  req.set_kind(wire::WRITE);
  req.set_offset(offset);
  req.set_data(std::string(data));
  req.set_chunk_size(chunk_size);
  wire::UpdateRsp rsp;
  grpc::ClientContext ctx;
  set_deadline(ctx, m.opt.rpc_timeout_ms);
  WriteResult out;
  const grpc::Status g =
      m.stubs.storage(m.current()->address_of(target_id))->Update(&ctx, req, &rsp);
  out.status = from_wire_status(g, rsp.status());
  out.version = rsp.version();
  return out;
}

FsStatus create_chains(const std::string& mgmtd, uint32_t table_id, uint32_t replicas) {
  StubCache stubs;
  wire::CreateChainsReq req;
  req.set_table_id(table_id);
  req.set_replicas(replicas);
  wire::CreateChainsRsp rsp;
  grpc::ClientContext ctx;
  set_deadline(ctx, 5000);
  const grpc::Status g = stubs.mgmtd(mgmtd)->CreateChains(&ctx, req, &rsp);
  return from_wire_status(g, rsp.status());
}

bool wait_all_serving(StorageClient& client, int timeout_ms) {
  const auto until = Steady::now() + std::chrono::milliseconds(timeout_ms);
  Routing r = client.refresh();
  for (;;) {
    bool all = !r.chains.empty();
    for (const auto& [id, c] : r.chains)
      for (const TargetRoute& t : c.targets) all &= t.state == PublicState::Serving;
    if (all) return true;
    if (ms_left(until) == 0) return false;
    r = client.refresh(r.version, std::min(500, ms_left(until)));
  }
}

}  // namespace ff::fs
