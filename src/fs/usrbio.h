// Zero-copy batch I/O after 3FS's USRBIO (docs/fs.md, "Batch I/O"): the application places the
// data to write in (or receives reads into) a shared-memory buffer, queues I/Os on a
// submission ring, submits them, and reaps completions from a completion ring. A ring's worker
// takes every submitted I/O at once: reads go to the storage as one batch per node
// (FsClient::batch_pread) straight into the buffer, writes run in parallel from it. As in 3FS, a
// ring either reads or writes; files are opened through the ordinary API (FsClient::open).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fs/file.h"

namespace ff::fs {

class IoBuffer {
 public:
  // `bytes` of shared memory (memfd); ff::Error when it cannot be made.
  explicit IoBuffer(size_t bytes);
  ~IoBuffer();
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  char* data() const { return data_; }
  size_t size() const { return size_; }
  int fd() const { return fd_; }  // another process may map the same memory

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

struct IoCompletion {
  int64_t result = 0;  // bytes, or -errno
  uint64_t userdata = 0;
};

class IoRing {
 public:
  // `entries`: I/Os queued, in flight and completed-but-not-reaped at once. `io_depth` > 0: the
  // worker takes at most that many per batch (0: all that were submitted).
  IoRing(FsClient& fs, IoBuffer& buffer, uint32_t entries, bool for_read, uint32_t io_depth = 0);
  ~IoRing();  // finishes what was submitted
  // Queues one I/O: the buffer's [buf_offset, buf_offset + length) and the file's `file_offset`.
  // 0, EINVAL (outside the buffer, length 0), EAGAIN (the ring is full: reap completions).
  int prep(uint64_t fh, uint64_t file_offset, size_t buf_offset, uint32_t length,
           uint64_t userdata);
  // Hands every queued I/O to the worker; how many.
  int submit();
  // Waits for at least `min_results` completions (fewer once timeout_ms passes), moves up to
  // `max` into `out`; how many.
  int wait(IoCompletion* out, int max, int min_results, int timeout_ms);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ff::fs
