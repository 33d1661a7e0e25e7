// The model's MoE layers expert-parallel under mpirun (CMakeLists.txt, EpMpi.model_*): rank 0
// runs a prompt and greedy decode steps on the model with its experts spread over the ranks, and
// on a second, single-process copy of the model; the logits must agree within the engine's
// tolerance (max error 1e-5 of the row's scale: only the order of the sums over ranks differs)
// and the greedy tokens must be the same. Rank 0 prints "ep model ok: ..." when they do.
//   ep_model MODEL_DIR [--prompt N] [--steps N] [--max-tokens N] [--placement replicate]
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/core.h"
#include "model/expert_parallel.h"
#include "model/model.h"
#include "plan/plan.h"

namespace {

double max_rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

int32_t argmax(const float* x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

// EPLB's plan for made-up loads (expert 0 and 1 hot) with one extra slot per rank.
std::vector<std::vector<int32_t>> replicated_placement(const ff::ModelConfig& c, int ranks) {
  int moe_layers = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.is_moe_layer(l) ? 1 : 0;
  std::vector<std::vector<double>> loads(size_t(moe_layers),
                                         std::vector<double>(size_t(c.n_routed_experts), 1.0));
  for (auto& row : loads) {
    row[0] = 10;
    row[1] = 6;
  }
  const ff::plan::EplbPlan p = ff::plan::rebalance_experts(ff::plan::LoadMatrix::from_rows(loads),
                                                           c.n_routed_experts + ranks, 1, 1, ranks);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(moe_layers));
  for (int m = 0; m < moe_layers; ++m)
    for (int s = 0; s < p.num_replicas; ++s) out[size_t(m)].push_back(p.phy_to_log(m, s));
  return out;
}

int run(int argc, char** argv, int ranks) {
  std::string dir, placement;
  int prompt_len = 21, steps = 6;
  int64_t max_tokens = 4096;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--prompt" && i + 1 < argc)
      prompt_len = std::stoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc)
      steps = std::stoi(argv[++i]);
    else if (a == "--max-tokens" && i + 1 < argc)
      max_tokens = std::stoll(argv[++i]);
    else if (a == "--placement" && i + 1 < argc)
      placement = argv[++i];
    else
      dir = a;
  }
  const ff::ModelConfig c = ff::Model::load_config(dir);
  ff::ExpertParallel ep(c,
                        placement == "replicate" ? replicated_placement(c, ranks)
                                                 : std::vector<std::vector<int32_t>>{},
                        max_tokens);
  // Each rank binds only the experts it holds.
  auto model = ff::Model::load(dir, ff::Quantize::None,
                               [&](int layer, int expert) { return ep.holds(layer, expert); });
  model->set_expert_parallel(&ep);
  int held = 0, total = 0;
  for (const auto& L : model->weights().layers)
    for (const auto& e : L.moe.experts) {
      ++total;
      held += e.gate.data != nullptr ? 1 : 0;
    }
  FF_CHECK(ranks == 1 || held < total, "every rank bound all {} experts", total);
  // Every rank's experts must have served rows (else the comparison proves nothing).
  const auto check_served = [&] {
    const int64_t mine = ep.rows_served();
    std::vector<int64_t> all(static_cast<size_t>(ranks));
    MPI_Gather(&mine, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (ep.leader())
      for (int r = 0; r < ranks; ++r)
        FF_CHECK(all[size_t(r)] > 0, "rank {}'s experts received no rows", r);
  };
  if (!ep.leader()) {
    model->follow();
    check_served();
    return 0;
  }
  auto single = ff::Model::load(dir);
  const int V = c.vocab_size;
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (int i = 0; i < prompt_len; ++i) prompt[size_t(i)] = int32_t((i * 7919 + 13) % V);
  ff::KVCache cache_ep(c, 8, ff::DType::F32), cache_one(c, 8, ff::DType::F32);
  ff::KVSequence seq_ep, seq_one;
  std::vector<float> logits_ep, logits_one;
  double worst = 0;
  int32_t next = 0;
  for (int s = 0; s <= steps; ++s) {
    const std::span<const int32_t> tokens =
        s == 0 ? std::span<const int32_t>(prompt) : std::span<const int32_t>(&next, 1);
    ff::Model::Request re{&seq_ep, tokens, false}, r1{&seq_one, tokens, false};
    model->forward({&re, 1}, cache_ep, &logits_ep);
    single->forward({&r1, 1}, cache_one, &logits_one);
    const double err = max_rel_err(logits_ep.data(), logits_one.data(), size_t(V));
    worst = std::max(worst, err);
    FF_CHECK(err <= 1e-5, "step {}: logits differ from one process by {:.3g} of their scale", s,
             err);
    const int32_t a = argmax(logits_ep.data(), size_t(V)), b = argmax(logits_one.data(), size_t(V));
    FF_CHECK(a == b, "step {}: greedy token {} with experts on {} ranks, {} in one process", s, a,
             ranks, b);
    next = a;
  }
  ep.finish();
  check_served();
  std::printf("ep model ok: %d steps on %d ranks (%d slots), max logit error %.3g of scale\n",
              steps, ranks, ep.num_slots(), worst);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  int rc = 0;
  try {
    rc = run(argc, argv, ranks);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
}
