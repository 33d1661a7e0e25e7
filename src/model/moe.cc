// Feed-forward layers: dense SwiGLU MLP, and DeepSeek MoE (router + routed experts + shared
// experts).
//
// Routing, as transformers' DeepSeek-V3 / V2 routers compute it (router logits in fp32):
//   noaux_tc (V3): s = sigmoid(logits); choice = s + e_score_correction_bias; groups ranked by the
//     sum of their top-2 choice scores; experts outside the best topk_group groups are excluded;
//     top-k by choice; weights = s[idx] (unbiased), / (sum + 1e-20) if norm_topk_prob.
//   greedy (V2): s = softmax(logits); top-k of s.
//   group_limited_greedy (V2): groups ranked by their max s; top-k within the best topk_group.
//   Then weights *= routed_scaling_factor. (transformers' V2 router never renormalizes, whatever
//   norm_topk_prob says; the V3 router renormalizes when it is set. We follow each.)
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/thread_pool.h"
#include "model/expert_parallel.h"
#include "model/model.h"
#include "model/workspace.h"

namespace ff {

namespace {
inline float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

// g = silu(g) * u over n elements, split across the pool (each element computed alone, so the
// result does not depend on the split).
void swiglu(float* g, const float* u, int64_t n) {
  parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) g[i] = silu(g[i]) * u[i];
      },
      4096);
}

