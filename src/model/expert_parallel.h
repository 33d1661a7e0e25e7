// The model's MoE layers across the ranks of an MPI job (docs/ep.md, "The model across ranks"):
// every rank loads the model, holds the routed experts its placement gives it, and the leader
// (rank 0) runs the requests. At each MoE layer the tokens travel to their experts' ranks with
// ep::Buffer::dispatch (fp32 rows, not rounded) and come back with combine_f32 (decode-sized
// passes: the low-latency pair, also fp32); the attention,
// the dense layers and the shared experts run on the leader alone. The other ranks follow the
// leader's forward passes (Model::follow), which the leader announces step by step.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ep/ep.h"
#include "model/config.h"

namespace ff {

class ExpertParallel {
 public:
  // Collective over MPI_COMM_WORLD. placement: per MoE layer (in layer order), the logical
  // expert of each physical slot (EPLB's phy2log; slots split evenly over the ranks, slot p on
  // rank p / (slots / ranks)); empty: each rank holds n_routed_experts / ranks consecutive
  // experts. max_tokens: tokens a layer moves at once (longer steps go in chunks).
  // low_latency_tokens: passes of at most this many tokens (decode steps) use the low-latency
  // mode (fixed slots, no count exchange; 0: never).
  ExpertParallel(const ModelConfig& config, std::vector<std::vector<int32_t>> placement = {},
                 int64_t max_tokens = 4096, int64_t low_latency_tokens = 64);
  ~ExpertParallel();
  ExpertParallel(const ExpertParallel&) = delete;
  ExpertParallel& operator=(const ExpertParallel&) = delete;

  int rank() const { return rank_; }
  int num_ranks() const { return ranks_; }
  bool leader() const { return rank_ == 0; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t low_latency_tokens() const { return low_latency_tokens_; }
  ep::Buffer& buffer() { return *buffer_; }
  ep::Buffer& low_latency_buffer() { return *ll_buffer_; }

  // Slots per MoE layer; the logical expert of slot p of MoE layer m; the slot serving the
  // (t % copies)-th copy of logical expert e.
  int num_slots() const { return slots_; }
  int slot_expert(int moe_layer, int slot) const;
  int slot_for(int moe_layer, int expert, int64_t t) const;
  // Whether this rank holds a copy of routed expert `expert` of (decoder) layer `layer`: the
  // filter for Model::load, so that a rank binds, faults in and quantizes its experts only.
  bool holds(int layer, int expert) const;

  // Leader: announces a forward pass of `tokens` tokens (before its first MoE layer), or the end
  // (finish). Followers: waits for the next announcement; -1 at the end.
  void announce(int64_t tokens);
  void finish();
  int64_t next_step();

  // Rows this rank's experts have taken in (dispatch), over all steps so far.
  int64_t rows_served() const { return rows_served_; }
  void count_rows(int64_t rows) { rows_served_ += rows; }

 private:
  int64_t rows_served_ = 0;
  int rank_ = 0, ranks_ = 1, slots_ = 0, experts_ = 0;
  int64_t max_tokens_ = 0, low_latency_tokens_ = 0;
  bool finished_ = false;
  MPI_Comm control_ = MPI_COMM_NULL;
  std::unique_ptr<ep::Buffer> buffer_, ll_buffer_;
  std::vector<std::vector<int32_t>> phy2log_;  // [moe layer][slot]
  std::vector<int> moe_index_;                 // [layer]: its index among the MoE layers, or -1
  std::vector<std::vector<std::vector<int32_t>>> copies_;  // [moe layer][expert] -> slots
};

}  // namespace ff
