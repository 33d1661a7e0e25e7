// The in-process transport: ranks are threads, messages are copied into per-(source,
// destination, tag) mailboxes under one lock. Made for tests, where messages are small.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "plan/pipeline_transport.h"

namespace ff::plan {

struct ThreadHub::State {
  int size;
  std::chrono::duration<double> timeout;
  std::mutex mu;
  std::condition_variable cv;
  bool aborted = false;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<std::byte>>> mailbox;
  struct Round {
    std::vector<std::vector<std::byte>> parts;
    int deposited = 0;
    int collected = 0;
  };
  std::map<uint64_t, Round> rounds;  // collectives in progress, by sequence number

  // Waits on cv until ready(), or throws on abort / timeout; what is ready wins over an abort,
  // so a rank whose data arrived carries on to its own verdict. `what` names the wait.
  template <typename Ready>
  void wait(std::unique_lock<std::mutex>& lock, Ready ready, int rank, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    while (!ready()) {
      FF_INVARIANT(!aborted, "rank {}: aborted while waiting for {} (another rank failed)", rank,
                   what);
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && !ready() && !aborted)
        fail_invariant("rank {}: {} did not happen within {} s (a deadlock?)", rank, what,
                       timeout.count());
    }
  }
};

namespace {

class ThreadTransport final : public Transport {
 public:
  ThreadTransport(ThreadHub::State& hub, int rank) : hub_(hub), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return hub_.size; }
  int max_tag() const override { return INT32_MAX; }

  Request post_send(const void* data, size_t bytes, int peer, int tag,
                    std::shared_ptr<const void>) override {
    check_peer(peer);
    std::vector<std::byte> msg(bytes);
    std::memcpy(msg.data(), data, bytes);
    {
      std::lock_guard lock(hub_.mu);
      FF_INVARIANT(!hub_.aborted, "rank {}: aborted (another rank failed)", rank_);
      hub_.mailbox[{rank_, peer, tag}].push_back(std::move(msg));
    }
    hub_.cv.notify_all();
    return -1;  // complete already
  }

  Request post_recv(void* data, size_t bytes, int peer, int tag) override {
    check_peer(peer);
    recvs_.push_back({data, bytes, peer, tag, false});
    return Request(recvs_.size() - 1);
  }

  void wait(Request r) override {
    FF_INVARIANT(r >= 0 && size_t(r) < recvs_.size(), "rank {}: no receive #{}", rank_, r);
    PendingRecv& p = recvs_[size_t(r)];
    if (p.done) return;
    std::unique_lock lock(hub_.mu);
    auto& box = hub_.mailbox[{p.peer, rank_, p.tag}];
    hub_.wait(
        lock, [&] { return !box.empty(); }, rank_,
        fmt::format("a message from rank {} with tag {}", p.peer, p.tag));
    FF_INVARIANT(box.front().size() == p.bytes,
                 "rank {}: message from rank {} with tag {} has {} bytes, expected {}", rank_,
                 p.peer, p.tag, box.front().size(), p.bytes);
    std::memcpy(p.data, box.front().data(), p.bytes);
    box.pop_front();
    p.done = true;
  }

  void progress() override {}
  void wait_sends() override {  // sends copy at once; only the step's receives to forget
    if (std::all_of(recvs_.begin(), recvs_.end(), [](const PendingRecv& p) { return p.done; }))
      recvs_.clear();
  }

  std::vector<std::vector<std::byte>> all_gather(std::span<const std::byte> mine) override {
    std::unique_lock lock(hub_.mu);
    const uint64_t id = next_round_++;
    ThreadHub::State::Round& round = hub_.rounds[id];
    round.parts.resize(size_t(hub_.size));
    round.parts[size_t(rank_)].assign(mine.begin(), mine.end());
    ++round.deposited;
    hub_.cv.notify_all();
    hub_.wait(
        lock, [&] { return round.deposited == hub_.size; }, rank_,
        fmt::format("collective #{}", id));
    std::vector<std::vector<std::byte>> all = round.parts;
    if (++round.collected == hub_.size) hub_.rounds.erase(id);
    return all;
  }

  std::vector<std::vector<std::byte>> gather_to_root(std::span<const std::byte> mine) override {
    auto all = all_gather(mine);
    if (rank_ != 0) all.clear();
    return all;
  }

 private:
  struct PendingRecv {
    void* data;
    size_t bytes;
    int peer;
    int tag;
    bool done;
  };

  void check_peer(int peer) const {
    FF_INVARIANT(peer >= 0 && peer < hub_.size && peer != rank_, "rank {}: bad peer {}", rank_,
                 peer);
  }

  ThreadHub::State& hub_;
  const int rank_;
  std::vector<PendingRecv> recvs_;
  uint64_t next_round_ = 0;
};

}  // namespace

ThreadHub::ThreadHub(int size, double timeout_s) : state_(std::make_unique<State>()) {
  state_->size = size;
  state_->timeout = std::chrono::duration<double>(timeout_s);
}

ThreadHub::~ThreadHub() = default;

std::unique_ptr<Transport> ThreadHub::transport(int rank) {
  FF_INVARIANT(rank >= 0 && rank < state_->size, "no rank {} among {}", rank, state_->size);
  return std::make_unique<ThreadTransport>(*state_, rank);
}

void ThreadHub::abort() {
  {
    std::lock_guard lock(state_->mu);
    state_->aborted = true;
  }
  state_->cv.notify_all();
}

}  // namespace ff::plan
