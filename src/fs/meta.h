// File-system metadata on the transactional store (issue 17; docs/fs-design.md, "Part 2:
// metadata"): inodes and directory entries after 3FS's key layout, every operation one
// serializable transaction, so concurrent clients and a process killed mid-operation never leave
// half an operation behind. Errors are POSIX error codes.
//
// Keys: "I" + inode id (8 bytes, big-endian) -> the inode; "D" + parent id + name -> the child's
// id and type (a directory's entries are one key range, listed in name order); "S" + inode id +
// session id -> a write session (client, lease end); "G" + inode id -> a removed file whose chunks
// are still to be dropped (deferred garbage collection; the value is the inode).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fs/routing.h"
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
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;
  Layout layout;        // files: where the chunks are
  uint64_t parent = 0;  // directories: the one that holds it (the loop check)
  std::string target;   // symlinks
};

struct DirEntry {
  std::string name;
  uint64_t id = 0;
  FileType type = FileType::File;
};

// Who creates an inode.
struct Owner {
  uint32_t uid = 0, gid = 0;
};

// What setattr changes (permission bits, owner, times; ctime always).
struct SetAttr {
  std::optional<uint32_t> mode{}, uid{}, gid{};
  std::optional<int64_t> atime_ns{}, mtime_ns{};
};

// A client writing a file (open for write .. close): the file's chunks stay while one lasts,
// and the file's length is settled when it ends. The client renews the lease; a session whose
// lease ran out is ended by the metadata service for it.
struct WriteSession {
  uint64_t inode = 0, session = 0, client = 0;
  int64_t expires_ns = 0;  // system clock
};

// A removed file whose chunks are still on the storage.
struct Garbage {
  Inode inode;
  bool busy = false;  // a write session on it still lasts
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
  MetaResult mkdir(uint64_t parent, const std::string& name, uint32_t mode, Owner owner = {});
  // A new file; with a session, open for write in the same transaction (`session->inode` is
  // filled in). EEXIST when the name is taken (a caller wanting O_CREAT without O_EXCL looks up
  // and opens the existing file instead).
  MetaResult create(uint64_t parent, const std::string& name, uint32_t mode, Owner owner = {},
                    const Layout& layout = {}, WriteSession* session = nullptr);
  MetaResult symlink(uint64_t parent, const std::string& name, const std::string& target,
                     Owner owner = {});
  // Entries after `after` (in name order), at most `limit`.
  int readdir(uint64_t dir, const std::string& after, size_t limit, std::vector<DirEntry>* out);
  // Removes a file or symlink entry (the inode goes with its last link).
  int unlink(uint64_t parent, const std::string& name);
  int rmdir(uint64_t parent, const std::string& name);
  // A second name for a file or symlink (EPERM for a directory); nlink + 1.
  MetaResult link(uint64_t id, uint64_t parent, const std::string& name);
  // A symlink's target (EINVAL for anything else).
  MetaResult readlink(uint64_t id);
  // Changes what is given; ctime always.
  MetaResult setattr(uint64_t id, const SetAttr& attr);
  // A file's length as the metadata records it (EISDIR / EINVAL for other types; EFBIG past
  // max_length). The chunks past it are the storage's to drop.
  MetaResult set_length(uint64_t id, uint64_t length);
  static constexpr uint64_t max_length = uint64_t(1) << 52;  // 4 PiB

  // POSIX rename: replaces a destination of a compatible type (an empty directory by a
  // directory, a non-directory by a non-directory); refuses to move a directory under itself.
  // `noreplace`: EEXIST when the destination exists (renameat2's RENAME_NOREPLACE).
  int rename(uint64_t from_parent, const std::string& from, uint64_t to_parent,
             const std::string& to, bool noreplace = false);

  // ---- write sessions ----
  // Opens `s.inode` for write (EISDIR / EINVAL for other types, ENOENT).
  MetaResult open_session(const WriteSession& s);
  // Extends the sessions' leases to expires_ns (the ones that are gone are skipped); how many
  // were renewed.
  size_t renew_sessions(const std::vector<WriteSession>& sessions, int64_t expires_ns);
  // A writer's progress (fsync, close): the length becomes at least `length` (the storage's,
  // measured by the caller), mtime now. ENOENT for a removed file (nothing to record).
  MetaResult settle_length(uint64_t id, uint64_t length);
  // Ends a session (gone already: fine).
  int close_session(uint64_t id, uint64_t session);
  // Sessions whose lease ended before now_ns, at most `limit`.
  std::vector<WriteSession> expired_sessions(int64_t now_ns, size_t limit);

  // ---- deferred garbage collection ----
  // Removed files whose chunks are still to be dropped, at most `limit`.
  std::vector<Garbage> garbage(size_t limit);
  // The chunks of removed file `id` are gone: forget it (and any sessions left on it).
  int garbage_done(uint64_t id);

 private:
  TxnStore& store_;
};

}  // namespace ff::fs
