// File-system metadata on the transactional store (issue 17; docs/fs-design.md, "Part 2:
// metadata"): inodes and directory entries after 3FS's key layout, every operation one
// serializable transaction, so concurrent clients and a process killed mid-operation never leave
// half an operation behind. Errors are POSIX error codes.
//
// Keys: "I" + inode id (8 bytes, big-endian) -> the inode; "D" + parent id + name -> the child's
// id and type (a directory's entries are one key range, listed in name order).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fs/txn.h"

namespace ff::fs {

enum class FileType : uint8_t { File = 1, Directory = 2, Symlink = 3 };

constexpr uint64_t kRootInode = 1;
constexpr size_t kMaxName = 255;

struct Inode {
  uint64_t id = 0;
  FileType type = FileType::File;
  uint32_t mode = 0;  // permission bits
  uint32_t uid = 0, gid = 0;
  uint32_t nlink = 1;  // directories: 2, whatever they hold (no count to contend on)
  uint64_t length = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
  uint32_t chunk_size = 1 << 20;  // files: the layout's chunk size
  uint64_t parent = 0;            // directories: the one that holds it (the loop check)
  std::string target;             // symlinks
};

struct DirEntry {
  std::string name;
  uint64_t id = 0;
  FileType type = FileType::File;
};

// An operation's outcome: 0 or a POSIX error code (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY,
// EINVAL, ENAMETOOLONG, EBUSY, EIO when the store could not commit).
struct MetaResult {
  int err = 0;
  Inode inode;  // the inode the operation made or found
  bool ok() const { return err == 0; }
};

class MetaStore {
 public:
  // Creates the root directory when the store has none.
  explicit MetaStore(TxnStore& store);

  MetaResult lookup(uint64_t parent, const std::string& name);
  MetaResult stat(uint64_t id);
  MetaResult mkdir(uint64_t parent, const std::string& name, uint32_t mode);
  MetaResult create(uint64_t parent, const std::string& name, uint32_t mode,
                    uint32_t chunk_size = 1 << 20);
  MetaResult symlink(uint64_t parent, const std::string& name, const std::string& target);
  // Entries after `after` (in name order), at most `limit`.
  int readdir(uint64_t dir, const std::string& after, size_t limit, std::vector<DirEntry>* out);
  // Removes a file or symlink entry (the inode goes with its last link).
  int unlink(uint64_t parent, const std::string& name);
  int rmdir(uint64_t parent, const std::string& name);
  // A second name for a file or symlink (EPERM for a directory); nlink + 1.
  MetaResult link(uint64_t id, uint64_t parent, const std::string& name);
  // A symlink's target (EINVAL for anything else).
  MetaResult readlink(uint64_t id);
  // Changes what is given (permission bits, owner, mtime); ctime always.
  MetaResult setattr(uint64_t id, std::optional<uint32_t> mode, std::optional<uint32_t> uid,
                     std::optional<uint32_t> gid, std::optional<int64_t> mtime_ns);
  // A file's length as the metadata records it (EISDIR / EINVAL for other types; EFBIG past
  // max_length). The chunks past it are the storage's to drop.
  MetaResult set_length(uint64_t id, uint64_t length);
  static constexpr uint64_t max_length = uint64_t(1) << 52;  // 4 PiB

  // POSIX rename: replaces a destination of a compatible type (an empty directory by a
  // directory, a non-directory by a non-directory); refuses to move a directory under itself.
  int rename(uint64_t from_parent, const std::string& from, uint64_t to_parent,
             const std::string& to);

 private:
  TxnStore& store_;
};

}  // namespace ff::fs
