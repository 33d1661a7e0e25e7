// The file system mounted through FUSE (libfuse3's low-level API): every kernel request becomes an
// FsClient call, inode numbers are the file system's inode ids (the root is 1, FUSE's own root).
// Permission checks are the kernel's (default_permissions) on the owners and modes the metadata
// keeps. Files written here are visible to other clients on close (flush settles the length).
#pragma once
#include <memory>
#include <string>

#include "fs/file.h"

namespace ff::fs {

struct MountOptions {
  std::string mountpoint;
  bool allow_other = false;   // other users may use the mount (root, or user_allow_other)
  double attr_timeout = 1.0;  // seconds the kernel may cache attributes and entries
  unsigned max_threads = 16;  // request threads
  bool debug = false;         // libfuse's request trace on stderr
};

class FuseMount {
 public:
  // Mounts and starts serving; ff::Error naming the problem (no /dev/fuse, a mountpoint that is
  // not an empty directory, not permitted).
  FuseMount(FsClient& client, const MountOptions& options);
  ~FuseMount();  // unmount()
  // Unmounts (lazily when busy) and waits for the request threads. Idempotent.
  void unmount();
  // Blocks until the mount ends (unmount(), or `umount` / `fusermount -u` from outside).
  void wait();
  bool mounted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ff::fs
