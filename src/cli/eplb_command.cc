// fireflyer eplb: reads expert loads (JSON or CSV), plans them with plan::rebalance_experts and
// prints the plan per layer, or as one JSON object (docs/plan.md, "EPLB").
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "core/core.h"
#include "plan/plan.h"

namespace ff::cli {

namespace {

using Rows = std::vector<std::vector<double>>;

// `[[...], ...]`: one array of numbers per layer.
Rows parse_json_loads(const std::string& text, const std::string& path) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  FF_CHECK(doc.is_array(), "{}: expected an array of layers, each an array of expert loads", path);
  Rows rows;
  for (size_t l = 0; l < doc.size(); ++l) {
    FF_CHECK(doc[l].is_array(), "{}: layer {} is not an array of expert loads", path, l);
    std::vector<double>& row = rows.emplace_back();
    for (size_t e = 0; e < doc[l].size(); ++e) {
      FF_CHECK(doc[l][e].is_number(), "{}: layer {}, expert {}: {} is not a number", path, l, e,
               doc[l][e].dump());
      row.push_back(doc[l][e].get<double>());
    }
  }
  return rows;
}

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// One layer a line, loads separated by commas; blank lines are skipped.
Rows parse_csv_loads(const std::string& text, const std::string& path) {
  Rows rows;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    const std::string_view line = trim(std::string_view(text).substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;
    std::vector<double>& row = rows.emplace_back();
    for (size_t f = 0; f <= line.size();) {
      const size_t comma = std::min(line.find(',', f), line.size());
      const std::string_view field = trim(line.substr(f, comma - f));
      double v = 0;
      const auto [ptr, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
      FF_CHECK(!field.empty() && ec == std::errc() && ptr == field.data() + field.size(),
               "{}:{}: '{}' is not a number", path, line_no, field);
      row.push_back(v);
      f = comma + 1;
    }
  }
  return rows;
}

plan::LoadMatrix read_loads(const std::string& path) {
  const std::string text = read_text_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  FF_CHECK(first != std::string::npos, "{}: empty file, expected expert loads", path);
  const Rows rows = text[first] == '[' ? parse_json_loads(text, path) : parse_csv_loads(text, path);
  try {
    return plan::LoadMatrix::from_rows(rows);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
}

plan::EplbPolicy parse_policy(const std::string& name) {
  if (name == "hierarchical") return plan::EplbPolicy::Hierarchical;
  if (name == "global") return plan::EplbPolicy::Global;
  return plan::EplbPolicy::Auto;
}

void print_json(const plan::EplbPlan& p) {
  using json = nlohmann::ordered_json;  // keys in the order docs/plan.md lists them
  json phy2log = json::array(), log2phy = json::array(), logcnt = json::array();
  json gpu_load = json::array();
  for (int l = 0; l < p.num_layers; ++l) {
    json slots = json::array(), experts = json::array(), counts = json::array();
    json loads = json::array();
    for (int s = 0; s < p.num_replicas; ++s) slots.push_back(p.phy_to_log(l, s));
    for (int e = 0; e < p.num_experts; ++e) {
      json ranks = json::array();
      for (int r = 0; r < p.max_count; ++r) ranks.push_back(p.log_to_phy(l, e, r));
      experts.push_back(std::move(ranks));
      counts.push_back(p.count(l, e));
    }
    for (int g = 0; g < p.num_gpus; ++g) loads.push_back(p.load_of_gpu(l, g));
    phy2log.push_back(std::move(slots));
    log2phy.push_back(std::move(experts));
    logcnt.push_back(std::move(counts));
    gpu_load.push_back(std::move(loads));
  }
  const json out = {{"phy2log", phy2log},
                    {"log2phy", log2phy},
                    {"logcnt", logcnt},
                    {"gpu_load", gpu_load},
                    {"imbalance", {{"before", p.imbalance_before}, {"after", p.imbalance_after}}}};
  std::printf("%s\n", out.dump().c_str());
}

void print_text(const plan::EplbPlan& p, int num_groups) {
  std::string out = fmt::format(
      "eplb: {} layers x {} experts -> {} replicas on {} GPUs ({} nodes, {} groups), {} policy\n",
      p.num_layers, p.num_experts, p.num_replicas, p.num_gpus, p.num_nodes, num_groups,
      p.hierarchical ? "hierarchical" : "global");
  const int gpus_per_node = p.num_gpus / p.num_nodes;
  for (int l = 0; l < p.num_layers; ++l) {
    out += fmt::format("layer {}: imbalance (max / mean GPU load) {:.2f} before, {:.2f} after\n", l,
                       p.imbalance_before[size_t(l)], p.imbalance_after[size_t(l)]);
    for (int g = 0; g < p.num_gpus; ++g) {
      out += fmt::format("  gpu {} (node {}): load {:.6g}, experts", g, g / gpus_per_node,
                         p.load_of_gpu(l, g));
      for (int s = g * p.slots_per_gpu(); s < (g + 1) * p.slots_per_gpu(); ++s)
        out += fmt::format(" {}", p.phy_to_log(l, s));
      out += '\n';
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_eplb_command(CLI::App& app, EplbArgs& a) {
  CLI::App* c = app.add_subcommand(
      "eplb", "Plan expert replication and placement on GPUs from expert loads (EPLB)");
  c->add_option("--load,-l", a.load,
                "Expert loads, layers x experts: JSON ([[...], ...]) or CSV (one layer a line)")
      ->required();
  c->add_option_function<int>(
      "--replicas", [&a](const int& n) { a.replicas = n; },
      "Expert slots per layer, a multiple of --gpus (default: one per expert, no copies)");
  c->add_option("--groups", a.groups, "Expert groups (consecutive experts) per layer");
  c->add_option("--nodes", a.nodes, "Nodes; the GPUs are split evenly among them");
  c->add_option("--gpus", a.gpus, "GPUs in all");
  c->add_option("--policy", a.policy,
                "auto (hierarchical when --groups is a multiple of --nodes, else global), "
                "hierarchical or global")
      ->check(CLI::IsMember({"auto", "hierarchical", "global"}));
  c->add_flag("--spread", a.spread, "Keep copies of one expert on different GPUs where possible");
  c->add_flag("--json", a.json,
              "Print one JSON object: phy2log, log2phy, logcnt, gpu_load, imbalance");
}

int run_eplb(const EplbArgs& a) {
  const plan::LoadMatrix loads = read_loads(a.load);
  const plan::EplbPlan p = plan::rebalance_experts(
      loads, a.replicas ? *a.replicas : loads.num_experts, a.groups, a.nodes, a.gpus,
      {.policy = parse_policy(a.policy), .spread_replicas = a.spread});
  if (a.json)
    print_json(p);
  else
    print_text(p, a.groups);
  return 0;
}

}  // namespace ff::cli
