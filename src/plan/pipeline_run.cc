#include "plan/pipeline_run.h"

#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include "core/error.h"
#include "plan/pipeline_results.h"
#include "plan/pipeline_wire.h"

namespace ff::plan {
namespace {

// The arguments every rank must share, as (flag, value) text: compared after an all_gather so a
// mismatch names the flag and both values on every rank alike.
std::vector<std::pair<std::string, std::string>> config_fields(const PipelineRunOptions& o) {
  return {{"--method", std::string(method_name(o.method))},
          {"--pp", std::to_string(o.pp)},
          {"--chunks", std::to_string(o.chunks)},
          {"--hidden", std::to_string(o.model.hidden)},
          {"--seq", std::to_string(o.model.seq)},
          {"--micro-batch", std::to_string(o.model.micro_batch)},
          {"--dtype", o.dtype == DType::F64 ? "f64" : "f32"},
          {"--seed", std::to_string(o.model.seed)},
          {"--steps", std::to_string(o.steps)},
          {"--forward-only", o.forward_only ? "on" : "off"},
          {"--check", o.check ? "on" : "off"},
          {"--overlap-middle-pair", o.schedule.split_middle_pair ? "off" : "on"}};
}

void check_ranks_agree(const PipelineRunOptions& opt, Transport& t) {
  const auto mine = config_fields(opt);
  WireWriter w;
  for (const auto& [flag, value] : mine) w.string(value);
  const auto all = t.all_gather(w.bytes());
  std::vector<std::vector<std::string>> values(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    WireReader in(all[r]);
    for (size_t i = 0; i < mine.size(); ++i) values[r].push_back(in.string());
  }
  for (size_t i = 0; i < mine.size(); ++i)
    for (size_t r = 1; r < values.size(); ++r)
      FF_CHECK(values[r][i] == values[0][i], "ranks disagree on {}: rank 0 has {}, rank {} has {}",
               mine[i].first, values[0][i], r, values[r][i]);
}

void check_model(const PipelineRunOptions& o) {
  FF_CHECK(o.dtype == DType::F32 || o.dtype == DType::F64, "--dtype must be f32 or f64");
  FF_CHECK(o.model.hidden >= 1, "--hidden must be at least 1, got {}", o.model.hidden);
  FF_CHECK(o.model.seq >= 1, "--seq must be at least 1, got {}", o.model.seq);
  FF_CHECK(o.model.micro_batch >= 1, "--micro-batch must be at least 1, got {}",
           o.model.micro_batch);
  FF_CHECK(o.steps >= 1, "--steps must be at least 1, got {}", o.steps);
  const size_t bytes = o.model.activation_size() * (o.dtype == DType::F64 ? 8 : 4);
  FF_CHECK(double(o.model.seq) * o.model.micro_batch * o.model.hidden * 4 < double(INT_MAX) &&
               bytes < size_t(INT_MAX),
           "--micro-batch x --seq x --hidden = {} x {} x {} makes activations too large for one "
           "message",
           o.model.micro_batch, o.model.seq, o.model.hidden);
}

// Bytes one rank needs, roughly, and the bytes --check gathers at rank 0; refused up front so a
// too-large model fails on every rank alike with a message instead of bad_alloc or the OOM killer
// in the middle of a step. The toy model's ranks are taken to share this host.
void check_sizes(const PipelineRunOptions& o, const Schedule& s, int ranks) {
  const double elem = o.dtype == DType::F64 ? 8 : 4;
  const double h = o.model.hidden;
  const double stage = 7 * 4 * h * h * elem;  // w1, w2, their transposes, two grads, a scratch
  const double act = double(o.model.activation_size()) * elem;
  // In flight per rank: at most ~pp+1 chunks, each keeping its input, its 4H hidden layer twice
  // (before and after GELU) and its output; the data of every chunk for stage 0 / the loss.
  const double per_rank = 2 * stage + (s.pp + 2) * 10 * act + 2 * s.num_chunks * act;
  const double reference = o.check ? s.num_stages * stage + 2 * s.num_chunks * act : 0;
  const double gathered =
      !o.check         ? 0
      : o.forward_only ? s.num_chunks * act
                       : double(ranks) * double(s.rank_stages[0].size()) * 2 * 4 * h * h * elem;
  const double total = ranks * per_rank + reference + gathered;
  const double host = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  FF_CHECK(host <= 0 || total <= 0.8 * host,
           "--hidden {} with {} ranks{} needs about {:.1f} GiB, more than this host's {:.1f} GiB "
           "allows",
           o.model.hidden, ranks, o.check ? " and --check" : "", total / (1 << 30),
           host / (1 << 30));
  FF_CHECK(gathered < double(INT_MAX),
           "--check gathers about {:.1f} GiB at rank 0, more than one MPI gather carries (2 GiB); "
           "use a smaller --hidden",
           gathered / (1 << 30));
}

template <typename T>
PipelineRunReport run_typed(const PipelineRunOptions& opt, const Schedule& s, Transport& t) {
  std::vector<MlpStage<T>> stages = build_rank_stages<T>(s, t.rank(), opt.model);
  std::vector<double> step_seconds;
  OpTimes times{};
  RankStepResult<T> last;
  for (int step = 0; step < opt.steps; ++step) {
    for (MlpStage<T>& st : stages) st.zero_grads();
    t.all_gather({});  // start together, so a step time is not a wait for a late peer
    last = run_rank_step(s, opt.model, stages, t, ExecOptions{.forward_only = opt.forward_only});
    step_seconds.push_back(last.step_seconds);
    add_op_times(times, last.op_times);
  }
  const auto gathered =
      t.gather_to_root(encode_rank_results(opt, step_seconds, times, last, stages));
  if (t.rank() == 0) return collect_results<T>(opt, s, gathered);
  PipelineRunReport report;
  report.ranks = t.size();
  return report;
}

}  // namespace

double grad_tolerance(DType dtype) {
  return dtype == DType::F64 ? 1e-12 : 1e-5;
}

Schedule prepare_pipeline_run(const PipelineRunOptions& opt, Transport& t) {
  check_ranks_agree(opt, t);
  check_model(opt);
  // make_schedule owns the pp / chunks rules; its size cap keeps this cheap on every rank.
  Schedule s = make_schedule(opt.method, opt.pp, opt.chunks, opt.schedule);
  FF_CHECK(t.size() == s.num_ranks,
           "{} with --pp {} needs {} ranks, but the job has {} (start it with mpirun -np {})",
           method_name(opt.method), opt.pp, s.num_ranks, t.size(), s.num_ranks);
  check_sizes(opt, s, s.num_ranks);
  const int64_t last_tag =
      message_tag(MessageKind::Grad, {s.num_stages - 1, s.num_chunks - 1, s.num_dirs - 1},
                  s.num_stages, s.num_dirs);
  FF_CHECK(last_tag <= t.max_tag(),
           "--chunks {} with {} stages needs message tags up to {}, above the transport's {}",
           opt.chunks, s.num_stages, last_tag, t.max_tag());
  return s;
}

PipelineRunReport run_pipeline(const PipelineRunOptions& opt, const Schedule& s, Transport& t) {
  return opt.dtype == DType::F64 ? run_typed<double>(opt, s, t) : run_typed<float>(opt, s, t);
}

}  // namespace ff::plan
