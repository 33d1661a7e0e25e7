// Times a pipeline schedule (pipeline_schedule.h) from per-op durations: each rank runs its ops
// in order; a compute op starts when the rank is free and its inputs are there (a forward needs
// the previous stage's activation, a backward the next stage's gradient). Sends never block:
// data sent after a compute op reaches the peer p2p seconds later; a hop between two stages on
// one rank costs nothing. This is the model under which DualPipe's README states its bubbles.
//
// Bubble of a rank: the step time (the last op's end over all ranks, every rank starting at 0)
// minus the time the rank computes. For 1F1B every rank's bubble is (pp-1)(F+B); for ZB1P,
// DualPipe and DualPipeV the README formula is the largest bubble over the ranks (DualPipe's
// middle ranks) -- docs/plan.md shows each and what upstream's split middle pair saves.
//
// Activations: a rank holds one per chunk from its forward until its backward has finished with
// it -- a full B, or the W of a zero-bubble B (W needs the stage's input). Within an F&B the
// forward's activation is counted before the backward's is released.
#pragma once
#include <string>
#include <vector>

#include "plan/pipeline_schedule.h"

namespace ff::plan {

// Seconds (or any unit) per op. B is a full backward chunk; a zero-bubble B takes b - w; F&B is
// an overlapped forward + full backward pair; p2p is added to every transfer between ranks.
struct OpDurations {
  double f = 1, b = 2, w = 1, fb = 3, p2p = 0;
};

// Throws ff::Error naming the field when a duration is negative or not finite, or w > b.
void check_durations(const OpDurations& d);

struct TimedOp {
  int op = -1;  // index into Schedule::ops[rank]
  double start = 0, end = 0;
};

struct SimResult {
  double step_time = 0;
  std::vector<double> busy;                    // per rank
  std::vector<double> bubble;                  // per rank: step_time - busy
  std::vector<int> peak_activations;           // per rank
  std::vector<std::vector<TimedOp>> timeline;  // per rank: its compute ops (F, B, W, F&B)
  double max_bubble() const;
  int max_peak_activations() const;
};

// Throws ff::InternalError if the schedule cannot finish (a rank waits for data that is never
// sent, or a transfer has no matching peer): validate_schedule runs it with unit durations.
SimResult simulate(const Schedule& s, const OpDurations& d);

// The README's bubble formula for the method, in the durations' units:
//   1F1B (pp-1)(F+B), ZB1P (pp-1)(F+B-2W), DualPipe / DualPipeV (pp/2-1)(F&B+B-3W).
double readme_bubble(Method m, int pp, const OpDurations& d);

// The timeline as an SVG picture drawn like upstream's figure: one row per rank, F orange,
// full B green, input-only B light green, W blue, F&B half orange / half green inside one black
// border, each block labelled with its chunk's number within its direction. Throws ff::Error for
// a timeline of more than 50000 blocks.
std::string render_svg(const Schedule& s, const SimResult& r, const OpDurations& d);

}  // namespace ff::plan
