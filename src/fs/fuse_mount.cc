// FuseMount: libfuse3's low-level operations over FsClient. Each request is answered on the
// thread that received it (libfuse's multi-threaded loop); open files and directories are
// handles (fi->fh). Directories are listed in pages of the metadata service's readdir, "." and
// ".." first; a directory handle keeps what it listed, so offsets stay valid while it is open.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/core.h"
#include "fs/mount.h"

namespace ff::fs {
namespace {

struct DirHandle {
  std::mutex mu;
  std::vector<DirEntry> entries;
  bool complete = false;
};

mode_t type_bits(FileType t) {
  return t == FileType::Directory ? S_IFDIR : t == FileType::Symlink ? S_IFLNK : S_IFREG;
}

timespec to_ts(int64_t ns) {
  return timespec{time_t(ns / 1000000000), long(ns % 1000000000)};
}
int64_t from_ts(const timespec& t) {
  return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}
int64_t now_ns() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return from_ts(t);
}

void fill(const Inode& n, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = n.id;
  st->st_mode = type_bits(n.type) | (n.mode & 07777);
  st->st_nlink = n.nlink;
  st->st_uid = n.uid;
  st->st_gid = n.gid;
  st->st_size = off_t(n.length);
  st->st_blocks = blkcnt_t((n.length + 511) / 512);
  st->st_blksize = n.type == FileType::File ? blksize_t(n.layout.chunk_size) : 4096;
  st->st_atim = to_ts(n.atime_ns);
  st->st_mtim = to_ts(n.mtime_ns);
  st->st_ctim = to_ts(n.ctime_ns);
}

}  // namespace

struct FuseMount::Impl {
  FsClient& client;
  MountOptions opt;
  fuse_session* se = nullptr;
  std::thread loop;
  std::mutex mu;
  std::condition_variable cv;
  bool running = false, unmounted = false;

  Impl(FsClient& c, const MountOptions& o) : client(c), opt(o) {}

  static Impl& of(fuse_req_t req) { return *static_cast<Impl*>(fuse_req_userdata(req)); }
  static Owner owner(fuse_req_t req) {
    const fuse_ctx* c = fuse_req_ctx(req);
    return Owner{uint32_t(c->uid), uint32_t(c->gid)};
  }

  void reply_entry(fuse_req_t req, const MetaResult& r) {
    if (!r.ok()) {
      fuse_reply_err(req, r.err);
      return;
    }
    fuse_entry_param e{};
    e.ino = r.inode.id;
    e.attr_timeout = e.entry_timeout = opt.attr_timeout;
    fill(r.inode, &e.attr);
    fuse_reply_entry(req, &e);
  }
  void reply_attr(fuse_req_t req, const MetaResult& r) {
    if (!r.ok()) {
      fuse_reply_err(req, r.err);
      return;
    }
    struct stat st;
    fill(r.inode, &st);
    fuse_reply_attr(req, &st, opt.attr_timeout);
  }

