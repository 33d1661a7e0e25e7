// The MPI transport: bytes over MPI_COMM_WORLD. Sends keep their owner until MPI reports them
// complete; progress() tests them so buffers are released (and rendezvous transfers advance)
// between compute ops rather than only at the end of the step.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>

#include "core/error.h"
#include "plan/pipeline_transport.h"

namespace ff::plan {
namespace {

constexpr std::chrono::microseconds kMaxPause(1000);

int byte_count(size_t bytes) {
  FF_CHECK(bytes <= size_t(INT_MAX), "a message of {} bytes is more than MPI's int count allows",
           bytes);
  return int(bytes);
}

class MpiTransport final : public Transport {
 public:
  MpiTransport() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int* ub = nullptr;
    int found = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &found);
    max_tag_ = found && ub ? *ub : 32767;  // the standard's guaranteed minimum
  }

  ~MpiTransport() override {
    // A transport left mid-step (an exception) must not free buffers MPI still reads.
    if (!sends_.empty()) wait_sends();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int max_tag() const override { return max_tag_; }

  Request post_send(const void* data, size_t bytes, int peer, int tag,
                    std::shared_ptr<const void> owner) override {
    MPI_Request req;
    MPI_Isend(data, byte_count(bytes), MPI_BYTE, peer, tag, MPI_COMM_WORLD, &req);
    sends_.push_back(req);
    owners_.push_back(std::move(owner));
    return -1;
  }

  Request post_recv(void* data, size_t bytes, int peer, int tag) override {
    MPI_Request req;
    MPI_Irecv(data, byte_count(bytes), MPI_BYTE, peer, tag, MPI_COMM_WORLD, &req);
    recvs_.push_back(req);
    return Request(recvs_.size() - 1);
  }

  // Polls, then sleeps between polls (20 us doubling to 1 ms) rather than spinning in MPI_Wait:
  // ranks oversubscribed on few cores then leave the CPU to the ranks that compute, and on a
  // core of its own a rank adds at most ~1 ms to a wait, small beside one op's compute.
  void wait(Request r) override {
    FF_INVARIANT(r >= 0 && size_t(r) < recvs_.size(), "rank {}: no receive #{}", rank_, r);
    MPI_Request& req = recvs_[size_t(r)];  // a completed request is MPI_REQUEST_NULL
    int done = 0;
    for (int spin = 0; spin < 100 && !done; ++spin) MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    for (auto pause = std::chrono::microseconds(20); !done;
         pause = std::min(2 * pause, kMaxPause)) {
      std::this_thread::sleep_for(pause);
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    }
  }

  void progress() override {
    if (sends_.empty()) return;
    int done = 0;
    std::vector<int> indices(sends_.size());
    MPI_Testsome(int(sends_.size()), sends_.data(), &done, indices.data(), MPI_STATUSES_IGNORE);
    if (done == MPI_UNDEFINED || done == 0) return;
    for (int i = 0; i < done; ++i) owners_[size_t(indices[size_t(i)])].reset();
    compact();
  }

  void wait_sends() override {
    MPI_Waitall(int(sends_.size()), sends_.data(), MPI_STATUSES_IGNORE);
    sends_.clear();
    owners_.clear();
    // The step's receives are all waited for by now; forget them so --steps does not pile up.
    if (std::all_of(recvs_.begin(), recvs_.end(),
                    [](const MPI_Request& r) { return r == MPI_REQUEST_NULL; }))
      recvs_.clear();
  }

  std::vector<std::vector<std::byte>> all_gather(std::span<const std::byte> mine) override {
    int count = byte_count(mine.size());
    std::vector<int> counts(size_t(size_), 0);
    MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
    const auto [offsets, total] = layout(counts);
    std::vector<std::byte> all(total);
    MPI_Allgatherv(mine.data(), count, MPI_BYTE, all.data(), counts.data(), offsets.data(),
                   MPI_BYTE, MPI_COMM_WORLD);
    return split(all, counts, offsets);
  }

  std::vector<std::vector<std::byte>> gather_to_root(std::span<const std::byte> mine) override {
    int count = byte_count(mine.size());
    std::vector<int> counts(size_t(size_), 0);
    MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    const auto [offsets, total] = layout(counts);
    std::vector<std::byte> all(rank_ == 0 ? total : 0);
    MPI_Gatherv(mine.data(), count, MPI_BYTE, all.data(), counts.data(), offsets.data(), MPI_BYTE,
                0, MPI_COMM_WORLD);
    if (rank_ != 0) return {};
    return split(all, counts, offsets);
  }

 private:
  // Drops the sends that completed (MPI set them to MPI_REQUEST_NULL).
  void compact() {
    size_t kept = 0;
    for (size_t i = 0; i < sends_.size(); ++i) {
      if (sends_[i] == MPI_REQUEST_NULL) continue;
      sends_[kept] = sends_[i];
      owners_[kept] = std::move(owners_[i]);
      ++kept;
    }
    sends_.resize(kept);
    owners_.resize(kept);
  }

  std::pair<std::vector<int>, size_t> layout(const std::vector<int>& counts) const {
    std::vector<int> offsets(counts.size(), 0);
    size_t total = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      FF_CHECK(total + size_t(counts[i]) <= size_t(INT_MAX),
               "gathering {} bytes is more than MPI's int displacements allow",
               total + size_t(counts[i]));
      offsets[i] = int(total);
      total += size_t(counts[i]);
    }
    return {offsets, total};
  }

  static std::vector<std::vector<std::byte>> split(const std::vector<std::byte>& all,
                                                   const std::vector<int>& counts,
                                                   const std::vector<int>& offsets) {
    std::vector<std::vector<std::byte>> parts(counts.size());
    for (size_t i = 0; i < counts.size(); ++i)
      parts[i].assign(all.begin() + offsets[i], all.begin() + offsets[i] + counts[i]);
    return parts;
  }

  int rank_ = 0, size_ = 0, max_tag_ = 0;
  std::vector<MPI_Request> recvs_;
  std::vector<MPI_Request> sends_;
  std::vector<std::shared_ptr<const void>> owners_;
};

}  // namespace

std::unique_ptr<Transport> make_mpi_transport() {
  return std::make_unique<MpiTransport>();
}

}  // namespace ff::plan
