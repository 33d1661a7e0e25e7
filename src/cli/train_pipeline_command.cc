// `fireflyer train-pipeline`, run under mpirun: one training (or inference) step of the toy model
// (plan/pipeline_model.h) across the MPI ranks, following a generated schedule, optionally checked
// against the sequential reference on rank 0 (docs/plan.md).
//
// Failures: an input error (plan::prepare_pipeline_run) is the same on every rank, so every rank
// prints it and leaves through MPI_Finalize with status 1. Anything thrown once the step has begun
// may concern one rank only while its peers wait for it, so that rank aborts the whole job.
#include <fmt/format.h>
#include <mpi.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/core.h"
#include "plan/plan.h"

namespace ff::cli {

void add_train_pipeline_command(CLI::App& app, TrainPipelineArgs& a) {
  CLI::App* c = app.add_subcommand(
      "train-pipeline",
      "Run a training step of a small model across MPI ranks following a pipeline schedule "
      "(under mpirun -np <ranks>)");
  c->add_option("--method", a.method, "dualpipe | dualpipev | 1f1b | zb1p")->capture_default_str();
  c->add_option("--pp", a.pp,
                "Pipeline stages, as in DualPipe's table: DualPipeV runs them on pp/2 ranks, the "
                "others on pp ranks")
      ->capture_default_str();
  c->add_option("--chunks", a.chunks, "Micro-batches per step")->capture_default_str();
  c->add_option("--hidden", a.hidden, "Hidden size H (stages are H -> 4H -> H)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--seq", a.seq, "Sequence length")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--micro-batch", a.micro_batch, "Sequences per micro-batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--dtype", a.dtype, "f32 or f64")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f64"}));
  c->add_option("--seed", a.seed, "Seed of the weights and the data")->capture_default_str();
  c->add_option("--steps", a.steps, "Steps to run (the same step each time: no update)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_flag("--forward-only", a.forward_only, "Inference: forward only, outputs collected");
  c->add_flag("--check", a.check,
              "Compare with the sequential reference on rank 0: losses bit-exact, grads within "
              "1e-12 (f64) / 1e-5 (f32) relative, forward-only outputs identical");
  c->add_flag("--overlap-middle-pair", a.overlap_middle_pair,
              "DualPipe(V): overlap the middle ranks' first main-step pair too (see dualpipe)");
  c->add_flag("--json", a.json, "Rank 0 prints one JSON object");
}

namespace {

plan::PipelineRunOptions run_options(const TrainPipelineArgs& a) {
  plan::PipelineRunOptions o;
  o.method = plan::parse_method(a.method);
  o.pp = a.pp;
  o.chunks = a.chunks;
  o.schedule.split_middle_pair = !a.overlap_middle_pair;
  o.model = {.hidden = a.hidden, .seq = a.seq, .micro_batch = a.micro_batch, .seed = a.seed};
  o.dtype = a.dtype == "f64" ? DType::F64 : DType::F32;
  o.steps = a.steps;
  o.forward_only = a.forward_only;
  o.check = a.check;
  return o;
}

double mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / double(v.size());
}

// A loss as its dtype prints it shortest (a float32 loss is not shown with float64's digits).
std::string loss_text(double loss, DType dtype) {
  return dtype == DType::F32 ? fmt::format("{}", float(loss)) : fmt::format("{}", loss);
}

void print_json(const plan::PipelineRunOptions& o, const plan::PipelineRunReport& r) {
  nlohmann::json j;
  j["method"] = plan::method_name(o.method);
  j["pp"] = o.pp;
  j["ranks"] = r.ranks;
  j["chunks"] = o.chunks;
  j["hidden"] = o.model.hidden;
  j["seq"] = o.model.seq;
  j["micro_batch"] = o.model.micro_batch;
  j["dtype"] = o.dtype == DType::F64 ? "f64" : "f32";
  j["forward_only"] = o.forward_only;
  j["losses"] = r.losses;
  j["step_time_s"] = mean(r.step_seconds);
  j["step_times_s"] = r.step_seconds;
  nlohmann::json ops = nlohmann::json::object();
  for (int k = 0; k < plan::kNumComputeKinds; ++k) {
    const plan::OpTime& t = r.op_times[size_t(k)];
    const char* name = plan::compute_kind_name(plan::ComputeKind(k));
    ops[name] = t.count > 0 ? nlohmann::json(t.seconds / double(t.count)) : nlohmann::json();
  }
  j["op_time_s"] = ops;
  if (r.check) {
    const plan::PipelineCheck& c = *r.check;
    j["check"] = {{"passed", c.passed}, {"losses_bit_exact", c.losses_bit_exact}};
    if (o.forward_only) {
      j["check"]["outputs_identical"] = c.outputs_identical;
    } else {
      j["check"]["max_grad_rel_error"] = c.max_grad_rel_error;
      j["check"]["grad_tolerance"] = c.grad_tolerance;
    }
    if (!c.passed) j["check"]["failure"] = c.failure;
  }
  std::printf("%s\n", j.dump().c_str());
}

void print_text(const plan::PipelineRunOptions& o, const plan::PipelineRunReport& r) {
  std::string text =
      fmt::format("{} pp={} ranks={} chunks={} hidden={} seq={} micro-batch={} {}{}\n",
                  plan::method_name(o.method), o.pp, r.ranks, o.chunks, o.model.hidden, o.model.seq,
                  o.model.micro_batch, o.dtype == DType::F64 ? "f64" : "f32",
                  o.forward_only ? " forward-only" : "");
  for (size_t c = 0; c < r.losses.size(); ++c)
    text += fmt::format("loss[{}] {}\n", c, loss_text(r.losses[c], o.dtype));
  text += fmt::format("step time {:.4f} s (the slowest rank; mean of {} step{})\n",
                      mean(r.step_seconds), r.step_seconds.size(),
                      r.step_seconds.size() == 1 ? "" : "s");
  std::string ops;
  for (int k = 0; k < plan::kNumComputeKinds; ++k) {
    const plan::OpTime& t = r.op_times[size_t(k)];
    if (t.count > 0)
      ops += fmt::format(" {} {:.4f}", plan::compute_kind_name(plan::ComputeKind(k)),
                         t.seconds / double(t.count));
  }
  text += fmt::format("op time (s, mean over ranks):{}\n", ops);
  if (r.check) {
    const plan::PipelineCheck& c = *r.check;
    if (!c.passed) {
      text += fmt::format("check FAILED: {}\n", c.failure);
    } else if (o.forward_only) {
      text += fmt::format("check ok: {} losses bit-exact, outputs identical\n", r.losses.size());
    } else {
      text += fmt::format(
          "check ok: {} losses bit-exact, max relative grad error {:.3g} (bound {:.0e})\n",
          r.losses.size(), c.max_grad_rel_error, c.grad_tolerance);
    }
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
}

}  // namespace

int run_train_pipeline(const TrainPipelineArgs& a) {
  const plan::PipelineRunOptions opt = run_options(a);
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  auto transport = plan::make_mpi_transport();
  const int rank = transport->rank();
  plan::Schedule schedule;
  try {
    schedule = plan::prepare_pipeline_run(opt, *transport);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fflush(stderr);
    transport.reset();
    MPI_Finalize();
    return 1;
  }
  plan::PipelineRunReport report;
  try {
    report = plan::run_pipeline(opt, schedule, *transport);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  transport.reset();
  MPI_Finalize();
  if (rank != 0) return 0;
  if (a.json) {
    print_json(opt, report);
  } else {
    print_text(opt, report);
  }
  return report.check && !report.check->passed ? 1 : 0;
}

}  // namespace ff::cli