  // ---- operations ----

  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Impl& m = of(req);
    m.reply_entry(req, m.client.lookup(parent, name));
  }
  static void forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Impl& m = of(req);
    m.reply_attr(req, m.client.stat(ino));
  }
  static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                      fuse_file_info*) {
    Impl& m = of(req);
    SetAttr a;
    std::optional<uint64_t> length;
    if (to_set & FUSE_SET_ATTR_MODE) a.mode = uint32_t(attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID) a.uid = uint32_t(attr->st_uid);
    if (to_set & FUSE_SET_ATTR_GID) a.gid = uint32_t(attr->st_gid);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
      a.atime_ns = now_ns();
    else if (to_set & FUSE_SET_ATTR_ATIME)
      a.atime_ns = from_ts(attr->st_atim);
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
      a.mtime_ns = now_ns();
    else if (to_set & FUSE_SET_ATTR_MTIME)
      a.mtime_ns = from_ts(attr->st_mtim);
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (attr->st_size < 0) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      length = uint64_t(attr->st_size);
    }
    m.reply_attr(req, m.client.setattr(ino, a, length));
  }
  static void readlink(fuse_req_t req, fuse_ino_t ino) {
    const MetaResult r = of(req).client.readlink(ino);
    if (!r.ok())
      fuse_reply_err(req, r.err);
    else
      fuse_reply_readlink(req, r.inode.target.c_str());
  }
  static void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
    Impl& m = of(req);
    if (!S_ISREG(mode)) {  // no devices, FIFOs or sockets in this file system
      fuse_reply_err(req, EPERM);
      return;
    }
    uint64_t fh = 0;
    Inode n;
    const int e = m.client.create(parent, name, mode & 07777, owner(req), &fh, &n);
    if (e == 0) m.client.close(fh);
    m.reply_entry(req, MetaResult{e, n});
  }
  static void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    Impl& m = of(req);
    m.reply_entry(req, m.client.mkdir(parent, name, mode & 07777, owner(req)));
  }
  static void unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    fuse_reply_err(req, of(req).client.unlink(parent, name));
  }
  static void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    fuse_reply_err(req, of(req).client.rmdir(parent, name));
  }
  static void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    Impl& m = of(req);
    m.reply_entry(req, m.client.symlink(parent, name, target, owner(req)));
  }
  static void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                     const char* newname, unsigned int flags) {
    if (flags & ~unsigned(RENAME_NOREPLACE)) {  // RENAME_EXCHANGE, RENAME_WHITEOUT
      fuse_reply_err(req, EINVAL);
      return;
    }
    fuse_reply_err(
        req, of(req).client.rename(parent, name, newparent, newname, flags & RENAME_NOREPLACE));
  }
  static void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
    Impl& m = of(req);
    m.reply_entry(req, m.client.link(ino, newparent, newname));
  }
  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    uint64_t fh = 0;
    const int e = of(req).client.open(ino, fi->flags & (O_ACCMODE | O_TRUNC | O_APPEND), &fh);
    if (e) {
      fuse_reply_err(req, e);
      return;
    }
    fi->fh = fh;
    fuse_reply_open(req, fi);
  }
  static void read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
    std::string buf(size, '\0');
    const int64_t n = of(req).client.pread(fi->fh, buf.data(), size, uint64_t(off));
    if (n < 0)
      fuse_reply_err(req, int(-n));
    else
      fuse_reply_buf(req, buf.data(), size_t(n));
  }
  static void write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
                    fuse_file_info* fi) {
    const int64_t n = of(req).client.pwrite(fi->fh, buf, size, uint64_t(off));
    if (n < 0)
      fuse_reply_err(req, int(-n));
    else
      fuse_reply_write(req, size_t(n));
  }
  // close(2): the length settles here, so that another client sees it once close returns.
  static void flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    fuse_reply_err(req, of(req).client.fsync(fi->fh));
  }
  static void release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    of(req).client.close(fi->fh);
    fuse_reply_err(req, 0);
  }
  static void fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
    fuse_reply_err(req, of(req).client.fsync(fi->fh));
  }
  static void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    const MetaResult r = of(req).client.stat(ino);
    if (!r.ok()) {
      fuse_reply_err(req, r.err);
      return;
    }
    if (r.inode.type != FileType::Directory) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    fi->fh = reinterpret_cast<uint64_t>(new DirHandle);
    fuse_reply_open(req, fi);
  }
  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    Impl& m = of(req);
    auto* d = reinterpret_cast<DirHandle*>(fi->fh);
    std::lock_guard lk(d->mu);
    // Offsets: 1 after ".", 2 after "..", 2 + k after entry k.
    while (!d->complete && size_t(off) >= 2 + d->entries.size()) {
      std::vector<DirEntry> page;
      const int e =
          m.client.readdir(ino, d->entries.empty() ? "" : d->entries.back().name, 1024, &page);
      if (e) {
        fuse_reply_err(req, e);
        return;
      }
      d->complete = page.size() < 1024;
      d->entries.insert(d->entries.end(), page.begin(), page.end());
    }
    std::string buf(size, '\0');
    size_t used = 0;
    for (size_t i = size_t(off); i < 2 + d->entries.size(); ++i) {
      struct stat st {};
      const char* name = i == 0 ? "." : i == 1 ? ".." : d->entries[i - 2].name.c_str();
      st.st_ino = i < 2 ? ino : d->entries[i - 2].id;
      st.st_mode = i < 2 ? S_IFDIR : type_bits(d->entries[i - 2].type);
      const size_t need =
          fuse_add_direntry(req, buf.data() + used, size - used, name, &st, off_t(i + 1));
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  }
  static void releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    delete reinterpret_cast<DirHandle*>(fi->fh);
    fuse_reply_err(req, 0);
  }
  static void statfs(fuse_req_t req, fuse_ino_t) {
    struct statvfs s {};
    s.f_bsize = s.f_frsize = 4096;
    s.f_blocks = s.f_bfree = s.f_bavail = uint64_t(1) << 40;  // not tracked: 4 PiB
    s.f_files = s.f_ffree = s.f_favail = uint64_t(1) << 40;
    s.f_namemax = kMaxName;
    fuse_reply_statfs(req, &s);
  }
  static void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                     fuse_file_info* fi) {
    Impl& m = of(req);
    uint64_t fh = 0;
    Inode n;
    const int e = m.client.create(parent, name, mode & 07777, owner(req), &fh, &n);
    if (e) {
      fuse_reply_err(req, e);
      return;
    }
    fi->fh = fh;
    fuse_entry_param p{};
    p.ino = n.id;
    p.attr_timeout = p.entry_timeout = m.opt.attr_timeout;
    fill(n, &p.attr);
    fuse_reply_create(req, &p, fi);
  }
  static void init(void*, fuse_conn_info* conn) {
    conn->max_write = 1 << 20;
    conn->want &= ~unsigned(FUSE_CAP_ATOMIC_O_TRUNC);
  }
};

