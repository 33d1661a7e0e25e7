// One `fireflyer train-pipeline` run on every rank: agree on the configuration, generate the
// schedule, run the steps with the executor (plan/pipeline_exec.h), gather the results on rank 0
// and, with `check`, compare them with the sequential reference.
//
// Failing cleanly: prepare_pipeline_run() does every check that can fail on the user's input
// before any point-to-point message, and every rank reaches the same verdict, so all ranks throw
// the same one-line ff::Error and none is left waiting for a peer. It first exchanges the
// configuration (all_gather) so that ranks started with different arguments (an MPMD launch)
// fail alike instead of generating different schedules.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "plan/pipeline_exec.h"
#include "plan/pipeline_schedule.h"
#include "plan/pipeline_transport.h"

namespace ff::plan {

struct PipelineRunOptions {
  Method method = Method::DualPipe;
  int pp = 4;  // as DualPipe's table counts: stages for DualPipeV, ranks for the others
  int chunks = 8;
  ScheduleOptions schedule;
  PipelineModelConfig model;
  DType dtype = DType::F32;  // F32 or F64
  int steps = 1;
  bool forward_only = false;
  bool check = false;
};

// What --check verified (rank 0).
struct PipelineCheck {
  bool losses_bit_exact = false;
  bool outputs_identical = false;  // forward-only runs
  double max_grad_rel_error = 0;   // training: max over tensors of max|g - ref| / max|ref|
  double grad_tolerance = 0;       // the bound max_grad_rel_error must meet
  bool passed = false;
  std::string failure;  // the first mismatch, one line; empty when passed
};

// Complete on rank 0; the other ranks get only ranks.
struct PipelineRunReport {
  int ranks = 0;
  std::vector<double> losses;        // the last step's per-chunk losses, in chunk order
  std::vector<double> step_seconds;  // per step: the slowest rank's step time
  OpTimes op_times;                  // summed over ranks and steps
  std::optional<PipelineCheck> check;
};

// The gradient bound --check applies: float64 1e-12; float32 1e-5 (a stage's grad sums its
// micro-batches' grads in schedule order, the reference in chunk order, and DualPipe sums the two
// replicas last: float32's ~6e-8 rounding, over tens of terms and with cancellation).
double grad_tolerance(DType dtype);

// The checks before any point-to-point traffic (see above); returns the schedule.
Schedule prepare_pipeline_run(const PipelineRunOptions& opt, Transport& t);

// Runs opt.steps steps of `s` and gathers the results on rank 0 (collectives on every rank).
PipelineRunReport run_pipeline(const PipelineRunOptions& opt, const Schedule& s, Transport& t);

}  // namespace ff::plan