// Indices of the k largest values (ties: lower index first), unordered beyond that.
void top_k(const float* v, int n, int k, int* out) {
  int idx[1024];
  std::vector<int> big;
  int* ids = idx;
  if (n > 1024) {
    big.resize(size_t(n));
    ids = big.data();
  }
  std::iota(ids, ids + n, 0);
  std::partial_sort(ids, ids + k, ids + n,
                    [&](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(ids, ids + k, out);
}
}  // namespace

// Dense SwiGLU MLP; gate and up run as one linear_batch.
void Model::mlp(const MlpWeights& w, const float* x, int64_t T, float* out) {
  profile::Scope prof("mlp");
  Workspace& ws = *ws_;
  const int64_t inter = w.gate.n, hid = w.down.n;
  float* g = Workspace::get(ws.ge, size_t(T * inter));
  float* u = Workspace::get(ws.ue, size_t(T * inter));
  const gemm::LinearProblem gate_up[2] = {{x, T, w.gate.k, &w.gate, g, inter},
                                          {x, T, w.up.k, &w.up, u, inter}};
  gemm::linear_batch(gate_up);
  swiglu(g, u, T * inter);
  gemm::linear(g, T, inter, w.down, out, hid);
}

void Model::route(const MoeWeights& w, const float* logits, int32_t* idx, float* weight) const {
  const ModelConfig& c = config_;
  const int E = c.n_routed_experts, K = c.num_experts_per_tok;
  float scores[1024], choice[1024];
  FF_CHECK(E <= 1024, "n_routed_experts {} > 1024 is not supported", E);
  if (c.scoring == Scoring::Sigmoid) {
    for (int e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    float mx = *std::max_element(logits, logits + E);
    double sum = 0;
    for (int e = 0; e < E; ++e) sum += (scores[e] = std::exp(logits[e] - mx));
    for (int e = 0; e < E; ++e) scores[e] = float(scores[e] / sum);
  }
  int sel[1024];
  if (c.topk_method == TopkMethod::Greedy) {
    top_k(scores, E, K, sel);
  } else {
    const int G = c.n_group, per = E / G;
    const bool noaux = c.topk_method == TopkMethod::NoauxTc;
    for (int e = 0; e < E; ++e) choice[e] = noaux ? scores[e] + w.score_bias[size_t(e)] : scores[e];
    float group_score[1024];
    for (int g = 0; g < G; ++g) {
      const float* p = choice + g * per;
      if (noaux) {
        int two[2];
        top_k(p, per, 2, two);
        group_score[g] = p[two[0]] + p[two[1]];
      } else {
        group_score[g] = *std::max_element(p, p + per);
      }
    }
    int keep[1024];
    top_k(group_score, G, c.topk_group, keep);
    bool kept[1024] = {};
    for (int i = 0; i < c.topk_group; ++i) kept[keep[i]] = true;
    // Excluded experts: -inf for noaux_tc, 0 for group_limited_greedy (as the reference).
    const float masked = noaux ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int e = 0; e < E; ++e)
      if (!kept[e / per]) choice[e] = masked;
    top_k(choice, E, K, sel);
  }
  float sum = 0;
  for (int i = 0; i < K; ++i) {
    idx[i] = sel[i];
    weight[i] = scores[sel[i]];
    sum += weight[i];
  }
  const bool normalize = c.norm_topk_prob && c.model_type == "deepseek_v3";
  for (int i = 0; i < K; ++i) {
    if (normalize) weight[i] /= (sum + 1e-20f);
    weight[i] *= float(c.routed_scaling_factor);
  }
}

// Routed experts in DeepGEMM's contiguous layout: the T * K (token, expert) picks sorted by
// expert (token order within one), their hidden rows gathered into xe. Every expert's gate and
// up products, and the shared experts', run as one gemm::linear_batch, SwiGLU, then all down
// products as a second: two passes over the thread pool per layer instead of three per expert,
// each thread streaming a long run of expert weights (FP8 experts stay FP8, 1 byte a weight).
// The products, the SwiGLU and the order of the weighted sum are those of running each expert
// alone, so the result is bitwise the same.
void Model::moe(const MoeWeights& w, const float* x, int64_t T, float* out) {
  const ModelConfig& c = config_;
  Workspace& ws = *ws_;
  const int64_t hid = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  profile::Scope prof_route("moe.route");
  float* logits = Workspace::get(ws.router_logits, size_t(T * E));
  gemm::linear(x, T, hid, w.router, logits, E);
  ws.route_idx.resize(size_t(T * K));
  float* rw = Workspace::get(ws.route_w, size_t(T * K));
  for (int64_t t = 0; t < T; ++t) route(w, logits + t * E, ws.route_idx.data() + t * K, rw + t * K);

  // Counting sort of the picks by expert.
  ws.expert_begin.assign(size_t(E + 1), 0);
  for (int64_t i = 0; i < T * K; ++i) ++ws.expert_begin[size_t(ws.route_idx[size_t(i)]) + 1];
  for (int64_t e = 0; e < E; ++e) ws.expert_begin[size_t(e + 1)] += ws.expert_begin[size_t(e)];
  ws.expert_rows.resize(size_t(T * K));
  ws.expert_w.resize(size_t(T * K));
  {
    std::vector<int64_t>& fill = ws.moe_fill;
    fill.assign(ws.expert_begin.begin(), ws.expert_begin.end() - 1);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t slot = fill[size_t(ws.route_idx[size_t(t * K + k)])]++;
        ws.expert_rows[size_t(slot)] = t;
        ws.expert_w[size_t(slot)] = rw[t * K + k];
      }
  }
  const int64_t inter = c.moe_intermediate_size, S = T * K;
  float* xe = Workspace::get(ws.xe, size_t(S * hid));
  float* ge = Workspace::get(ws.ge, size_t(S * inter));
  float* ue = Workspace::get(ws.ue, size_t(S * inter));
  float* de = Workspace::get(ws.de, size_t(S * hid));
  // The picks' rows of X in expert order (S * hid floats: 3.6 MB for 55 tokens of top-8 at
  // hidden 2048), copied across the pool in chunks of at least 64 KiB (a single token's picks
  // stay on this thread).
  const auto gather = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(xe + i * hid, x + ws.expert_rows[size_t(i)] * hid, size_t(hid) * 4);
  };
  parallel_for(S, gather, std::max<int64_t>(1, (int64_t(64) << 10) / 4 / hid));
  const int64_t sinter = w.has_shared ? w.shared.gate.n : 0;
  float* sg = w.has_shared ? Workspace::get(ws.sg, size_t(T * sinter)) : nullptr;
  float* su = w.has_shared ? Workspace::get(ws.su, size_t(T * sinter)) : nullptr;
  float* sd = w.has_shared ? Workspace::get(ws.sd, size_t(T * hid)) : nullptr;

  prof_route.stop();
  profile::Scope prof_gate_up("moe.gate_up");
  std::vector<gemm::LinearProblem>& ps = ws.moe_problems;
  ps.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = ws.expert_begin[size_t(e)], m = ws.expert_begin[size_t(e + 1)] - b;
    if (m == 0) continue;
    const MlpWeights& ew = w.experts[size_t(e)];
    ps.push_back({xe + b * hid, m, hid, &ew.gate, ge + b * inter, inter});
    ps.push_back({xe + b * hid, m, hid, &ew.up, ue + b * inter, inter});
  }
  if (w.has_shared) {
    ps.push_back({x, T, hid, &w.shared.gate, sg, sinter});
    ps.push_back({x, T, hid, &w.shared.up, su, sinter});
  }
  gemm::linear_batch(ps);
  swiglu(ge, ue, S * inter);
  if (w.has_shared) swiglu(sg, su, T * sinter);
  prof_gate_up.stop();

  profile::Scope prof_down("moe.down");
  ps.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = ws.expert_begin[size_t(e)], m = ws.expert_begin[size_t(e + 1)] - b;
    if (m > 0)
      ps.push_back({ge + b * inter, m, inter, &w.experts[size_t(e)].down, de + b * hid, hid});
  }
  if (w.has_shared) ps.push_back({sg, T, sinter, &w.shared.down, sd, hid});
  gemm::linear_batch(ps);

  // Each token's weighted sum over its picks in slot order (as the experts ran), then the
  // shared experts' output; tokens split across the pool.
  std::vector<int64_t>& slots = ws.token_slots;
  slots.resize(size_t(S));
  {
    std::vector<int64_t>& fill = ws.moe_fill;
    fill.assign(size_t(T), 0);
    for (int64_t i = 0; i < S; ++i) {
      const int64_t t = ws.expert_rows[size_t(i)];
      slots[size_t(t * K + fill[size_t(t)]++)] = i;
    }
  }
  parallel_for(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * hid;
      std::fill(o, o + hid, 0.0f);
      for (int64_t p = 0; p < K; ++p) {
        const int64_t i = slots[size_t(t * K + p)];
        const float wt = ws.expert_w[size_t(i)];
        for (int64_t j = 0; j < hid; ++j) o[j] += wt * de[i * hid + j];
      }
      if (w.has_shared)
        for (int64_t j = 0; j < hid; ++j) o[j] += sd[t * hid + j];
    }
  });
}

