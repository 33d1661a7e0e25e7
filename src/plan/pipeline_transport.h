// How pipeline ranks exchange data: non-blocking point-to-point messages named by (peer, tag), and
// the few collectives the driver needs before and after a step (comparing configurations,
// gathering results on rank 0). Two implementations: MPI between processes
// (make_mpi_transport, for `fireflyer train-pipeline` under mpirun) and threads in one process
// (ThreadHub, for tests). mpi.h stays inside the MPI implementation's .cc file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "plan/pipeline_schedule.h"

namespace ff::plan {

class Transport {
 public:
  using Request = int64_t;
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int max_tag() const = 0;  // tags are 0..max_tag()

  // Starts sending `bytes` bytes at `data` to (peer, tag) and returns at once. `owner` keeps the
  // memory alive until the send completes; nobody may write to it meanwhile.
  virtual Request post_send(const void* data, size_t bytes, int peer, int tag,
                            std::shared_ptr<const void> owner) = 0;
  // Starts receiving exactly `bytes` bytes from (peer, tag) into `data`, which must stay alive and
  // untouched until wait() on the returned request has returned.
  virtual Request post_recv(void* data, size_t bytes, int peer, int tag) = 0;
  // Blocks until the receive `r` has landed.
  virtual void wait(Request r) = 0;
  // Releases the owners of sends that have completed, without blocking.
  virtual void progress() = 0;
  // Blocks until every posted send has completed: the end of a step. Receive requests posted so
  // far are forgotten once all have landed (request numbers start again from 0).
  virtual void wait_sends() = 0;

  // Collectives: every rank calls them in the same order. all_gather returns every rank's bytes
  // (index = rank) on every rank; gather_to_root returns them on rank 0 and nothing elsewhere.
  virtual std::vector<std::vector<std::byte>> all_gather(std::span<const std::byte> mine) = 0;
  virtual std::vector<std::vector<std::byte>> gather_to_root(std::span<const std::byte> mine) = 0;
};

// Messages are named by the op that receives them: an activation by its RecvForward's chunk (the
// stage that consumes it), a grad by its RecvBackward's chunk (the stage whose output grad it is).
// The sender names the same message: SendForward of (s, c, d) is the activation of (s+1, c, d);
// SendBackward of (s, c, d) the grad of (s-1, c, d). Each (kind, stage, chunk, dir) is sent once
// per step, so two messages in flight never share a tag.
enum class MessageKind : uint8_t { Activation = 0, Grad = 1 };
int64_t message_tag(MessageKind kind, const ChunkRef& receiver, int num_stages, int num_dirs);

// The MPI transport over MPI_COMM_WORLD (MPI_Isend / MPI_Irecv of bytes; collectives with
// MPI_Allgatherv / MPI_Gatherv). MPI must be initialised, and stay so while it lives.
std::unique_ptr<Transport> make_mpi_transport();

// `size` in-process ranks, one thread each. Sends copy their bytes into the receiver's mailbox,
// so they complete at once. abort() makes every blocked or later call throw, so one thread's
// failure cannot leave the others waiting; a wait longer than `timeout_s` throws too (a
// deadlocked schedule fails a test rather than hanging it).
class ThreadHub {
 public:
  explicit ThreadHub(int size, double timeout_s = 60);
  ~ThreadHub();
  ThreadHub(const ThreadHub&) = delete;
  ThreadHub& operator=(const ThreadHub&) = delete;

  std::unique_ptr<Transport> transport(int rank);
  void abort();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace ff::plan