FuseMount::FuseMount(FsClient& client, const MountOptions& options)
    : impl_(std::make_unique<Impl>(client, options)) {
  Impl& m = *impl_;
  fuse_lowlevel_ops ops{};
  ops.init = Impl::init;
  ops.lookup = Impl::lookup;
  ops.forget = Impl::forget;
  ops.getattr = Impl::getattr;
  ops.setattr = Impl::setattr;
  ops.readlink = Impl::readlink;
  ops.mknod = Impl::mknod;
  ops.mkdir = Impl::mkdir;
  ops.unlink = Impl::unlink;
  ops.rmdir = Impl::rmdir;
  ops.symlink = Impl::symlink;
  ops.rename = Impl::rename;
  ops.link = Impl::link;
  ops.open = Impl::open;
  ops.read = Impl::read;
  ops.write = Impl::write;
  ops.flush = Impl::flush;
  ops.release = Impl::release;
  ops.fsync = Impl::fsync;
  ops.opendir = Impl::opendir;
  ops.readdir = Impl::readdir;
  ops.releasedir = Impl::releasedir;
  ops.statfs = Impl::statfs;
  ops.create = Impl::create;
  std::string o = "default_permissions,fsname=fireflyer,subtype=fireflyer";
  if (options.allow_other) o += ",allow_other";
  std::vector<std::string> argv_s = {"fireflyer", "-o", o};
  if (options.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(int(argv.size()), argv.data());
  m.se = fuse_session_new(&args, &ops, sizeof ops, &m);
  FF_CHECK(m.se, "fs mount: cannot start a FUSE session (options {})", o);
  struct stat st {};
  if (::stat(options.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    fuse_session_destroy(m.se);
    ::ff::fail("fs mount: {} is not a directory", options.mountpoint);
  }
  if (fuse_session_mount(m.se, options.mountpoint.c_str()) != 0) {
    fuse_session_destroy(m.se);
    ::ff::fail(
        "fs mount: cannot mount on {} (is /dev/fuse there, and are you root or is "
        "fusermount3 installed?)",
        options.mountpoint);
  }
  // A process that serves its own mount cannot dump core: the dump waits for a thread blocked in a
  // request to the mount, whose server threads are the ones being dumped (the machine hangs on
  // it until the connection is aborted). A crash ends the process instead.
  rlimit core{};
  if (::getrlimit(RLIMIT_CORE, &core) == 0) {
    core.rlim_cur = 0;
    ::setrlimit(RLIMIT_CORE, &core);
  }
  m.running = true;
  m.loop = std::thread([&m] {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, std::max(m.opt.max_threads, 1u));
    fuse_session_loop_mt(m.se, cfg);
    fuse_loop_cfg_destroy(cfg);
    std::lock_guard lk(m.mu);
    m.running = false;
    m.cv.notify_all();
  });
}

FuseMount::~FuseMount() {
  unmount();
}

void FuseMount::unmount() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    if (m.unmounted) return;
    m.unmounted = true;
  }
  fuse_session_exit(m.se);
  fuse_session_unmount(m.se);
  m.loop.join();
  fuse_session_destroy(m.se);
}

void FuseMount::wait() {
  std::unique_lock lk(impl_->mu);
  impl_->cv.wait(lk, [&] { return !impl_->running; });
}

bool FuseMount::mounted() const {
  std::lock_guard lk(impl_->mu);
  return impl_->running;
}

}  // namespace ff::fs
