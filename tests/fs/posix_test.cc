// POSIX behaviour through the FUSE mount (the areas pjdfstest covers: open, create, rename,
// unlink, link, symlink, mkdir, rmdir, truncate, chmod, chown, utimens, with their error codes),
// bad input (names and paths too long, writes past the maximum file size, a full target), fio
// with data verification, and data read back byte-exact after an unmount and remount, a storage
// node failure and a restart of the whole cluster. The mount runs in the test process over a
// cluster of real processes; permission checks run in forked children with another uid.
// Skipped without /dev/fuse or root.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <set>

#include "local_cluster.h"

namespace ff::fs {
namespace {

using testing::ClusterOptions;
using testing::LocalCluster;

// errno of a failed call, 0 for success.
#define ERR(expr) ((expr) < 0 ? errno : 0)

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

class FsPosix : public ::testing::Test {
 protected:
  virtual ClusterOptions cluster_options() { return {}; }

  void SetUp() override {
    if (::access("/dev/fuse", R_OK | W_OK) != 0 || ::geteuid() != 0)
      GTEST_SKIP() << "needs /dev/fuse and root";
    cluster_ = std::make_unique<LocalCluster>(cluster_options());
    cluster_->start();
    if (HasFatalFailure()) return;
    cluster_->start_meta();
    if (HasFatalFailure()) return;
    mnt_ = cluster_->dir() + "/mnt";
    std::filesystem::create_directories(mnt_);
    mount();
  }
  void TearDown() override {
    unmount();
    cluster_.reset();
  }
  void mount() {
    FsClientOptions o;
    o.mgmtd = cluster_->mgmtd();
    o.deadline_ms = 20000;
    client_ = std::make_unique<FsClient>(o);
    MountOptions mo;
    mo.mountpoint = mnt_;
    mo.allow_other = true;  // the permission checks' children run as another user
    mo.attr_timeout = 0;    // every stat asks the metadata service
    mount_ = std::make_unique<FuseMount>(*client_, mo);
  }
  void unmount() {
    mount_.reset();
    client_.reset();
  }
  std::string p(const std::string& rel) const { return mnt_ + "/" + rel; }