// Expert-parallel MoE (model/expert_parallel.h): the leader routes its tokens, each pick goes to
// the rank of a slot holding its expert (ep dispatch, fp32 rows), every rank runs its slots'
// experts on the rows it received as moe() does (picks sorted by slot, token order within one,
// one linear_batch for gate / up and one for down), weights each received row's picks and sums
// them in slot order, and combine_f32 brings the sums back to the leader, which adds them over
// the ranks in rank order, then the shared experts' output.
void Model::moe_ep(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                   int64_t step_tokens, float* out) {
  if (step_tokens <= ep_->low_latency_tokens()) {
    moe_ep_low_latency(moe_layer, w, x, T, out);
    return;
  }
  const int64_t chunk = ep_->max_tokens(), hid = config_.hidden_size;
  const int64_t chunks = std::max<int64_t>(1, (step_tokens + chunk - 1) / chunk);
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t t0 = std::min(T, i * chunk), t1 = std::min(T, t0 + chunk);
    moe_ep_chunk(moe_layer, w, x ? x + t0 * hid : nullptr, t1 - t0, out ? out + t0 * hid : nullptr);
  }
}

void Model::moe_ep_chunk(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                         float* out) {
  const ModelConfig& c = config_;
  Workspace& ws = *ws_;
  ExpertParallel& ep = *ep_;
  const int64_t hid = c.hidden_size, K = c.num_experts_per_tok;
  const int R = ep.num_ranks(), slots = ep.num_slots(), local = slots / R;
  std::vector<int64_t> slot_idx;
  float* rw = Workspace::get(ws.route_w, size_t(std::max<int64_t>(T * K, 1)));
  ep_route(moe_layer, w, x, T, slot_idx, rw);
  profile::Scope prof_dispatch("moe.dispatch");
  ep::DispatchArgs a;
  a.x = {x, false, nullptr, T, hid, true};
  a.topk_idx = slot_idx.data();
  a.topk_weights = rw;
  a.num_topk = int(K);
  a.num_experts = slots;
  const ep::DispatchResult d = ep.buffer().dispatch(a);
  ep.count_rows(d.num_recv);
  prof_dispatch.stop();
  // This rank's picks, sorted by local slot (received-row order within one).
  const int64_t M = d.num_recv;
  ws.expert_begin.assign(size_t(local + 1), 0);
  for (int64_t i = 0; i < M * K; ++i)
    if (d.recv_topk_idx[size_t(i)] >= 0) ++ws.expert_begin[size_t(d.recv_topk_idx[size_t(i)]) + 1];
  for (int s = 0; s < local; ++s) ws.expert_begin[size_t(s + 1)] += ws.expert_begin[size_t(s)];
  const int64_t S = ws.expert_begin[size_t(local)];
  ws.expert_rows.resize(size_t(S));
  ws.expert_w.resize(size_t(S));
  {
    std::vector<int64_t>& fill = ws.moe_fill;
    fill.assign(ws.expert_begin.begin(), ws.expert_begin.end() - 1);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = d.recv_topk_idx[size_t(i * K + k)];
        if (s < 0) continue;
        const int64_t p = fill[size_t(s)]++;
        ws.expert_rows[size_t(p)] = i;
        ws.expert_w[size_t(p)] = d.recv_topk_weights[size_t(i * K + k)];
      }
  }
  const int64_t inter = c.moe_intermediate_size;
  float* xe = Workspace::get(ws.xe, size_t(S * hid));
  float* ge = Workspace::get(ws.ge, size_t(S * inter));
  float* ue = Workspace::get(ws.ue, size_t(S * inter));
  float* de = Workspace::get(ws.de, size_t(S * hid));
  const float* rows = d.recv_x_f32;
  parallel_for(
      S,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          std::memcpy(xe + i * hid, rows + ws.expert_rows[size_t(i)] * hid, size_t(hid) * 4);
      },
      std::max<int64_t>(1, (int64_t(64) << 10) / 4 / hid));
  profile::Scope prof_experts("moe.experts");
  std::vector<gemm::LinearProblem>& ps = ws.moe_problems;
  ps.clear();
  for (int s = 0; s < local; ++s) {
    const int64_t b = ws.expert_begin[size_t(s)], m = ws.expert_begin[size_t(s + 1)] - b;
    if (m == 0) continue;
    const MlpWeights& ew = w.experts[size_t(ep.slot_expert(moe_layer, ep.rank() * local + s))];
    ps.push_back({xe + b * hid, m, hid, &ew.gate, ge + b * inter, inter});
    ps.push_back({xe + b * hid, m, hid, &ew.up, ue + b * inter, inter});
  }
  gemm::linear_batch(ps);
  swiglu(ge, ue, S * inter);
  ps.clear();
  for (int s = 0; s < local; ++s) {
    const int64_t b = ws.expert_begin[size_t(s)], m = ws.expert_begin[size_t(s + 1)] - b;
    if (m > 0)
      ps.push_back({ge + b * inter, m, inter,
                    &w.experts[size_t(ep.slot_expert(moe_layer, ep.rank() * local + s))].down,
                    de + b * hid, hid});
  }
  gemm::linear_batch(ps);
  // Each received row's weighted sum over its picks here, in slot order.
  std::vector<int64_t>& row_picks = ws.token_slots;  // row i's picks: [i * K, i * K + n_i)
  row_picks.assign(size_t(M * K), -1);
  {
    std::vector<int64_t>& fill = ws.moe_fill;
    fill.assign(size_t(M), 0);
    for (int64_t p = 0; p < S; ++p) {
      const int64_t i = ws.expert_rows[size_t(p)];
      row_picks[size_t(i * K + fill[size_t(i)]++)] = p;
    }
  }
  float* y = Workspace::get(ws.sd, size_t(std::max<int64_t>(M, 1) * hid));
  parallel_for(M, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* o = y + i * hid;
      std::fill(o, o + hid, 0.0f);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t p = row_picks[size_t(i * K + k)];
        if (p < 0) break;
        const float wt = ws.expert_w[size_t(p)];
        for (int64_t j = 0; j < hid; ++j) o[j] += wt * de[p * hid + j];
      }
    }
  });
  prof_experts.stop();
  profile::Scope prof_combine("moe.combine");
  ep.buffer().combine_f32(y, d.handle, out);
  prof_combine.stop();
  ep_shared(w, x, T, out);
}

