// MetaServer: MetaStore behind gRPC (one Call RPC, an op per fs/meta.h operation), plus what needs
// the storage cluster: a file's length settled from each of its chains' last chunk (close, fsync,
// a writer whose lease ran out), truncation of the chunks, and the deferred removal of removed
// files' chunks. The service keeps no state of its own: every answer comes from one transaction
// of the store (or a storage query before one), so any number can run over one shared store.
#include <condition_variable>
#include <random>
#include <thread>

#include "core/core.h"
#include "fs/cluster.h"
#include "fs/wire.h"

namespace ff::fs {
namespace {

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct MetaServer::Impl final : wire::Meta::Service {
  MetaOptions opt;
  std::unique_ptr<TxnStore> store;
  std::unique_ptr<MetaStore> meta;
  std::unique_ptr<StorageClient> storage;
  StubCache stubs;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread worker;

  // ---- the storage side of a file ----

  std::vector<uint32_t> chains_of(const Inode& n) {
    std::vector<uint32_t> c = file_chains(storage->routing(), n.layout);
    if (c.empty()) c = file_chains(storage->refresh(), n.layout);
    return c;
  }

  // The end of the file's last byte on the storage (0: no chunk).
  FsStatus storage_extent(const Inode& n, uint64_t* end) {
    const auto chains = chains_of(n);
    if (chains.empty())
      return {FsCode::UnknownChain, fmt::format("no chain table {}", n.layout.table_id)};
    *end = 0;
    for (const uint32_t c : chains) {
      std::optional<ChunkMeta> last;
      const FsStatus s = storage->query_last_chunk(c, n.id, &last);
      if (!s.ok()) return s;
      if (last) *end = std::max(*end, last->id.index() * n.layout.chunk_size + last->length);
    }
    return {};
  }

  // Drops the file's bytes from `length` on: whole chunks past it, the tail of the one it ends in.
  FsStatus truncate_chunks(const Inode& n, uint64_t length) {
    const auto chains = chains_of(n);
    if (chains.empty())
      return {FsCode::UnknownChain, fmt::format("no chain table {}", n.layout.table_id)};
    const uint64_t cs = n.layout.chunk_size, stripe = chains.size();
    for (const uint32_t c : chains) {
      std::optional<ChunkMeta> last;
      FsStatus s = storage->query_last_chunk(c, n.id, &last);
      if (!s.ok()) return s;
      if (!last) continue;
      // Down from the chain's last chunk over the chunks this chain holds (every stripe-th).
      for (uint64_t idx = last->id.index();; idx -= stripe) {
        const uint64_t start = idx * cs;
        const ChunkId id = ChunkId::of(n.id, idx);
        if (start >= length) {
          const WriteResult w = storage->remove(c, id);
          if (!w.status.ok()) return w.status;
        } else {
          if (length - start < cs) {
            const WriteResult w = storage->truncate(c, id, uint32_t(length - start), uint32_t(cs));
            if (!w.status.ok()) return w.status;
          }
          break;
        }
        if (idx < stripe) break;
      }
    }
    return {};
  }

  static int storage_errno(const FsStatus& s) { return s.code == FsCode::NoSpace ? ENOSPC : EIO; }

  // The length becomes at least what the storage holds (close, fsync, an expired session).
  MetaResult settle(uint64_t id, std::string* why) {
    MetaResult r = meta->stat(id);
    if (!r.ok() || r.inode.type != FileType::File) return r;
    uint64_t end = 0;
    const FsStatus s = storage_extent(r.inode, &end);
    if (!s.ok()) {
      *why = "file length: " + s.str();
      return MetaResult{storage_errno(s), {}};
    }
    return meta->settle_length(id, end);
  }

  MetaResult truncate(uint64_t id, uint64_t length, std::string* why) {
    if (length > MetaStore::max_length) return MetaResult{EFBIG, {}};
    MetaResult r = meta->stat(id);
    if (!r.ok()) return r;
    if (r.inode.type == FileType::Directory) return MetaResult{EISDIR, {}};
    if (r.inode.type != FileType::File) return MetaResult{EINVAL, {}};
    // The storage first: a length recorded before the chunks are cut could be raised again by a
    // writer's settle from the old chunks.
    const FsStatus s = truncate_chunks(r.inode, length);
    if (!s.ok()) {
      *why = "truncate: " + s.str();
      return MetaResult{storage_errno(s), {}};
    }
    return meta->set_length(id, length);
  }

  Layout layout_for(const wire::MetaReq& q) {
    Layout l = opt.layout;
    if (q.table_id()) l.table_id = q.table_id();
    if (q.chunk_size()) l.chunk_size = q.chunk_size();
    if (q.stripe()) l.stripe = q.stripe();
    thread_local std::mt19937_64 rng{std::random_device{}()};
    l.seed = rng();
    return l;
  }

  WriteSession session_of(const wire::MetaReq& q) const {
    return WriteSession{q.id(), q.session(), q.client_id(),
                        wall_ns() + int64_t(opt.session_lease_ms) * 1000000};
  }

  int handle(const wire::MetaReq& q, wire::MetaRsp* rsp) {
    const auto out = [&](const MetaResult& r) {
      if (r.ok()) to_wire(r.inode, rsp->mutable_inode());
      return r.err;
    };
    const Owner owner{q.uid(), q.gid()};
    std::string why;
    int err = 0;
    switch (q.op()) {
      case wire::LOOKUP:
        return out(meta->lookup(q.parent(), q.name()));
      case wire::STAT:
        return out(meta->stat(q.id()));
      case wire::MKDIR:
        return out(meta->mkdir(q.parent(), q.name(), q.mode(), owner));
      case wire::CREATE: {
        const Layout l = layout_for(q);
        if (!l.check().empty()) return EINVAL;
        WriteSession s = session_of(q);
        if (q.write()) rsp->set_lease_ms(uint32_t(opt.session_lease_ms));
        return out(
            meta->create(q.parent(), q.name(), q.mode(), owner, l, q.write() ? &s : nullptr));
      }
      case wire::SYMLINK:
        return out(meta->symlink(q.parent(), q.name(), q.target(), owner));
      case wire::READDIR: {
        std::vector<DirEntry> es;
        const size_t limit = q.limit() ? std::min<uint32_t>(q.limit(), 4096) : 1024;
        if (const int e = meta->readdir(q.id(), q.after(), limit, &es)) return e;
        for (const DirEntry& d : es) {
          auto* w = rsp->add_entries();
          w->set_name(d.name);
          w->set_id(d.id);
          w->set_type(uint32_t(d.type));
        }
        return 0;
      }
      case wire::UNLINK:
        return meta->unlink(q.parent(), q.name());
      case wire::RMDIR:
        return meta->rmdir(q.parent(), q.name());
      case wire::LINK:
        return out(meta->link(q.id(), q.parent(), q.name()));
      case wire::READLINK:
        return out(meta->readlink(q.id()));
      case wire::SETATTR: {
        if (q.has_set_length()) {
          const MetaResult t = truncate(q.id(), q.set_length(), &why);
          if (!t.ok()) {
            err = t.err;
            break;
          }
        }
        SetAttr a;
        if (q.has_set_mode()) a.mode = q.set_mode();
        if (q.has_set_uid()) a.uid = q.set_uid();
        if (q.has_set_gid()) a.gid = q.set_gid();
        if (q.has_set_atime_ns()) a.atime_ns = q.set_atime_ns();
        if (q.has_set_mtime_ns()) a.mtime_ns = q.set_mtime_ns();
        return out(meta->setattr(q.id(), a));
      }
      case wire::RENAME:
        return meta->rename(q.parent(), q.name(), q.new_parent(), q.new_name(), q.noreplace());
      case wire::OPEN: {
        MetaResult r = q.write() ? meta->open_session(session_of(q)) : meta->stat(q.id());
        if (!r.ok()) return r.err;
        if (q.write()) rsp->set_lease_ms(uint32_t(opt.session_lease_ms));
        if (q.truncate()) {
          r = truncate(q.id(), 0, &why);
          if (!r.ok()) {
            if (q.write()) meta->close_session(q.id(), q.session());
            err = r.err;
            break;
          }
        }
        return out(r);
      }
      case wire::CLOSE: {
        if (q.wrote()) {
          const MetaResult r = settle(q.id(), &why);
          if (!r.ok() && r.err != ENOENT) {
            err = r.err;  // the session stays: the writer may retry, or its lease ends
            break;
          }
        }
        if (const int e = meta->close_session(q.id(), q.session())) return e;
        if (!q.wrote()) return 0;  // nothing changed: no inode to send back
        const MetaResult r = meta->stat(q.id());
        return r.err == ENOENT ? 0 : out(r);
      }
      case wire::SYNC: {
        const MetaResult r = settle(q.id(), &why);
        if (r.ok() || r.err != EIO) return out(r);
        err = r.err;
        break;
      }
      case wire::RENEW: {
        std::vector<WriteSession> ss;
        for (const auto& s : q.sessions()) ss.push_back(WriteSession{s.inode(), s.session(), 0, 0});
        rsp->set_renewed(
            meta->renew_sessions(ss, wall_ns() + int64_t(opt.session_lease_ms) * 1000000));
        rsp->set_lease_ms(uint32_t(opt.session_lease_ms));
        return 0;
      }
      default:
        return EINVAL;
    }
    rsp->set_message(why);
    return err;
  }

  grpc::Status Call(grpc::ServerContext*, const wire::MetaReq* req, wire::MetaRsp* rsp) override {
    rsp->set_err(handle(*req, rsp));
    if (rsp->err() == EIO && rsp->message().empty())
      rsp->set_message("the metadata store did not commit");
    return grpc::Status::OK;
  }

  // ---- background: heartbeats, expired sessions, garbage ----

  void heartbeat() {
    wire::MetaHeartbeatReq req;
    req.set_address(address);
    wire::MetaHeartbeatRsp rsp;
    grpc::ClientContext ctx;
    set_deadline(ctx, 2000);
    stubs.mgmtd(opt.mgmtd)->MetaHeartbeat(&ctx, req, &rsp);
  }

  void collect() {
    for (const WriteSession& s : meta->expired_sessions(wall_ns(), 64)) {
      std::string why;
      const MetaResult r = settle(s.inode, &why);
      if (r.ok() || r.err == ENOENT || r.err == EINVAL) meta->close_session(s.inode, s.session);
    }
    for (const Garbage& g : meta->garbage(256)) {
      if (g.busy) continue;
      if (truncate_chunks(g.inode, 0).ok()) meta->garbage_done(g.inode.id);
    }
  }

  void work_loop() {
    auto next_beat = std::chrono::steady_clock::now();
    auto next_gc = next_beat;
    std::unique_lock lk(mu);
    while (!stopping) {
      cv.wait_until(lk, std::min(next_beat, next_gc));
      if (stopping) break;
      lk.unlock();
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_beat) {
        heartbeat();
        next_beat = now + std::chrono::milliseconds(opt.heartbeat_ms);
      }
      if (now >= next_gc) {
        collect();
        next_gc = std::chrono::steady_clock::now() + std::chrono::milliseconds(opt.gc_interval_ms);
      }
      lk.lock();
    }
  }
};

MetaServer::MetaServer(const MetaOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = options;
  FF_CHECK(!options.mgmtd.empty(), "meta: no mgmtd address");
  FF_CHECK(options.layout.check().empty(), "meta: default layout: {}", options.layout.check());
  FF_CHECK(options.session_lease_ms > 0 && options.heartbeat_ms > 0 && options.gc_interval_ms > 0,
           "meta: lease, heartbeat and GC intervals must be positive");
  m.store = !options.etcd.empty()     ? open_etcd_txn_store(options.etcd)
            : !options.db_dir.empty() ? open_rocksdb_txn_store(options.db_dir)
                                      : make_memory_txn_store();
  m.meta = std::make_unique<MetaStore>(*m.store);
  ClientOptions co;
  co.mgmtd = options.mgmtd;
  m.storage = std::make_unique<StorageClient>(co);
  grpc::ServerBuilder b;
  exclusive_port(b);
  int port = 0;
  b.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&m);
  m.server = b.BuildAndStart();
  FF_CHECK(m.server && port > 0, "meta: cannot listen on {}", options.listen);
  m.address = options.listen.substr(0, options.listen.rfind(':')) + ":" + std::to_string(port);
  m.worker = std::thread([&m] { m.work_loop(); });
}

MetaServer::~MetaServer() {
  stop();
}

void MetaServer::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    if (m.stopping) return;
    m.stopping = true;
    m.cv.notify_all();
  }
  m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  m.worker.join();
}

std::string MetaServer::address() const {
  return impl_->address;
}

}  // namespace ff::fs
