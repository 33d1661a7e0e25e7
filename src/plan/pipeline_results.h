// Private to the plan module (pipeline_run.cc): the record each rank sends rank 0 after the
// steps, and rank 0's decoding of them, with --check's comparison against the sequential
// reference.
#pragma once
#include <cstddef>
#include <vector>

#include "plan/pipeline_run.h"

namespace ff::plan {

// Every step's time, the op times, the last step's losses and, with --check, its outputs
// (forward-only) or the grads of the rank's stage copies (training).
template <typename T>
std::vector<std::byte> encode_rank_results(const PipelineRunOptions& opt,
                                           const std::vector<double>& step_seconds,
                                           const OpTimes& times, const RankStepResult<T>& last,
                                           const std::vector<MlpStage<T>>& stages);

// Rank 0: `gathered[r]` is rank r's record. Fills losses, step_seconds, op_times and check.
template <typename T>
PipelineRunReport collect_results(const PipelineRunOptions& opt, const Schedule& s,
                                  const std::vector<std::vector<std::byte>>& gathered);

}  // namespace ff::plan