void Model::ep_route(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                     std::vector<int64_t>& slot_idx, float* rw) {
  const ModelConfig& c = config_;
  Workspace& ws = *ws_;
  const int64_t hid = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  profile::Scope prof_route("moe.route");
  slot_idx.assign(size_t(T * K), -1);
  if (T == 0) return;
  float* logits = Workspace::get(ws.router_logits, size_t(T * E));
  gemm::linear(x, T, hid, w.router, logits, E);
  ws.route_idx.resize(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    route(w, logits + t * E, ws.route_idx.data() + t * K, rw + t * K);
    for (int64_t k = 0; k < K; ++k)
      slot_idx[size_t(t * K + k)] = ep_->slot_for(moe_layer, ws.route_idx[size_t(t * K + k)], t);
  }
}

void Model::ep_shared(const MoeWeights& w, const float* x, int64_t T, float* out) {
  if (!w.has_shared || T == 0) return;
  Workspace& ws = *ws_;
  const int64_t hid = config_.hidden_size;
  profile::Scope prof_shared("moe.shared");
  const int64_t sinter = w.shared.gate.n;
  float* sg = Workspace::get(ws.sg, size_t(T * sinter));
  float* su = Workspace::get(ws.su, size_t(T * sinter));
  float* sd = Workspace::get(ws.xe, size_t(T * hid));
  const gemm::LinearProblem gate_up[2] = {{x, T, hid, &w.shared.gate, sg, sinter},
                                          {x, T, hid, &w.shared.up, su, sinter}};
  gemm::linear_batch(gate_up);
  swiglu(sg, su, T * sinter);
  gemm::linear(sg, T, sinter, w.shared.down, sd, hid);
  for (int64_t i = 0; i < T * hid; ++i) out[i] += sd[i];
}

