// --ep for generate and serve: the model's routed experts spread over the ranks of an MPI job
// (model/expert_parallel.h). Rank 0 does what the command does alone; the other ranks serve its
// MoE layers and print nothing.
#include <mpi.h>
#include <signal.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/core.h"
#include "model/expert_parallel.h"
#include "model/model.h"

namespace ff::cli {

void add_ep_options(CLI::App* cmd, EpArgs& a) {
  cmd->add_flag("--ep", a.enabled,
                "Expert parallelism: run under mpirun; each rank holds its share of the routed "
                "experts, rank 0 does the rest (docs/ep.md)");
  cmd->add_option("--ep-placement", a.placement,
                  "With --ep: the experts' placement, a JSON file with phy2log per MoE layer "
                  "(as `fireflyer eplb --json` prints; replicas allowed); default: contiguous")
      ->check(CLI::ExistingFile);
  cmd->add_option("--ep-max-tokens", a.max_tokens,
                  "With --ep: tokens a MoE layer moves at once (longer steps go in chunks)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

namespace {

std::vector<std::vector<int32_t>> read_placement(const std::string& path) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  if (doc.is_object()) {
    FF_CHECK(doc.contains("phy2log"),
             "{}: no \"phy2log\" key (expected `fireflyer eplb --json` "
             "output or an array of layers)",
             path);
    doc = doc["phy2log"];
  }
  FF_CHECK(doc.is_array() && !doc.empty(), "{}: phy2log must be a non-empty array of layers", path);
  std::vector<std::vector<int32_t>> out;
  for (size_t l = 0; l < doc.size(); ++l) {
    FF_CHECK(doc[l].is_array(), "{}: phy2log layer {} is not an array", path, l);
    auto& row = out.emplace_back();
    for (size_t p = 0; p < doc[l].size(); ++p) {
      FF_CHECK(doc[l][p].is_number_integer(),
               "{}: phy2log layer {} slot {}: {} is not an expert id", path, l, p,
               doc[l][p].dump());
      row.push_back(doc[l][p].get<int32_t>());
    }
  }
  return out;
}

}  // namespace

EpSession::EpSession(const EpArgs& a, const ModelConfig& config) {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  // A set-up error reaches main, which prints it; MPI ends only at exit, after that line, so
  // mpirun does not stop the other ranks before they have printed theirs.
  std::atexit([] {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  });
  FF_CHECK(provided == MPI_THREAD_MULTIPLE,
           "--ep: this MPI library does not support MPI_THREAD_MULTIPLE");
  ep_ = std::make_unique<ExpertParallel>(
      config,
      a.placement.empty() ? std::vector<std::vector<int32_t>>{} : read_placement(a.placement),
      a.max_tokens);
}

std::function<bool(int, int)> EpSession::experts() const {
  const ExpertParallel* ep = ep_.get();
  return [ep](int layer, int expert) { return ep->holds(layer, expert); };
}

void EpSession::attach(Model& model) {
  model.set_expert_parallel(ep_.get());
}

std::unique_ptr<Model> load_model(const std::string& path, const std::string& quantize,
                                  const EpArgs& ep, std::unique_ptr<EpSession>* session) {
  if (ep.enabled) *session = std::make_unique<EpSession>(ep, Model::load_config(path));
  EpSession* s = session->get();
  auto model =
      Model::load(path, parse_quantize(quantize), s ? s->experts() : Model::ExpertFilter{});
  if (!s) return model;
  s->attach(*model);
  if (s->leader()) return model;
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  model->follow();
  return nullptr;
}

EpSession::~EpSession() {
  ep_.reset();  // the leader announces the end first
  MPI_Finalize();
}

bool EpSession::leader() const {
  return ep_->leader();
}

}  // namespace ff::cli