  static void put(const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
    ASSERT_EQ(::write(fd, data.data(), data.size()), ssize_t(data.size()));
    ASSERT_EQ(::close(fd), 0);
  }
  static std::string get(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return "<" + std::string(std::strerror(errno)) + ">";
    std::string out;
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    ::close(fd);
    return out;
  }
  static struct stat st(const std::string& path) {
    struct stat s {};
    EXPECT_EQ(::lstat(path.c_str(), &s), 0) << path << ": " << std::strerror(errno);
    return s;
  }
  // `fn` in a child running as uid/gid 65534; its errno (0: success).
  static int as_nobody(const std::function<int()>& fn) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0)
        ::_exit(255);
      ::_exit(fn() < 0 ? errno : 0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
  }

  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<FsClient> client_;
  std::unique_ptr<FuseMount> mount_;
  std::string mnt_;
};

TEST_F(FsPosix, OpenCreateAndTheirErrors) {
  ::umask(022);
  const int fd = ::open(p("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0666);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(st(p("f")).st_mode, S_IFREG | 0644u);  // the umask applied
  EXPECT_EQ(st(p("f")).st_size, 0);
  EXPECT_EQ(::write(fd, "abc", 3), 3);
  EXPECT_EQ(::close(fd), 0);
  EXPECT_EQ(st(p("f")).st_size, 3);
  EXPECT_EQ(ERR(::open(p("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0644)), EEXIST);
  EXPECT_EQ(ERR(::open(p("none").c_str(), O_RDONLY)), ENOENT);
  EXPECT_EQ(ERR(::open(p("f/x").c_str(), O_RDONLY)), ENOTDIR);
  EXPECT_EQ(ERR(::open(p("none/x").c_str(), O_CREAT | O_RDWR, 0644)), ENOENT);
  ASSERT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  EXPECT_EQ(ERR(::open(p("d").c_str(), O_RDWR)), EISDIR);
  EXPECT_EQ(ERR(::open(p(std::string(256, 'n')).c_str(), O_CREAT | O_RDWR, 0644)), ENAMETOOLONG);
  const int ok = ::open(p(std::string(255, 'n')).c_str(), O_CREAT | O_RDWR, 0644);
  EXPECT_GE(ok, 0);
  ::close(ok);
  // O_TRUNC empties; O_APPEND appends.
  const int t = ::open(p("f").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(t, 0);
  ::close(t);
  EXPECT_EQ(st(p("f")).st_size, 0);
  const int a = ::open(p("f").c_str(), O_WRONLY | O_APPEND);
  EXPECT_EQ(::write(a, "12", 2), 2);
  EXPECT_EQ(::write(a, "34", 2), 2);
  ::close(a);
  EXPECT_EQ(get(p("f")), "1234");
  // Permissions: another user may read 0644 but not write it; 0600 not even read.
  EXPECT_EQ(as_nobody([&] { return ::open(p("f").c_str(), O_RDONLY); }), 0);
  EXPECT_EQ(as_nobody([&] { return ::open(p("f").c_str(), O_WRONLY); }), EACCES);
  ASSERT_EQ(::chmod(p("f").c_str(), 0600), 0);
  EXPECT_EQ(as_nobody([&] { return ::open(p("f").c_str(), O_RDONLY); }), EACCES);
  EXPECT_EQ(as_nobody([&] { return ::open(p("d/new").c_str(), O_CREAT | O_RDWR, 0644); }),
            EACCES);  // no write permission on d
  // Device nodes and FIFOs are not supported.
  EXPECT_EQ(ERR(::mkfifo(p("fifo").c_str(), 0644)), EPERM);
}

TEST_F(FsPosix, RenameRulesAndErrors) {
  put(p("a"), "A");
  put(p("b"), "B");
  ASSERT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(p("e").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(p("d/sub").c_str(), 0755), 0);
  const struct stat before = st(p("a"));
  usleep(10000);
  // A file over a file: the destination is replaced, the source name goes.
  ASSERT_EQ(::rename(p("a").c_str(), p("b").c_str()), 0);
  EXPECT_EQ(get(p("b")), "A");
  EXPECT_EQ(ERR(::access(p("a").c_str(), F_OK)), ENOENT);
  const struct stat after = st(p("b"));
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_GT(after.st_ctim.tv_sec * 1000000000L + after.st_ctim.tv_nsec,
            before.st_ctim.tv_sec * 1000000000L + before.st_ctim.tv_nsec);
  // Directories: over an empty one, not over a non-empty one, not into themselves.
  ASSERT_EQ(::rename(p("e").c_str(), p("d/sub").c_str()), 0);
  EXPECT_EQ(ERR(::access(p("e").c_str(), F_OK)), ENOENT);
  ASSERT_EQ(::mkdir(p("e").c_str(), 0755), 0);
  put(p("d/sub/x"), "x");
  EXPECT_EQ(ERR(::rename(p("e").c_str(), p("d").c_str())), ENOTEMPTY);
  EXPECT_EQ(ERR(::rename(p("d").c_str(), p("d/sub/inside").c_str())), EINVAL);
  // Type mismatches, missing source.
  EXPECT_EQ(ERR(::rename(p("b").c_str(), p("e").c_str())), EISDIR);
  EXPECT_EQ(ERR(::rename(p("e").c_str(), p("b").c_str())), ENOTDIR);
  EXPECT_EQ(ERR(::rename(p("none").c_str(), p("z").c_str())), ENOENT);
  EXPECT_EQ(ERR(::rename(p("b").c_str(), p("none/z").c_str())), ENOENT);
  // renameat2 flags.
  put(p("c"), "C");
  EXPECT_EQ(ERR(::renameat2(AT_FDCWD, p("c").c_str(), AT_FDCWD, p("b").c_str(), RENAME_NOREPLACE)),
            EEXIST);
  EXPECT_EQ(ERR(::renameat2(AT_FDCWD, p("c").c_str(), AT_FDCWD, p("c2").c_str(), RENAME_NOREPLACE)),
            0);
  EXPECT_EQ(ERR(::renameat2(AT_FDCWD, p("c2").c_str(), AT_FDCWD, p("b").c_str(), RENAME_EXCHANGE)),
            EINVAL);
  // A rename across directories moves a whole subtree.
  ASSERT_EQ(::rename(p("d").c_str(), p("e/moved").c_str()), 0);
  EXPECT_EQ(get(p("e/moved/sub/x")), "x");
  // Another user cannot rename in a directory it cannot write.
  EXPECT_EQ(as_nobody([&] { return ::rename(p("b").c_str(), p("bb").c_str()); }), EACCES);
}

TEST_F(FsPosix, UnlinkLinkSymlink) {
  put(p("f"), "data");
  // link: a second name, nlink 2; not for directories; not over an existing name.
  ASSERT_EQ(::link(p("f").c_str(), p("g").c_str()), 0);
  EXPECT_EQ(st(p("f")).st_nlink, 2u);
  EXPECT_EQ(st(p("g")).st_ino, st(p("f")).st_ino);
  ASSERT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  EXPECT_EQ(ERR(::link(p("d").c_str(), p("d2").c_str())), EPERM);
  EXPECT_EQ(ERR(::link(p("f").c_str(), p("g").c_str())), EEXIST);
  EXPECT_EQ(ERR(::link(p("none").c_str(), p("h").c_str())), ENOENT);
  // unlink: one name at a time; the data stays while a name or an open descriptor does.
  const int fd = ::open(p("g").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::unlink(p("f").c_str()), 0);
  EXPECT_EQ(st(p("g")).st_nlink, 1u);
  ASSERT_EQ(::unlink(p("g").c_str()), 0);
  char buf[8] = {};
  EXPECT_EQ(::pread(fd, buf, sizeof buf, 0), 4) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, 4), "data");
  ::close(fd);
  EXPECT_EQ(ERR(::unlink(p("g").c_str())), ENOENT);
  EXPECT_EQ(ERR(::unlink(p("d").c_str())), EISDIR);
  // symlink: its own type and target; followed by open; not over an existing name.
  put(p("t"), "target");
  ASSERT_EQ(::symlink("t", p("s").c_str()), 0);
  EXPECT_TRUE(S_ISLNK(st(p("s")).st_mode));
  char target[64] = {};
  EXPECT_EQ(::readlink(p("s").c_str(), target, sizeof target), 1);
  EXPECT_EQ(std::string(target), "t");
  EXPECT_EQ(get(p("s")), "target");
  EXPECT_EQ(ERR(::symlink("x", p("s").c_str())), EEXIST);
  EXPECT_EQ(ERR(::readlink(p("t").c_str(), target, sizeof target)), EINVAL);
  ASSERT_EQ(::symlink("dangling", p("s2").c_str()), 0);
  EXPECT_EQ(get(p("s2")), "<" + std::string(std::strerror(ENOENT)) + ">");
  ASSERT_EQ(::unlink(p("s").c_str()), 0);
  EXPECT_EQ(get(p("t")), "target");  // removing a symlink leaves its target
}

TEST_F(FsPosix, MkdirRmdirAndReaddir) {
  ASSERT_EQ(::mkdir(p("d").c_str(), 0750), 0);
  EXPECT_EQ(st(p("d")).st_mode, S_IFDIR | 0750u);
  EXPECT_EQ(ERR(::mkdir(p("d").c_str(), 0755)), EEXIST);
  EXPECT_EQ(ERR(::mkdir(p("none/d").c_str(), 0755)), ENOENT);
  put(p("f"), "");
  EXPECT_EQ(ERR(::mkdir(p("f/d").c_str(), 0755)), ENOTDIR);
  EXPECT_EQ(ERR(::mkdir(p(std::string(256, 'd')).c_str(), 0755)), ENAMETOOLONG);
  // readdir pages (1024 entries each): 1300 entries, each listed once.
  std::set<std::string> want;
  for (int i = 0; i < 1300; ++i) {
    const std::string n = "e" + std::to_string(i);
    ASSERT_EQ(::mkdir(p("d/" + n).c_str(), 0755), 0);
    want.insert(n);
  }
  std::set<std::string> got;
  size_t dots = 0;
  DIR* dir = ::opendir(p("d").c_str());
  ASSERT_NE(dir, nullptr);
  while (const dirent* e = ::readdir(dir)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") {
      ++dots;
      continue;
    }
    EXPECT_TRUE(got.insert(n).second) << n << " listed twice";
    EXPECT_EQ(e->d_type, DT_DIR);
  }
  ::closedir(dir);
  EXPECT_EQ(dots, 2u);
  EXPECT_EQ(got, want);
  EXPECT_EQ(ERR(::rmdir(p("d").c_str())), ENOTEMPTY);
  for (const std::string& n : want) ASSERT_EQ(::rmdir(p("d/" + n).c_str()), 0);
  EXPECT_EQ(ERR(::rmdir(p("f").c_str())), ENOTDIR);
  EXPECT_EQ(ERR(::rmdir(p("none").c_str())), ENOENT);
  EXPECT_EQ(::rmdir(p("d").c_str()), 0);
  EXPECT_EQ(ERR(::access(p("d").c_str(), F_OK)), ENOENT);
}

TEST_F(FsPosix, TruncateChmodChownUtimens) {
  const std::string data = random_bytes(200000, 1);
  put(p("f"), data);
  // truncate: shrink, then grow with zeros (not the old bytes).
  ASSERT_EQ(::truncate(p("f").c_str(), 1000), 0);
  EXPECT_EQ(st(p("f")).st_size, 1000);
  ASSERT_EQ(::truncate(p("f").c_str(), 150000), 0);
  std::string want = data.substr(0, 1000);
  want.resize(150000, '\0');
  EXPECT_EQ(get(p("f")), want);
  const int fd = ::open(p("f").c_str(), O_RDWR);
  ASSERT_EQ(::ftruncate(fd, 10), 0);
  EXPECT_EQ(::write(fd, "xy", 2), 2);
  ::close(fd);
  EXPECT_EQ(get(p("f")), "xy" + data.substr(2, 8));
  ASSERT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  EXPECT_EQ(ERR(::truncate(p("d").c_str(), 0)), EISDIR);
  EXPECT_EQ(ERR(::truncate(p("f").c_str(), -1)), EINVAL);
  EXPECT_EQ(ERR(::truncate(p("f").c_str(), off_t(1) << 53)), EFBIG);
  EXPECT_EQ(as_nobody([&] { return ::truncate(p("f").c_str(), 0); }), EACCES);
  // chmod: bits and ctime; only the owner (or root).
  const struct stat s0 = st(p("f"));
  usleep(10000);
  ASSERT_EQ(::chmod(p("f").c_str(), 0604), 0);
  const struct stat s1 = st(p("f"));
  EXPECT_EQ(s1.st_mode, S_IFREG | 0604u);
  EXPECT_TRUE(s1.st_ctim.tv_sec > s0.st_ctim.tv_sec ||
              (s1.st_ctim.tv_sec == s0.st_ctim.tv_sec && s1.st_ctim.tv_nsec > s0.st_ctim.tv_nsec));
  EXPECT_EQ(as_nobody([&] { return ::chmod(p("f").c_str(), 0777); }), EPERM);
  // chown: root gives the file away; the new owner may chmod it; others may not chown.
  ASSERT_EQ(::chown(p("f").c_str(), 65534, 65534), 0);
  EXPECT_EQ(st(p("f")).st_uid, 65534u);
  EXPECT_EQ(st(p("f")).st_gid, 65534u);
  EXPECT_EQ(as_nobody([&] { return ::chmod(p("f").c_str(), 0600); }), 0);
  EXPECT_EQ(as_nobody([&] { return ::chown(p("f").c_str(), 0, 0); }), EPERM);
  ASSERT_EQ(::chown(p("d").c_str(), 1000, -1), 0);
  EXPECT_EQ(st(p("d")).st_uid, 1000u);
  EXPECT_EQ(st(p("d")).st_gid, 0u);
  // utimens: exact times, UTIME_NOW, UTIME_OMIT.
  const timespec ts[2] = {{1000000, 123456789}, {2000000, 987654321}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p("d").c_str(), ts, 0), 0);
  struct stat s2 = st(p("d"));
  EXPECT_EQ(s2.st_atim.tv_sec, 1000000);
  EXPECT_EQ(s2.st_atim.tv_nsec, 123456789);
  EXPECT_EQ(s2.st_mtim.tv_sec, 2000000);
  EXPECT_EQ(s2.st_mtim.tv_nsec, 987654321);
  const timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p("d").c_str(), omit_now, 0), 0);
  s2 = st(p("d"));
  EXPECT_EQ(s2.st_atim.tv_sec, 1000000);
  EXPECT_GT(s2.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(as_nobody([&] { return ::utimensat(AT_FDCWD, p("d").c_str(), ts, 0); }), EPERM);
}

TEST_F(FsPosix, BadInputGetsErrorCodesAndTheMountKeepsWorking) {
  // A path longer than PATH_MAX, names with 256 bytes.
  std::string deep = mnt_;
  while (deep.size() < 4200) deep += "/" + std::string(200, 'p');
  EXPECT_EQ(ERR(::open(deep.c_str(), O_CREAT | O_RDWR, 0644)), ENAMETOOLONG);
  EXPECT_EQ(ERR(::symlink("x", p(std::string(300, 's')).c_str())), ENAMETOOLONG);
  // Writes past the maximum file size (4 PiB).
  put(p("f"), "ok");
  EXPECT_EQ(ERR(::rename(p("f").c_str(), p(std::string(256, 'r')).c_str())), ENAMETOOLONG);
  const int fd = ::open(p("f").c_str(), O_WRONLY);
  EXPECT_EQ(ERR(::pwrite(fd, "x", 1, off_t(1) << 52)), EFBIG);
  EXPECT_EQ(::pwrite(fd, "y", 1, 1), 1);
  ::close(fd);
  EXPECT_EQ(get(p("f")), "oy");
}

TEST_F(FsPosix, FioWithDataVerification) {
  const int rc = std::system("command -v fio > /dev/null");
  ASSERT_EQ(rc, 0) << "fio is not installed (scripts/bootstrap.sh installs it)";
  const std::string log = cluster_->dir() + "/logs/fio.log";
  const std::string cmd =
      "fio --name=check --directory=" + mnt_ +
      " --rw=randrw --bs=4k --bsrange=4k-256k --size=24m --numjobs=2 --ioengine=psync"
      " --verify=crc32c --do_verify=1 --verify_fatal=1 --fsync_on_close=1 --output=" +
      log + " > /dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream f(log);
  const std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.find("verify failed"), std::string::npos) << out;
  EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
}

TEST_F(FsPosix, DataSurvivesRemountNodeFailureAndClusterRestart) {
  const std::string a = random_bytes(3 << 20, 7), b = random_bytes(777777, 8);
  ASSERT_EQ(::mkdir(p("d").c_str(), 0755), 0);
  put(p("d/a"), a);
  put(p("b"), b);
  // Unmount and mount again: read through a fresh client.
  unmount();
  mount();
  EXPECT_EQ(get(p("d/a")), a);
  EXPECT_EQ(get(p("b")), b);
  // A storage node fails: its replicas are gone, reads and writes go on.
  cluster_->kill_storage(2);
  EXPECT_EQ(get(p("d/a")), a);
  const std::string c = random_bytes(1 << 20, 9);
  put(p("c"), c);
  EXPECT_EQ(get(p("c")), c);
  cluster_->start_storage(2);
  ASSERT_TRUE(cluster_->wait_serving_count(3, 30000)) << cluster_->routing_text();
  // Every process of the cluster restarts.
  unmount();
  cluster_->kill_meta(1, SIGTERM);
  for (uint32_t n = 1; n <= 3; ++n) cluster_->kill_storage(n, SIGTERM);
  cluster_->kill_mgmtd(SIGTERM);
  cluster_->start_mgmtd();
  for (uint32_t n = 1; n <= 3; ++n) cluster_->start_storage(n);
  ASSERT_TRUE(cluster_->wait_serving_count(3, 30000)) << cluster_->routing_text();
  cluster_->start_meta(1);
  mount();
  EXPECT_EQ(get(p("d/a")), a);
  EXPECT_EQ(get(p("b")), b);
  EXPECT_EQ(get(p("c")), c);
}

class FsPosixFull : public FsPosix {
 protected:
  ClusterOptions cluster_options() override {
    ClusterOptions o;
    o.nodes = 1;
    o.targets = 1;
    o.replicas = 1;
    o.capacity_mb = 8;
    return o;
  }
};

TEST_F(FsPosixFull, AFullTargetAnswersEnospcAndLosesNothing) {
  const std::string keep = random_bytes(1 << 20, 10);
  put(p("keep"), keep);
  const std::string chunk = random_bytes(1 << 20, 11);
  const int fd = ::open(p("fill").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  int err = 0;
  for (int i = 0; i < 64 && err == 0; ++i)
    if (::write(fd, chunk.data(), chunk.size()) < 0) err = errno;
  ::close(fd);
  EXPECT_EQ(err, ENOSPC);
  EXPECT_EQ(get(p("keep")), keep);  // what was there is intact
  // Space comes back when the file goes (its chunks are collected), and the mount works on.
  ASSERT_EQ(::unlink(p("fill").c_str()), 0);
  int put_err = ENOSPC;
  for (int i = 0; i < 100 && put_err == ENOSPC; ++i) {
    const int w = ::open(p("again").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    put_err = ::write(w, chunk.data(), chunk.size()) == ssize_t(chunk.size()) ? 0 : errno;
    ::close(w);
    if (put_err) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(put_err, 0);
  EXPECT_EQ(get(p("again")), chunk);
}

}  // namespace
}  // namespace ff::fs
