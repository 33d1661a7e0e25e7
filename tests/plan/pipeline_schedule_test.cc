// Pipeline schedules and their simulator: structure, the README's bubble and activation figures,
// errors, and the timeline picture.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "plan/plan.h"

namespace ff::plan {
namespace {

const Method kMethods[] = {Method::OneF1B, Method::ZB1P, Method::DualPipe, Method::DualPipeV};

// Durations whose formula terms are all distinct (F, B, W, F&B, and B-W differ from each other
// and from F), so a formula with a wrong coefficient cannot match by accident.
const OpDurations kDistinct[] = {
    {10, 23, 7, 29, 0}, {10, 25, 9, 31, 0}, {7, 20, 3, 22, 0}, {5, 12, 4, 15, 0}};

std::vector<int> chunk_counts(Method m, int pp) {
  // DualPipe needs even counts >= 2*pp; the others take any >= 2*pp here.
  if (m == Method::DualPipe) return {2 * pp, 2 * pp + 2, 3 * pp};
  return {2 * pp, 2 * pp + 1, 3 * pp};
}

int compute_ops(const std::vector<Op>& ops, OpKind k, int zb = -1) {
  int n = 0;
  for (const Op& op : ops) n += op.kind == k && (zb < 0 || op.zb == (zb == 1));
  return n;
}

TEST(PipelineSchedule, EveryGeneratedScheduleIsConsistent) {
  for (Method m : kMethods) {
    for (int pp : {2, 4, 6, 8, 16}) {
      for (int n : chunk_counts(m, pp)) {
        for (bool split : {true, false}) {
          const Schedule s = make_schedule(m, pp, n, {split});
          SCOPED_TRACE(std::string(method_name(m)) + " pp=" + std::to_string(pp) +
                       " chunks=" + std::to_string(n));
          EXPECT_NO_THROW(validate_schedule(s));
        }
      }
    }
  }
}

TEST(PipelineSchedule, PlacementFollowsTheMethod) {
  const Schedule d = make_schedule(Method::DualPipe, 8, 16);
  EXPECT_EQ(d.num_ranks, 8);
  EXPECT_EQ(d.num_dirs, 2);
  EXPECT_EQ(d.rank_of(2, 0), 2);
  EXPECT_EQ(d.rank_of(2, 1), 5);
  const Schedule v = make_schedule(Method::DualPipeV, 8, 8);
  EXPECT_EQ(v.num_ranks, 4);
  EXPECT_EQ(v.rank_of(3, 0), 3);
  EXPECT_EQ(v.rank_of(4, 0), 3);  // the V's turn stays on the last rank
  EXPECT_EQ(v.rank_of(7, 0), 0);
  EXPECT_EQ(make_schedule(Method::ZB1P, 6, 12).num_ranks, 6);
}

// The eight-step table of the reference notes, counted independently of the generator: with
// h = min(r, PP-1-r), P = PP/2 and M = chunks/2, a DualPipe rank runs 2(M-PP+h+1) + (P-h-1)
// overlapped pairs (one fewer on a middle rank, whose first pair is split), and its zero-bubble
// Bs (steps 3, 6 and 7) leave 2(P-h-1) + (h+1) weight passes.
TEST(PipelineSchedule, DualPipeStepCountsMatchTheTable) {
  for (int pp : {2, 4, 6, 8, 16}) {
    for (int n : {2 * pp, 2 * pp + 4}) {
      for (bool split : {true, false}) {
        const Schedule s = make_schedule(Method::DualPipe, pp, n, {split});
        const int P = pp / 2, M = n / 2;
        for (int r = 0; r < pp; ++r) {
          const int h = std::min(r, pp - 1 - r);
          const bool middle = r == P - 1 || r == P;
          const int pairs = 2 * (M - pp + h + 1) + (P - h - 1) - (middle && split ? 1 : 0);
          const std::vector<Op>& ops = s.ops[r];
          EXPECT_EQ(compute_ops(ops, OpKind::ForwardBackward), pairs) << "pp " << pp << " r " << r;
          EXPECT_EQ(compute_ops(ops, OpKind::Weight), 2 * (P - h - 1) + h + 1);
          EXPECT_EQ(compute_ops(ops, OpKind::Forward) + pairs, n);
          EXPECT_EQ(compute_ops(ops, OpKind::Backward) + pairs, n);
          EXPECT_EQ(compute_ops(ops, OpKind::Backward, 1), 2 * (P - h - 1) + h + 1);
        }
      }
    }
  }
}

TEST(PipelineSchedule, FirstOpsOfTheEdgeAndMiddleRanks) {
  // DualPipe PP=8: rank 0 starts with 2(P-1) = 6 forwards of direction 0, a middle rank with none.
  const Schedule s = make_schedule(Method::DualPipe, 8, 20);
  std::vector<int> first_f;
  for (const Op& op : s.ops[0]) {
    if (op.kind == OpKind::Forward && first_f.size() < 7) first_f.push_back(op.a.chunk);
    if (op.kind != OpKind::Forward && op.kind != OpKind::SendForward) break;
  }
  EXPECT_EQ(first_f, (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  // Rank 3's first compute op: its first forward of direction 0 after receiving it from rank 2.
  const Op& recv = s.ops[3][0];
  EXPECT_EQ(recv.kind, OpKind::RecvForward);
  EXPECT_EQ(recv.peer, 2);
}

TEST(PipelineSim, OneF1BBubbleIsTheFormulaOnEveryRank) {
  for (const OpDurations& d : kDistinct) {
    for (Method m : {Method::OneF1B, Method::ZB1P}) {
      for (int pp : {4, 6, 8, 16}) {
        for (int n : chunk_counts(m, pp)) {
          const SimResult r = simulate(make_schedule(m, pp, n), d);
          const double formula = readme_bubble(m, pp, d);
          EXPECT_DOUBLE_EQ(r.max_bubble(), formula) << method_name(m) << " pp " << pp << " n " << n;
          if (m == Method::OneF1B) {
            for (double b : r.bubble) EXPECT_DOUBLE_EQ(b, formula);
          }
          EXPECT_EQ(r.max_peak_activations(), pp);
          EXPECT_EQ(r.peak_activations[0], pp);
        }
      }
    }
  }
}

// The DeepSeek-V3 report's DualPipe (every main-step pair overlapped) has exactly the README's
// bubble on its middle ranks; upstream's code splits the middle ranks' first pair and never does
// worse on any rank -- strictly better with these durations.
TEST(PipelineSim, DualPipeBubbleIsTheFormula) {
  for (const OpDurations& d : kDistinct) {
    for (Method m : {Method::DualPipe, Method::DualPipeV}) {
      for (int pp : {4, 6, 8, 16}) {
        for (int n : chunk_counts(m, pp)) {
          SCOPED_TRACE(std::string(method_name(m)) + " pp=" + std::to_string(pp) +
                       " chunks=" + std::to_string(n));
          const double formula = readme_bubble(m, pp, d);
          const SimResult paper = simulate(make_schedule(m, pp, n, {false}), d);
          EXPECT_DOUBLE_EQ(paper.max_bubble(), formula);
          const SimResult code = simulate(make_schedule(m, pp, n, {true}), d);
          EXPECT_LT(code.max_bubble(), formula);
          for (size_t r = 0; r < code.bubble.size(); ++r) {
            EXPECT_LE(code.bubble[r], paper.bubble[r] + 1e-9);
          }
          EXPECT_EQ(paper.max_peak_activations(), pp + 1);
          EXPECT_EQ(code.max_peak_activations(), pp + 1);
        }
      }
    }
  }
}

TEST(PipelineSim, FigureUnitsGiveTheFormulaForBothVariants) {
  // Upstream's figure: F = 1, B = 2, W = 1, F&B = F + B. There the split saves nothing.
  const OpDurations d{1, 2, 1, 3, 0};
  const SimResult r = simulate(make_schedule(Method::DualPipe, 8, 20), d);
  EXPECT_DOUBLE_EQ(r.max_bubble(), 6);
  EXPECT_DOUBLE_EQ(readme_bubble(Method::DualPipe, 8, d), 6);
  EXPECT_DOUBLE_EQ(r.step_time, 66);
}

TEST(PipelineSim, P2pLatencyLengthensTheStep) {
  // One chunk goes down 4 stages and back: 4F + 4B plus 2(pp-1) transfers.
  const Schedule one = make_schedule(Method::OneF1B, 4, 1);
  EXPECT_DOUBLE_EQ(simulate(one, {1, 2, 1, 3, 0}).step_time, 12);
  EXPECT_DOUBLE_EQ(simulate(one, {1, 2, 1, 3, 0.5}).step_time, 12 + 2 * 3 * 0.5);
  // With more chunks the steady state waits on round trips too, so the step grows by more.
  const Schedule s = make_schedule(Method::OneF1B, 4, 8);
  EXPECT_GT(simulate(s, {1, 2, 1, 3, 0.5}).step_time,
            simulate(s, {1, 2, 1, 3, 0}).step_time + 2 * 3 * 0.5);
}

TEST(PipelineSim, TimelineIsSequentialPerRank) {
  const Schedule s = make_schedule(Method::DualPipeV, 8, 10);
  const SimResult r = simulate(s, kDistinct[0]);
  for (int rank = 0; rank < s.num_ranks; ++rank) {
    double t = 0, busy = 0;
    for (const TimedOp& op : r.timeline[rank]) {
      EXPECT_GE(op.start, t);
      t = op.end;
      busy += op.end - op.start;
    }
    EXPECT_DOUBLE_EQ(busy, r.busy[rank]);
    EXPECT_LE(t, r.step_time);
  }
}

TEST(PipelineSchedule, BadArgumentsAreClearErrors) {
  auto message = [](auto fn) -> std::string {
    try {
      fn();
    } catch (const ff::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(message([] { make_schedule(Method::DualPipe, 5, 20); }),
            "dualpipe: pp must be even (rank r pairs with rank pp-1-r), got 5");
  EXPECT_EQ(message([] { make_schedule(Method::DualPipe, 4, 6); }),
            "dualpipe: chunks must be even and at least 2*pp = 8, got 6");
  EXPECT_EQ(message([] { make_schedule(Method::DualPipe, 4, 9); }),
            "dualpipe: chunks must be even and at least 2*pp = 8, got 9");
  EXPECT_EQ(message([] { make_schedule(Method::DualPipeV, 8, 6); }),
            "dualpipev: chunks must be at least 2 * ranks = pp = 8, got 6");
  EXPECT_EQ(message([] { make_schedule(Method::OneF1B, 1, 6); }),
            "1f1b: pp must be in [2, 1024], got 1");
  EXPECT_EQ(message([] { make_schedule(Method::ZB1P, 4, 0); }),
            "zb1p: chunks must be in [1, 1048576], got 0");
  EXPECT_EQ(message([] { make_schedule(Method::OneF1B, 1024, 2048); }),
            "1f1b: pp x chunks = 1024 x 2048 is more than 1048576 stage-chunk pairs");
  EXPECT_EQ(message([] { parse_method("gpipe"); }),
            "unknown pipeline method 'gpipe' (expected 1f1b, zb1p, dualpipe or dualpipev)");
  EXPECT_EQ(message([] {
              check_durations({1, -2, 1, 3, 0});
            }),
            "duration B must be finite and >= 0, got -2");
  EXPECT_EQ(message([] {
              check_durations({1, 2, 3, 3, 0});
            }),
            "duration W (3) cannot exceed B (2): W is part of a full backward");
}

TEST(PipelineSchedule, ValidationCatchesABrokenSchedule) {
  Schedule s = make_schedule(Method::OneF1B, 4, 8);
  // Drop rank 1's first send: rank 2 would wait for ever.
  auto& ops = s.ops[1];
  for (auto it = ops.begin(); it != ops.end(); ++it) {
    if (it->kind == OpKind::SendForward) {
      ops.erase(it);
      break;
    }
  }
  EXPECT_THROW(validate_schedule(s), ff::InternalError);
  Schedule t = make_schedule(Method::ZB1P, 4, 8);
  for (auto it = t.ops[0].begin(); it != t.ops[0].end(); ++it) {
    if (it->kind == OpKind::Weight) {
      t.ops[0].erase(it);  // a zero-bubble B whose weight grad never runs
      break;
    }
  }
  EXPECT_THROW(validate_schedule(t), ff::InternalError);
}

// A minimal well-formedness check: every element closes, in order.
bool tags_balance(const std::string& xml) {
  std::vector<std::string> stack;
  const std::regex tag(R"(<(/?)([a-zA-Z]+)[^>]*?(/?)>)");
  for (auto it = std::sregex_iterator(xml.begin(), xml.end(), tag); it != std::sregex_iterator();
       ++it) {
    const auto& m = *it;
    if (m[3] == "/") continue;
    if (m[1] == "/") {
      if (stack.empty() || stack.back() != m[2]) return false;
      stack.pop_back();
    } else {
      stack.push_back(m[2]);
    }
  }
  return stack.empty();
}

int occurrences(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(PipelineSvg, DualPipe8x20HasOneRowPerRankAndEveryBlock) {
  const Schedule s = make_schedule(Method::DualPipe, 8, 20);
  const OpDurations d{1, 2, 1, 3, 0};
  const std::string svg = render_svg(s, simulate(s, d), d);
  EXPECT_TRUE(tags_balance(svg));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_EQ(occurrences(svg, "<g class=\"rank\""), 8);
  // Each rank computes 20 F and 20 B; an F&B block merges one of each; W blocks come on top.
  // From the step table: pairs = 2(M-PP+h+1) + (P-h-1) - [middle], W = 2(P-h-1) + h + 1.
  int expected = 0, expected_pairs = 0;
  for (int r = 0; r < 8; ++r) {
    const int h = std::min(r, 7 - r);
    const int pairs = 2 * (10 - 8 + h + 1) + (4 - h - 1) - (r == 3 || r == 4 ? 1 : 0);
    expected += 40 - pairs + 2 * (4 - h - 1) + h + 1;
    expected_pairs += pairs;
  }
  EXPECT_EQ(occurrences(svg, "class=\"op "), expected);
  EXPECT_EQ(occurrences(svg, "class=\"op FB\""), expected_pairs);
}

}  // namespace
}  // namespace ff::plan