// Decode-sized passes: the low-latency pair. The rows arrive grouped by local slot (the masked
// layout), so each slot's expert runs on its rows where they lie; the weighting and the sum over
// a token's picks (k order) happen back at the leader, in low_latency_combine_f32.
void Model::moe_ep_low_latency(int moe_layer, const MoeWeights& w, const float* x, int64_t T,
                               float* out) {
  const ModelConfig& c = config_;
  Workspace& ws = *ws_;
  ExpertParallel& ep = *ep_;
  const int64_t hid = c.hidden_size, K = c.num_experts_per_tok;
  const int R = ep.num_ranks(), local = ep.num_slots() / R;
  const int64_t Tmax = ep.low_latency_tokens(), rows = int64_t(R) * Tmax;
  std::vector<int64_t> slot_idx;
  float* rw = Workspace::get(ws.route_w, size_t(std::max<int64_t>(T * K, 1)));
  ep_route(moe_layer, w, x, T, slot_idx, rw);
  profile::Scope prof_dispatch("moe.dispatch");
  ep::LowLatencyDispatchArgs a;
  a.f32 = true;
  a.x_f32 = x;
  a.use_fp8 = false;
  a.num_tokens = T;
  a.hidden = hid;
  a.topk_idx = slot_idx.data();
  a.num_topk = int(K);
  a.max_tokens_per_rank = Tmax;
  a.num_experts = ep.num_slots();
  const ep::LowLatencyDispatchResult d = ep.low_latency_buffer().low_latency_dispatch(a);
  prof_dispatch.stop();
  profile::Scope prof_experts("moe.experts");
  const int64_t inter = c.moe_intermediate_size;
  float* ge = Workspace::get(ws.ge, size_t(local * rows * inter));
  float* ue = Workspace::get(ws.ue, size_t(local * rows * inter));
  float* de = Workspace::get(ws.de, size_t(local * rows * hid));
  std::vector<gemm::LinearProblem>& ps = ws.moe_problems;
  ps.clear();
  int64_t served = 0;
  for (int s = 0; s < local; ++s) {
    const int64_t m = d.recv_count[size_t(s)];
    served += m;
    if (m == 0) continue;
    const MlpWeights& ew = w.experts[size_t(ep.slot_expert(moe_layer, ep.rank() * local + s))];
    const float* xs = d.recv_x_f32 + s * rows * hid;
    ps.push_back({xs, m, hid, &ew.gate, ge + s * rows * inter, inter});
    ps.push_back({xs, m, hid, &ew.up, ue + s * rows * inter, inter});
  }
  ep.count_rows(served);
  gemm::linear_batch(ps);
  for (int s = 0; s < local; ++s)
    swiglu(ge + s * rows * inter, ue + s * rows * inter, d.recv_count[size_t(s)] * inter);
  ps.clear();
  for (int s = 0; s < local; ++s) {
    const int64_t m = d.recv_count[size_t(s)];
    if (m > 0)
      ps.push_back({ge + s * rows * inter, m, inter,
                    &w.experts[size_t(ep.slot_expert(moe_layer, ep.rank() * local + s))].down,
                    de + s * rows * hid, hid});
  }
  gemm::linear_batch(ps);
  prof_experts.stop();
  profile::Scope prof_combine("moe.combine");
  ep.low_latency_buffer().low_latency_combine_f32(de, slot_idx.data(), rw, d.handle, out);
  prof_combine.stop();
  ep_shared(w, x, T, out);
}

}  // namespace ff
