// ExpertParallel: the placement of the routed experts on the ranks, and the leader's step
// announcements (a broadcast on a communicator of their own).
#include "model/expert_parallel.h"

#include <algorithm>

#include "core/core.h"

namespace ff {

ExpertParallel::ExpertParallel(const ModelConfig& c, std::vector<std::vector<int32_t>> placement,
                               int64_t max_tokens, int64_t low_latency_tokens)
    : max_tokens_(max_tokens),
      low_latency_tokens_(std::min(low_latency_tokens, max_tokens)),
      phy2log_(std::move(placement)) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  FF_CHECK(initialized, "expert parallelism: MPI is not initialized");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
  experts_ = c.n_routed_experts;
  FF_CHECK(experts_ > 0, "expert parallelism: the model has no routed experts");
  FF_CHECK(max_tokens > 0, "expert parallelism: max tokens per step {} must be positive",
           max_tokens);
  int moe_layers = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    moe_index_.push_back(c.is_moe_layer(l) ? moe_layers++ : -1);
  if (phy2log_.empty()) {
    FF_CHECK(experts_ % ranks_ == 0,
             "expert parallelism: {} routed experts do not split evenly over {} ranks (give a "
             "placement with a multiple of {} slots)",
             experts_, ranks_, ranks_);
    std::vector<int32_t> identity(static_cast<size_t>(experts_));
    for (int e = 0; e < experts_; ++e) identity[size_t(e)] = e;
    phy2log_.assign(size_t(moe_layers), identity);
  }
  FF_CHECK(int(phy2log_.size()) == moe_layers,
           "expert parallelism: the placement has {} layers, the model {} MoE layers",
           phy2log_.size(), moe_layers);
  slots_ = int(phy2log_[0].size());
  copies_.resize(phy2log_.size());
  for (size_t m = 0; m < phy2log_.size(); ++m) {
    const auto& row = phy2log_[m];
    FF_CHECK(int(row.size()) == slots_,
             "expert parallelism: placement layer {} has {} slots, layer 0 has {}", m, row.size(),
             slots_);
    FF_CHECK(slots_ % ranks_ == 0 && slots_ <= ep::kMaxExperts,
             "expert parallelism: {} slots do not split evenly over {} ranks (at most {})", slots_,
             ranks_, ep::kMaxExperts);
    copies_[m].assign(size_t(experts_), {});
    for (int p = 0; p < slots_; ++p) {
      FF_CHECK(row[size_t(p)] >= 0 && row[size_t(p)] < experts_,
               "expert parallelism: placement layer {} slot {} names expert {}, outside [0, {})", m,
               p, row[size_t(p)], experts_);
      copies_[m][size_t(row[size_t(p)])].push_back(p);
    }
    for (int e = 0; e < experts_; ++e)
      FF_CHECK(!copies_[m][size_t(e)].empty(),
               "expert parallelism: placement layer {} has no slot for expert {}", m, e);
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &control_);
  // Rows are fp32 activations, at most max_tokens per rank per call.
  // The hint does not depend on the node count; the internode staging gets the same bytes.
  const size_t bytes = ep::Buffer::size_hint(max_tokens, c.hidden_size, c.num_experts_per_tok,
                                             ranks_, /*num_nodes=*/1, /*f32=*/true);
  buffer_ = std::make_unique<ep::Buffer>(MPI_COMM_WORLD, bytes, bytes);
  FF_CHECK(low_latency_tokens >= 0, "expert parallelism: low-latency tokens {} is negative",
           low_latency_tokens);
  if (low_latency_tokens_ > 0)
    ll_buffer_ = std::make_unique<ep::Buffer>(
        MPI_COMM_WORLD,
        ep::Buffer::low_latency_size_hint(low_latency_tokens_, c.hidden_size, ranks_, slots_,
                                          /*f32=*/true),
        0, /*low_latency_mode=*/true);
}

ExpertParallel::~ExpertParallel() {
  if (leader() && !finished_) {
    try {
      finish();
    } catch (...) {
    }
  }
  ll_buffer_.reset();
  buffer_.reset();
  if (control_ != MPI_COMM_NULL) MPI_Comm_free(&control_);
}

int ExpertParallel::slot_expert(int moe_layer, int slot) const {
  return phy2log_[size_t(moe_layer)][size_t(slot)];
}

int ExpertParallel::slot_for(int moe_layer, int expert, int64_t t) const {
  const auto& c = copies_[size_t(moe_layer)][size_t(expert)];
  return c[size_t(t % int64_t(c.size()))];
}

bool ExpertParallel::holds(int layer, int expert) const {
  if (layer < 0 || layer >= int(moe_index_.size()) || moe_index_[size_t(layer)] < 0) return true;
  const int per_rank = slots_ / ranks_;
  for (const int slot : copies_[size_t(moe_index_[size_t(layer)])][size_t(expert)])
    if (slot / per_rank == rank_) return true;
  return false;
}

void ExpertParallel::announce(int64_t tokens) {
  FF_INVARIANT(leader() && !finished_, "ExpertParallel::announce on a follower or after finish");
  MPI_Bcast(&tokens, 1, MPI_INT64_T, 0, control_);
}

void ExpertParallel::finish() {
  if (finished_ || !leader()) return;
  finished_ = true;
  int64_t end = -1;
  MPI_Bcast(&end, 1, MPI_INT64_T, 0, control_);
}

int64_t ExpertParallel::next_step() {
  FF_INVARIANT(!leader(), "ExpertParallel::next_step on the leader");
  int64_t tokens = -1;
  MPI_Bcast(&tokens, 1, MPI_INT64_T, 0, control_);
  return tokens;
}

}  // namespace ff
