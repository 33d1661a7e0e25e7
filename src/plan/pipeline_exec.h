// The pipeline executor: runs one rank's op list of a Schedule (plan/pipeline_schedule.h) for one
// step of the toy model (plan/pipeline_model.h), exchanging activations and grads over a
// Transport (plan/pipeline_transport.h).
//
// Op semantics. Transfers are posted where upstream DualPipe posts them, but waited for
// differently: upstream's batch_isend_irecv waits for every posted transfer, sends included,
// before each compute op; here a compute op waits only for the receive it needs and sends never
// block. That is the simulator's model (pipeline_sim.h).
//   RecvForward / RecvBackward   post a receive and return; the compute op that needs the data
//                                waits for it, and only for it.
//   F                            forward of one (stage, chunk); the last stage also computes the
//                                chunk's loss (its label is drawn locally from (seed, chunk)).
//   B                            backward; the last stage starts from its loss. zb = true computes
//                                the input grad only and queues the weight grad.
//   W                            the oldest queued weight grad (first in, first out).
//   F&B                          F of `a`, then a full B of `b` (one thread: no real overlap).
//   SendForward / SendBackward   post a non-blocking send of what the previous compute produced;
//                                the buffer lives until the transport reports it sent.
// A stage's input with no RecvForward (stage 0 reads its data; DualPipeV's turn at the last rank
// takes the local output of the stage before it) and an output grad with no RecvBackward (the
// turn's grad looped back locally) are taken from this rank's own state.
//
// Forward-only (inference): B, W, RecvBackward and SendBackward are skipped and F&B runs its F;
// losses are still computed and the last stage's outputs are collected.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "plan/pipeline_model.h"
#include "plan/pipeline_schedule.h"
#include "plan/pipeline_transport.h"

namespace ff::plan {

// The compute op kinds timed separately, so a benchmark can feed measured durations to the
// simulator: F, full B, zero-bubble B (input grad only), W, F&B.
enum class ComputeKind : uint8_t { F, B, Bzb, W, FB };
inline constexpr int kNumComputeKinds = 5;
const char* compute_kind_name(ComputeKind k);  // "F", "B", "Bzb", "W", "FB"

struct OpTime {
  int64_t count = 0;
  double seconds = 0;  // compute only: waiting for a receive is not counted
};
using OpTimes = std::array<OpTime, kNumComputeKinds>;
// Adds `more`'s counts and seconds into `into`, kind by kind (steps, ranks).
void add_op_times(OpTimes& into, const OpTimes& more);

template <typename T>
struct ChunkLoss {
  int chunk = -1;
  T loss = 0;
};

template <typename T>
struct ChunkOutput {
  int chunk = -1;
  std::vector<T> y;  // [rows, H]
};

template <typename T>
struct RankStepResult {
  std::vector<ChunkLoss<T>> losses;     // the chunks whose last stage this rank ran, in run order
  std::vector<ChunkOutput<T>> outputs;  // forward-only: the last stage's outputs, in run order
  double step_seconds = 0;              // this rank, from its first op to its last send completed
  OpTimes op_times;
};

struct ExecOptions {
  bool forward_only = false;
};

// The stage copies a rank holds, built from (seed, stage): one per schedule.rank_stages[rank]
// entry, in that order.
template <typename T>
std::vector<MlpStage<T>> build_rank_stages(const Schedule& s, int rank,
                                           const PipelineModelConfig& c);

// Runs transport.rank()'s ops of one step. Weight grads accumulate into `stages` (the caller
// zeroes them between steps). A schedule the rank cannot follow (data it never received, a W with
// no queued zero-bubble B) throws ff::InternalError.
template <typename T>
RankStepResult<T> run_rank_step(const Schedule& s, const PipelineModelConfig& c,
                                std::vector<MlpStage<T>>& stages, Transport& transport,
                                const ExecOptions& opt);

}  // namespace ff::plan
