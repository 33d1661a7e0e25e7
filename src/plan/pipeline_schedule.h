// Pipeline-parallel training schedules: 1F1B, ZB1P (zero-bubble H1), DualPipe and DualPipeV, as
// per-rank ordered lists of operations. The simulator (pipeline_sim.h) times them; the executor
// (pipeline_exec.h) runs them across MPI ranks. Nothing here is hard-coded per size: every list is
// generated from the method's step structure (docs/plan.md).
//
// Terms (DualPipe's README):
//   stage      one contiguous piece of the model; a micro-batch goes through stages 0..S-1.
//   chunk      one micro-batch (DualPipe's num_chunks = micro-batches per step).
//   F          forward of one chunk through one stage.
//   B          backward of one chunk through one stage. A full B computes input and weight grads;
//              a zero-bubble B (Op::zb) computes the input grad only and leaves its weight grad to
//              a later W on the same rank (first in, first out).
//   W          the weight-grad part of an earlier zero-bubble B.
//   F&B        a forward of one chunk overlapped with a backward of another (DualPipe's main step).
//
// Placement:
//   1F1B, ZB1P   pp ranks, rank r holds stage r. One direction.
//   DualPipe     pp ranks (pp even), pp stages, two directions. Direction 0 enters at rank 0 and
//                runs stage s on rank s; direction 1 enters at rank pp-1 and runs stage s on rank
//                pp-1-s. So rank r holds two copies of the model's stages: stage r (direction 0)
//                and stage pp-1-r (direction 1); a stage's gradient is the sum of its two copies.
//                Chunks 0..N/2-1 go in direction 0, chunks N/2..N-1 in direction 1.
//   DualPipeV    pp stages (pp even) on pp/2 ranks; rank r holds stages r and pp-1-r. One
//                direction that goes down the ranks and back up (a V); the last rank hands stage
//                pp/2-1's output to stage pp/2 locally.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ff::plan {

enum class Method { OneF1B, ZB1P, DualPipe, DualPipeV };

// "1f1b", "zb1p", "dualpipe", "dualpipev"; parse_method throws ff::Error on anything else.
Method parse_method(std::string_view name);
std::string_view method_name(Method m);

enum class OpKind : uint8_t {
  Forward,          // F of `a`
  Backward,         // B of `a` (zb: input grad only)
  Weight,           // W of `a` (the weight grad an earlier zero-bubble B of `a` left)
  ForwardBackward,  // F of `a` overlapped with a full B of `b`
  SendForward,      // send `a`'s output activation (a.stage produced it) to `peer`
  RecvForward,      // receive `a`'s input activation (a.stage consumes it) from `peer`
  SendBackward,     // send `a`'s input grad (a.stage produced it) to `peer`
  RecvBackward,     // receive `a`'s output grad (a.stage consumes it) from `peer`
};

std::string_view op_kind_name(OpKind k);  // "F", "B", "W", "F&B", "SendF", "RecvF", ...

// One (stage, chunk) pair: the unit a compute op works on or a transfer carries.
struct ChunkRef {
  int stage = -1;  // 0..num_stages-1
  int chunk = -1;  // 0..num_chunks-1, over the whole step
  int dir = 0;     // DualPipe: 0 or 1 (chunk < N/2 <=> dir 0); other methods: 0
  bool operator==(const ChunkRef&) const = default;
};

struct Op {
  OpKind kind = OpKind::Forward;
  ChunkRef a;       // the chunk of F / B / W / a transfer; the forward half of F&B
  ChunkRef b;       // ForwardBackward only: the backward half
  bool zb = false;  // Backward: zero-bubble (input grad only; a later Weight op finishes it)
  int peer = -1;    // transfers: the other rank
  bool operator==(const Op&) const = default;
};

struct Schedule {
  Method method = Method::OneF1B;
  int pp = 0;  // as the user gave it: stages (DualPipeV) or ranks (the others)
  int num_ranks = 0;
  int num_stages = 0;  // stages of the model (one direction)
  int num_chunks = 0;
  int num_dirs = 1;  // 2 for DualPipe
  // rank_stages[r]: the (stage, dir) copies rank r holds, as ChunkRefs with chunk = -1.
  std::vector<std::vector<ChunkRef>> rank_stages;
  std::vector<std::vector<Op>> ops;  // ops[r]: rank r's operations in order
  // The rank that holds `stage` of direction `dir`.
  int rank_of(int stage, int dir) const;
};

struct ScheduleOptions {
  // DualPipe / DualPipeV: the middle ranks (DualPipeV: the last rank) run their first main-step
  // pair as a plain F then B instead of an overlapped F&B. Upstream's code does this "to further
  // reduce bubble size"; with it off the schedule is the one the DeepSeek-V3 report describes,
  // whose bubble is exactly the README formula (docs/plan.md).
  bool split_middle_pair = true;
};

// Generates the schedule. Throws ff::Error (one line, naming the argument) when pp or num_chunks
// do not suit the method: pp < 2 (DualPipe, DualPipeV: pp < 2 or odd), num_chunks < 1 (1F1B,
// ZB1P), num_chunks < 2*pp or odd num_chunks (DualPipe), num_chunks < pp (DualPipeV; upstream's
// num_chunks >= 2 * ranks with ranks = pp/2).
Schedule make_schedule(Method method, int pp, int num_chunks, const ScheduleOptions& options = {});

// Checks a schedule's consistency: every (stage, chunk) gets exactly one F and one B (and one W
// per zero-bubble B) on the rank holding it, after its inputs, and every send has its matching
// receive. Throws ff::InternalError on the first violation. make_schedule's output always passes;
// the tests run it on every generated schedule.
void validate_schedule(const Schedule& s);

}  // namespace ff::plan
