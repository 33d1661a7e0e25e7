// The file system's client (docs/fs.md, "Files"): metadata through a metadata service found in
// mgmtd's routing info, file data straight to and from the storage chains, each chunk's chain
// computed from the file's layout (fs/routing.h). Open files are handles; a handle open for write
// holds a write session whose lease the client renews, and its close settles the file's length.
// Errors are POSIX error codes (positive; I/O calls return -code). Thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/meta.h"

namespace ff::fs {

struct FsClientOptions {
  std::string mgmtd;
  int deadline_ms = 30000;  // a call's retries end here
  // New files' layout; 0: the metadata service's default.
  uint32_t table_id = 0, chunk_size = 0, stripe = 0;
  uint32_t write_parallelism = 8;  // chunks of one write in flight at once
};

class FsClient {
 public:
  explicit FsClient(const FsClientOptions& options);  // ff::Error without an mgmtd address
  ~FsClient();                                        // closes the handles still open

  // ---- metadata (fs/meta.h's operations over the metadata service) ----
  MetaResult lookup(uint64_t parent, const std::string& name);
  // The length is at least what this client wrote to handles still open (the service's lags
  // until a close or fsync).
  MetaResult stat(uint64_t id);
  MetaResult mkdir(uint64_t parent, const std::string& name, uint32_t mode, Owner owner = {});
  MetaResult symlink(uint64_t parent, const std::string& name, const std::string& target,
                     Owner owner = {});
  int readdir(uint64_t dir, const std::string& after, size_t limit, std::vector<DirEntry>* out);
  int unlink(uint64_t parent, const std::string& name);
  int rmdir(uint64_t parent, const std::string& name);
  MetaResult link(uint64_t id, uint64_t parent, const std::string& name);
  MetaResult readlink(uint64_t id);
  // With a length: truncation (or extension with zeros) first, then the attributes.
  MetaResult setattr(uint64_t id, const SetAttr& attr, std::optional<uint64_t> length = {});
  int rename(uint64_t from_parent, const std::string& from, uint64_t to_parent,
             const std::string& to, bool noreplace = false);
  // "/a/b/c" from the root (symlinks are not followed; "." and ".." are not names).
  MetaResult resolve(const std::string& path);

  // ---- files ----
  // A new file, open for write (EEXIST when the name is taken).
  int create(uint64_t parent, const std::string& name, uint32_t mode, Owner owner, uint64_t* fh,
             Inode* inode = nullptr);
  // `flags`: O_RDONLY / O_WRONLY / O_RDWR, O_TRUNC, O_APPEND.
  int open(uint64_t id, int flags, uint64_t* fh, Inode* inode = nullptr);
  // By path: also O_CREAT (with `mode`) and O_EXCL.
  int open(const std::string& path, int flags, uint32_t mode, uint64_t* fh);
  // Bytes transferred or -errno. Reads stop at the end of the file; holes read as zeros.
  int64_t pread(uint64_t fh, void* buf, size_t n, uint64_t offset);
  int64_t pwrite(uint64_t fh, const void* buf, size_t n, uint64_t offset);
  // At the handle's position (O_APPEND: writes go to the end).
  int64_t read(uint64_t fh, void* buf, size_t n);
  int64_t write(uint64_t fh, const void* buf, size_t n);
  // Several reads at once, their chunk pieces batched into one storage call per node (the
  // batch API's reads; io_uring-like rings build on it, fs/usrbio.h). A result per read, as
  // pread's.
  struct ReadIo {
    uint64_t fh;
    void* buf;
    size_t n;
    uint64_t offset;
  };
  std::vector<int64_t> batch_pread(const std::vector<ReadIo>& ios);
  // A read by inode without opening (a file the caller knows does not change, such as a
  // KV-cache block): no metadata call. `forbid_holes`: a missing chunk is ENOENT (the file was
  // removed and collected) instead of zeros.
  int64_t pread_inode(const Inode& inode, void* buf, size_t n, uint64_t offset,
                      bool forbid_holes = true);
  // The data is on every replica once a write returns; fsync settles the file's length.
  int fsync(uint64_t fh);
  int close(uint64_t fh);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ff::fs
