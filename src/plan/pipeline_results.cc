#include "plan/pipeline_results.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "plan/pipeline_wire.h"

namespace ff::plan {
namespace {

template <typename T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// max|got - want| / max|want| (absolute when want is all zero), in double.
template <typename T>
double relative_error(const std::vector<T>& got, const std::vector<T>& want) {
  // A value that is not finite, on either side, is as wrong as can be: std::max would drop a NaN.
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(double(got[i])) || !std::isfinite(double(want[i])))
      return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

template <typename T>
struct Decoded {
  std::vector<std::optional<T>> losses;                // [chunk]
  std::vector<std::optional<std::vector<T>>> outputs;  // [chunk], forward-only --check
  std::vector<std::vector<T>> g_w1, g_w2;              // [stage], replicas summed
};

template <typename T>
void add_replica(std::vector<T>& sum, const std::vector<T>& g) {
  if (sum.empty()) {
    sum = g;
    return;
  }
  FF_INVARIANT(sum.size() == g.size(), "grad replicas of {} and {} elements", sum.size(), g.size());
  for (size_t i = 0; i < g.size(); ++i) sum[i] += g[i];
}

template <typename T>
PipelineCheck check_against_reference(const PipelineRunOptions& opt, const Schedule& s,
                                      const Decoded<T>& got) {
  const ReferenceResult<T> ref =
      reference_step<T>(opt.model, s.num_stages, s.num_chunks, opt.forward_only);
  PipelineCheck c;
  c.grad_tolerance = grad_tolerance(opt.dtype);
  c.losses_bit_exact = true;
  for (int chunk = 0; chunk < s.num_chunks; ++chunk)
    if (!same_bits(*got.losses[size_t(chunk)], ref.losses[size_t(chunk)])) {
      c.losses_bit_exact = false;
      c.failure =
          fmt::format("the loss of chunk {} is {:.17g}, the reference's {:.17g}", chunk,
                      double(*got.losses[size_t(chunk)]), double(ref.losses[size_t(chunk)]));
      return c;
    }
  if (opt.forward_only) {
    for (int chunk = 0; chunk < s.num_chunks; ++chunk) {
      const std::vector<T>& y = *got.outputs[size_t(chunk)];
      const std::vector<T>& want = ref.outputs[size_t(chunk)];
      if (y.size() != want.size() || std::memcmp(y.data(), want.data(), y.size() * sizeof(T))) {
        c.failure = fmt::format(
            "the output of chunk {} differs from the reference's (max "
            "relative difference {:.3g})",
            chunk, y.size() == want.size() ? relative_error(y, want) : 1.0);
        return c;
      }
    }
    c.outputs_identical = true;
    c.passed = true;
    return c;
  }
  for (int st = 0; st < s.num_stages; ++st) {
    const MlpStage<T>& r = ref.stages[size_t(st)];
    for (const auto& [name, g, want] : {std::tuple{"w1", &got.g_w1[size_t(st)], &r.g_w1},
                                        std::tuple{"w2", &got.g_w2[size_t(st)], &r.g_w2}}) {
      const double e = relative_error(*g, *want);
      c.max_grad_rel_error = std::max(c.max_grad_rel_error, e);
      if (!(e <= c.grad_tolerance) && c.failure.empty())
        c.failure = fmt::format("the grad of stage {} {} is off by {:.3g} relative (bound {:.0e})",
                                st, name, e, c.grad_tolerance);
    }
  }
  c.passed = c.failure.empty();
  return c;
}

}  // namespace

template <typename T>
std::vector<std::byte> encode_rank_results(const PipelineRunOptions& opt,
                                           const std::vector<double>& step_seconds,
                                           const OpTimes& times, const RankStepResult<T>& last,
                                           const std::vector<MlpStage<T>>& stages) {
  WireWriter w;
  w.vector(step_seconds);
  w.pod(times);
  w.pod(uint64_t(last.losses.size()));
  for (const ChunkLoss<T>& l : last.losses) w.pod(l);
  if (opt.check && opt.forward_only) {
    w.pod(uint64_t(last.outputs.size()));
    for (const ChunkOutput<T>& o : last.outputs) {
      w.pod(int32_t(o.chunk));
      w.vector(o.y);
    }
  }
  if (opt.check && !opt.forward_only)
    for (const MlpStage<T>& st : stages) {
      w.vector(st.g_w1);
      w.vector(st.g_w2);
    }
  return w.take();
}

template <typename T>
PipelineRunReport collect_results(const PipelineRunOptions& opt, const Schedule& s,
                                  const std::vector<std::vector<std::byte>>& gathered) {
  PipelineRunReport report;
  report.ranks = int(gathered.size());
  Decoded<T> d;
  d.losses.resize(size_t(s.num_chunks));
  d.outputs.resize(size_t(s.num_chunks));
  d.g_w1.resize(size_t(s.num_stages));
  d.g_w2.resize(size_t(s.num_stages));
  for (size_t r = 0; r < gathered.size(); ++r) {
    WireReader in(gathered[r]);
    const std::vector<double> steps = in.vector<double>();
    report.step_seconds.resize(steps.size(), 0.0);
    for (size_t i = 0; i < steps.size(); ++i)
      report.step_seconds[i] = std::max(report.step_seconds[i], steps[i]);
    add_op_times(report.op_times, in.pod<OpTimes>());
    for (uint64_t n = in.pod<uint64_t>(); n > 0; --n) {
      const auto l = in.pod<ChunkLoss<T>>();
      FF_INVARIANT(l.chunk >= 0 && l.chunk < s.num_chunks && !d.losses[size_t(l.chunk)],
                   "rank {} reports a loss for chunk {} twice or out of range", r, l.chunk);
      d.losses[size_t(l.chunk)] = l.loss;
    }
    if (opt.check && opt.forward_only)
      for (uint64_t n = in.pod<uint64_t>(); n > 0; --n) {
        const int32_t chunk = in.pod<int32_t>();
        FF_INVARIANT(chunk >= 0 && chunk < s.num_chunks && !d.outputs[size_t(chunk)],
                     "rank {} reports the output of chunk {} twice or out of range", r, chunk);
        d.outputs[size_t(chunk)] = in.vector<T>();
      }
    if (opt.check && !opt.forward_only)
      for (const ChunkRef& held : s.rank_stages[r]) {
        add_replica(d.g_w1[size_t(held.stage)], in.vector<T>());
        add_replica(d.g_w2[size_t(held.stage)], in.vector<T>());
      }
  }
  for (int chunk = 0; chunk < s.num_chunks; ++chunk) {
    FF_INVARIANT(d.losses[size_t(chunk)], "no rank computed the loss of chunk {}", chunk);
    report.losses.push_back(double(*d.losses[size_t(chunk)]));
    if (opt.check && opt.forward_only)
      FF_INVARIANT(d.outputs[size_t(chunk)], "no rank returned the output of chunk {}", chunk);
  }
  if (opt.check) report.check = check_against_reference(opt, s, d);
  return report;
}

#define FF_PLAN_RESULTS_INSTANTIATE(T)                                                      \
  template std::vector<std::byte> encode_rank_results<T>(                                   \
      const PipelineRunOptions&, const std::vector<double>&, const OpTimes&,                \
      const RankStepResult<T>&, const std::vector<MlpStage<T>>&);                           \
  template PipelineRunReport collect_results<T>(const PipelineRunOptions&, const Schedule&, \
                                                const std::vector<std::vector<std::byte>>&);
FF_PLAN_RESULTS_INSTANTIATE(float)
FF_PLAN_RESULTS_INSTANTIATE(double)
#undef FF_PLAN_RESULTS_INSTANTIATE

}  // namespace ff::plan
