// IoBuffer: memfd_create + mmap. IoRing: the three queues (prepared, submitted, completed)
// under one mutex; one worker thread per ring drains the submitted queue in batches.
#include "fs/usrbio.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "core/core.h"

namespace ff::fs {

IoBuffer::IoBuffer(size_t bytes) : size_(bytes) {
  FF_CHECK(bytes > 0, "io buffer: size 0");
  fd_ = ::memfd_create("fireflyer-iov", MFD_CLOEXEC);
  FF_CHECK(fd_ >= 0, "io buffer: memfd_create: {}", std::strerror(errno));
  if (::ftruncate(fd_, off_t(bytes)) != 0) {
    const int e = errno;
    ::close(fd_);
    ff::fail("io buffer: cannot size {} bytes: {}", bytes, std::strerror(e));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    const int e = errno;
    ::close(fd_);
    ff::fail("io buffer: cannot map {} bytes: {}", bytes, std::strerror(e));
  }
  data_ = static_cast<char*>(p);
}

IoBuffer::~IoBuffer() {
  ::munmap(data_, size_);
  ::close(fd_);
}

struct IoRing::Impl {
  struct Sqe {
    uint64_t fh, file_offset;
    size_t buf_offset;
    uint32_t length;
    uint64_t userdata;
  };
  FsClient& fs;
  IoBuffer& buf;
  uint32_t entries, depth;
  bool for_read;
  std::mutex mu;
  std::condition_variable work, done;
  std::deque<Sqe> prepared, submitted;
  std::deque<IoCompletion> completed;
  size_t in_flight = 0;
  bool stopping = false;
  std::thread worker;

  Impl(FsClient& f, IoBuffer& b, uint32_t e, bool r, uint32_t d)
      : fs(f), buf(b), entries(e), depth(d), for_read(r) {}

  void run(std::vector<Sqe>& batch, std::vector<IoCompletion>& out) {
    out.resize(batch.size());
    if (for_read) {
      std::vector<FsClient::ReadIo> ios;
      for (const Sqe& s : batch)
        ios.push_back({s.fh, buf.data() + s.buf_offset, s.length, s.file_offset});
      const std::vector<int64_t> r = fs.batch_pread(ios);
      for (size_t i = 0; i < batch.size(); ++i) out[i] = {r[i], batch[i].userdata};
      return;
    }
    std::vector<std::future<int64_t>> fut;
    for (const Sqe& s : batch)
      fut.push_back(std::async(std::launch::async, [this, s] {
        return fs.pwrite(s.fh, buf.data() + s.buf_offset, s.length, s.file_offset);
      }));
    for (size_t i = 0; i < batch.size(); ++i) out[i] = {fut[i].get(), batch[i].userdata};
  }

  void loop() {
    std::unique_lock lk(mu);
    for (;;) {
      work.wait(lk, [&] { return stopping || !submitted.empty(); });
      if (submitted.empty()) return;  // stopping, and nothing left
      std::vector<Sqe> batch;
      while (!submitted.empty() && (depth == 0 || batch.size() < depth)) {
        batch.push_back(submitted.front());
        submitted.pop_front();
      }
      in_flight += batch.size();
      lk.unlock();
      std::vector<IoCompletion> out;
      run(batch, out);
      lk.lock();
      in_flight -= batch.size();
      completed.insert(completed.end(), out.begin(), out.end());
      done.notify_all();
    }
  }
};

IoRing::IoRing(FsClient& fs, IoBuffer& buffer, uint32_t entries, bool for_read, uint32_t io_depth)
    : impl_(std::make_unique<Impl>(fs, buffer, entries, for_read, io_depth)) {
  FF_CHECK(entries > 0, "io ring: 0 entries");
  impl_->worker = std::thread([this] { impl_->loop(); });
}

IoRing::~IoRing() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    impl_->work.notify_all();
  }
  impl_->worker.join();
}

int IoRing::prep(uint64_t fh, uint64_t file_offset, size_t buf_offset, uint32_t length,
                 uint64_t userdata) {
  Impl& m = *impl_;
  if (length == 0 || buf_offset > m.buf.size() || length > m.buf.size() - buf_offset) return EINVAL;
  std::lock_guard lk(m.mu);
  if (m.prepared.size() + m.submitted.size() + m.in_flight + m.completed.size() >= m.entries)
    return EAGAIN;
  m.prepared.push_back({fh, file_offset, buf_offset, length, userdata});
  return 0;
}

int IoRing::submit() {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  const int n = int(m.prepared.size());
  m.submitted.insert(m.submitted.end(), m.prepared.begin(), m.prepared.end());
  m.prepared.clear();
  if (n) m.work.notify_all();
  return n;
}

int IoRing::wait(IoCompletion* out, int max, int min_results, int timeout_ms) {
  Impl& m = *impl_;
  std::unique_lock lk(m.mu);
  m.done.wait_for(lk, std::chrono::milliseconds(std::max(timeout_ms, 0)),
                  [&] { return int(m.completed.size()) >= std::min(min_results, max); });
  int n = 0;
  while (n < max && !m.completed.empty()) {
    out[n++] = m.completed.front();
    m.completed.pop_front();
  }
  return n;
}

}  // namespace ff::fs
