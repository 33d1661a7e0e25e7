// `fireflyer dualpipe`: generate a pipeline schedule, simulate it, print per-rank bubbles and peak
// activations, and optionally draw the timeline (docs/plan.md).
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/core.h"
#include "plan/plan.h"

namespace ff::cli {

void add_dualpipe_command(CLI::App& app, DualPipeArgs& a) {
  CLI::App* c =
      app.add_subcommand("dualpipe",
                         "Simulate a pipeline schedule (DualPipe, DualPipeV, 1F1B, ZB1P): bubbles, "
                         "peak activations, step time, timeline SVG");
  c->add_option("--method", a.method, "dualpipe | dualpipev | 1f1b | zb1p")->capture_default_str();
  c->add_option("--pp", a.pp,
                "Pipeline stages, as in DualPipe's table (DualPipeV runs them on pp/2 ranks)")
      ->capture_default_str();
  c->add_option("--chunks", a.chunks, "Micro-batches per step")->capture_default_str();
  c->add_option("--f", a.f, "Duration of a forward chunk")->capture_default_str();
  c->add_option("--b", a.b, "Duration of a full backward chunk (input + weight grads)")
      ->capture_default_str();
  c->add_option("--w", a.w, "Duration of the weight-grad part of B")->capture_default_str();
  c->add_option("--fb", a.fb,
                "Duration of an overlapped forward + backward pair (F&B); default F + B");
  c->add_option("--p2p", a.p2p, "Latency added to every transfer between ranks")
      ->capture_default_str();
  c->add_flag("--overlap-middle-pair", a.overlap_middle_pair,
              "DualPipe(V): overlap the middle ranks' first main-step pair too, as the DeepSeek-V3 "
              "report's schedule does (upstream's code splits it)");
  c->add_option("--svg", a.svg, "Write the timeline as an SVG picture to this file");
  c->add_flag("--json", a.json,
              "Print one JSON object: bubble, step_time, peak_activations (and more)");
}

int run_dualpipe(const DualPipeArgs& a) {
  const plan::Method method = plan::parse_method(a.method);
  plan::ScheduleOptions options;
  options.split_middle_pair = !a.overlap_middle_pair;
  const plan::Schedule s = plan::make_schedule(method, a.pp, a.chunks, options);
  const plan::OpDurations d{a.f, a.b, a.w, a.fb.value_or(a.f + a.b), a.p2p};
  const plan::SimResult r = plan::simulate(s, d);
  const double formula = plan::readme_bubble(method, a.pp, d);

  if (!a.svg.empty()) {
    const std::string svg = plan::render_svg(s, r, d);  // first: an error leaves no file behind
    std::ofstream out(a.svg, std::ios::binary);
    FF_CHECK(out, "cannot write --svg file '{}'", a.svg);
    out << svg;
    out.close();
    FF_CHECK(out, "cannot write --svg file '{}'", a.svg);
  }
  if (a.json) {
    nlohmann::json j;
    j["method"] = plan::method_name(method);
    j["pp"] = a.pp;
    j["ranks"] = s.num_ranks;
    j["chunks"] = a.chunks;
    j["bubble"] = r.bubble;
    j["step_time"] = r.step_time;
    j["peak_activations"] = r.peak_activations;
    j["busy"] = r.busy;
    j["readme_bubble"] = formula;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::string text = fmt::format(
      "{} pp={} ranks={} chunks={}  F={:g} B={:g} W={:g} F&B={:g} p2p={:g}{}\n",
      plan::method_name(method), a.pp, s.num_ranks, a.chunks, d.f, d.b, d.w, d.fb, d.p2p,
      method == plan::Method::DualPipe || method == plan::Method::DualPipeV
          ? (a.overlap_middle_pair ? "  (middle pair overlapped)" : "  (middle pair split)")
          : "");
  text += fmt::format("{:>6} {:>12} {:>12} {:>18}\n", "rank", "busy", "bubble", "peak activations");
  for (int i = 0; i < s.num_ranks; ++i) {
    text += fmt::format("{:>6} {:>12g} {:>12g} {:>18}\n", i, r.busy[i], r.bubble[i],
                        r.peak_activations[i]);
  }
  text += fmt::format("step time {:g}, max bubble {:g}, README formula {:g}, peak activations {}\n",
                      r.step_time, r.max_bubble(), formula, r.max_peak_activations());
  if (!a.svg.empty()) text += fmt::format("timeline written to {}\n", a.svg);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace ff::cli
