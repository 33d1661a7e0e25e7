// Benchmark of ep dispatch / combine (docs/ep.md), DeepEP's test shapes: 4096 tokens per rank in
// normal mode and 128 in low-latency mode, hidden 7168, top-8 of 256 experts, on 2 and 4 ranks of
// this machine. Run without mpirun, it starts itself under mpirun for each rank count.
//
// Bytes are counted as DeepEP's tests count them: the BF16 bytes of the rows a rank receives
// (FP8: times (1 + 4/128) / 2), over the call's time. In the same run: memcpy of that many bytes
// by every rank at once (the bound: a dispatch must at least move each row once) and a plain
// MPI_Alltoallv of the same bytes (rows packed beforehand, not timed); the low-latency round
// trip (dispatch + combine) against two MPI_Alltoallv of its bytes.
//   BENCH ep <case> ranks=R ... GBps=... memcpy_GBps=... alltoallv_GBps=...
//       baseline=alltoallv ratio=<ours / alltoallv>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/core.h"
#include "ep/ep.h"

namespace {

using ff::bench::now_seconds;

constexpr int64_t kHidden = 7168;
constexpr int kTopk = 8, kExperts = 256;

struct Inputs {
  int64_t n = 0;
  std::vector<uint16_t> x;
  std::vector<uint8_t> x8;
  std::vector<float> scales;
  std::vector<int64_t> idx;
  std::vector<float> w;
};

Inputs make_inputs(int64_t n, int rank) {
  std::mt19937_64 g(uint64_t(rank) * 7919 + 1);
  Inputs in;
  in.n = n;
  in.x.resize(size_t(n * kHidden));
  for (auto& v : in.x) v = ff::f32_to_bf16(float(int(g() % 2001) - 1000) / 1000.f);
  in.x8.resize(size_t(n * kHidden));
  for (auto& v : in.x8) v = uint8_t(g() % 0x7e);
  in.scales.assign(size_t(n * kHidden / 128), 1.f);
  in.idx.resize(size_t(n * kTopk));
  in.w.resize(in.idx.size());
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> chosen;
    while (int(chosen.size()) < kTopk) {
      const int64_t e = int64_t(g() % kExperts);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int k = 0; k < kTopk; ++k) {
      in.idx[size_t(t * kTopk + k)] = chosen[size_t(k)];
      in.w[size_t(t * kTopk + k)] = 1.f / kTopk;
    }
  }
  return in;
}

// Median seconds of fn over reps, every rank starting together; the slowest rank's time.
template <class Fn>
double timed(Fn&& fn, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps + 1; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now_seconds();
    fn();
    double dt = now_seconds() - t0, worst = 0;
    MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i > 0) t.push_back(worst);  // the first run warms up (page faults in the buffers)
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// memcpy of `bytes` by every rank at once.
double memcpy_seconds(size_t bytes, int reps) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  return timed([&] { std::memcpy(b.data(), a.data(), bytes); }, reps);
}

// MPI_Alltoallv with send_bytes[d] to each rank (the receive sizes exchanged first, untimed).
double alltoallv_seconds(const std::vector<int64_t>& send_bytes, int reps) {
  int R = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &R);
  std::vector<int> sc(static_cast<size_t>(R)), rc(static_cast<size_t>(R)),
      sd(static_cast<size_t>(R)), rd(static_cast<size_t>(R));
  for (int d = 0; d < R; ++d) sc[size_t(d)] = int(send_bytes[size_t(d)]);
  MPI_Alltoall(sc.data(), 1, MPI_INT, rc.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int64_t st = 0, rt = 0;
  for (int d = 0; d < R; ++d) {
    sd[size_t(d)] = int(st);
    rd[size_t(d)] = int(rt);
    st += sc[size_t(d)];
    rt += rc[size_t(d)];
  }
  std::vector<char> sb(size_t(st) + 1, 1), rb(size_t(rt) + 1);
  return timed(
      [&] {
        MPI_Alltoallv(sb.data(), sc.data(), sd.data(), MPI_BYTE, rb.data(), rc.data(), rd.data(),
                      MPI_BYTE, MPI_COMM_WORLD);
      },
      reps);
}

void run_normal(int rank, int R, bool quick) {
  const int64_t n = 4096;
  const int reps = quick ? 3 : 10;
  const Inputs in = make_inputs(n, rank);
  ff::ep::Buffer buf(MPI_COMM_WORLD, ff::ep::Buffer::size_hint(n, kHidden, kTopk, R));
  const auto layout = buf.get_dispatch_layout(in.idx.data(), n, kTopk, kExperts);
  ff::ep::DispatchArgs a;
  a.x = {in.x.data(), false, nullptr, n, kHidden};
  a.topk_idx = in.idx.data();
  a.topk_weights = in.w.data();
  a.num_topk = kTopk;
  a.num_experts = kExperts;
  a.layout = &layout;
  ff::ep::DispatchResult d;
  const double t_bf16 = timed([&] { d = buf.dispatch(a); }, reps);
  const std::vector<uint16_t> y(d.recv_x, d.recv_x + d.num_recv * kHidden);
  ff::ep::DispatchArgs a8 = a;
  a8.x = {in.x8.data(), true, in.scales.data(), n, kHidden};
  const double t_fp8 = timed([&] { buf.dispatch(a8); }, reps);
  // Combine from a private copy of the rows (one copy into the segment), then zero-copy: the
  // rows written where combine reads them (combine_buffer), as an expert kernel would.
  std::vector<uint16_t> combined(size_t(n * kHidden));
  const double t_comb_copy =
      timed([&] { buf.combine(y.data(), d.handle, nullptr, 0, nullptr, nullptr, combined.data()); },
            reps);
  uint16_t* zc = buf.combine_buffer(d.handle);
  std::copy(y.begin(), y.end(), zc);
  const double t_comb = timed(
      [&] { buf.combine(zc, d.handle, nullptr, 0, nullptr, nullptr, combined.data()); }, reps);
  // Bytes: the slowest rank's received BF16 rows.
  int64_t recv = d.num_recv, max_recv = 0;
  MPI_Allreduce(&recv, &max_recv, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  const double bytes = double(max_recv) * kHidden * 2;
  const double t_copy = memcpy_seconds(size_t(bytes), reps);
  std::vector<int64_t> send(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r)
    send[size_t(r)] = int64_t(layout.num_tokens_per_rank[size_t(r)]) * kHidden * 2;
  std::vector<int64_t> send8(send);
  for (auto& v : send8) v = v / 2 + v / 2 / 128 * 4;
  const double t_a2a = alltoallv_seconds(send, reps), t_a2a8 = alltoallv_seconds(send8, reps);
  if (rank != 0) return;
  const double copy_gbps = bytes / t_copy / 1e9;
  const auto line = [&](const char* name, double t, double scale, double t_base) {
    const double gbps = bytes * scale / t / 1e9;
    std::printf(
        "BENCH ep %s ranks=%d tokens=%lld hidden=%lld topk=%d experts=%d recv_rows=%lld "
        "time_us=%.0f GBps=%.2f memcpy_GBps=%.2f frac_memcpy=%.3f alltoallv_us=%.0f "
        "alltoallv_GBps=%.2f baseline=alltoallv ratio=%.3f\n",
        name, R, (long long)n, (long long)kHidden, kTopk, kExperts, (long long)max_recv, t * 1e6,
        gbps, copy_gbps, gbps / copy_gbps, t_base * 1e6, bytes * scale / t_base / 1e9, t_base / t);
  };
  line("dispatch_bf16", t_bf16, 1.0, t_a2a);
  line("dispatch_fp8", t_fp8, (1 + 4.0 / 128) / 2, t_a2a8);
  line("combine_bf16", t_comb, 1.0, t_a2a);
  line("combine_bf16_from_private_rows", t_comb_copy, 1.0, t_a2a);
  std::fflush(stdout);
}

void run_low_latency(int rank, int R, bool quick) {
  const int64_t n = 128;
  const int reps = quick ? 5 : 30;
  const Inputs in = make_inputs(n, rank);
  ff::ep::Buffer buf(MPI_COMM_WORLD, ff::ep::Buffer::low_latency_size_hint(n, kHidden, R, kExperts),
                     0, true);
  ff::ep::LowLatencyDispatchArgs a;
  a.x = in.x.data();
  a.num_tokens = n;
  a.hidden = kHidden;
  a.topk_idx = in.idx.data();
  a.num_topk = kTopk;
  a.max_tokens_per_rank = n;
  a.num_experts = kExperts;
  const int El = kExperts / R;
  std::vector<uint16_t> y(size_t(El) * R * n * kHidden, ff::f32_to_bf16(0.5f));
  std::vector<uint16_t> combined(size_t(n * kHidden));
  const double t_disp = timed([&] { buf.low_latency_dispatch(a); }, reps);
  // Combine zero-copy: the experts' outputs lie where the sources read them
  // (low_latency_combine_buffer; written once per receive half before the timing, as the
  // experts' down projection would write them).
  const auto r = buf.low_latency_dispatch(a);
  for (int half = 0; half < 2; ++half) {
    uint16_t* zb = buf.low_latency_combine_buffer(r.handle);
    for (int e = 0; e < El; ++e) {  // the valid rows of each expert
      const size_t at = size_t(e) * R * n * kHidden;
      std::memcpy(zb + at, y.data() + at, size_t(r.recv_count[size_t(e)]) * kHidden * 2);
    }
    buf.low_latency_combine(zb, in.idx.data(), in.w.data(), r.handle, combined.data());
  }
  const double t_comb = timed(
      [&] {
        uint16_t* zb = buf.low_latency_combine_buffer(r.handle);
        buf.low_latency_combine(zb, in.idx.data(), in.w.data(), r.handle, combined.data());
      },
      reps);
  const double t_round = t_disp + t_comb;
  // MPI: the same bytes each way (FP8 rows out, BF16 rows back), two Alltoallv.
  std::vector<int64_t> out(size_t(R), 0), back(size_t(R), 0);
  for (int64_t t = 0; t < n; ++t)
    for (int k = 0; k < kTopk; ++k) {
      const int d = int(in.idx[size_t(t * kTopk + k)] / El);
      out[size_t(d)] += kHidden + kHidden / 128 * 4;
      back[size_t(d)] += kHidden * 2;
    }
  const double t_mpi = alltoallv_seconds(out, reps) + alltoallv_seconds(back, reps);
  if (rank != 0) return;
  std::printf(
      "BENCH ep low_latency_round_trip ranks=%d tokens=%lld hidden=%lld topk=%d experts=%d "
      "fp8_dispatch=1 time_us=%.0f dispatch_us=%.0f combine_us=%.0f alltoallv_us=%.0f "
      "baseline=alltoallv ratio=%.3f\n",
      R, (long long)n, (long long)kHidden, kTopk, kExperts, t_round * 1e6, t_disp * 1e6,
      (t_round - t_disp) * 1e6, t_mpi * 1e6, t_mpi / t_round);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, job = false, ll_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--job")
      job = true;
    else if (a == "--low-latency-only")
      ll_only = true;
  }
  if (!job) {  // start the rank jobs
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    setenv("OMPI_MCA_btl", "self,vader", 0);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    char self[4096] = {};
    const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
      std::fprintf(stderr, "error: bench_ep: cannot find its own path\n");
      return 1;
    }
    std::printf("# ep: hidden %lld, top-%d of %d experts, %ld cores; bytes as DeepEP counts them\n",
                (long long)kHidden, kTopk, kExperts, sysconf(_SC_NPROCESSORS_ONLN));
    std::fflush(stdout);
    for (const int ranks : {2, 4}) {
      const std::string cmd = std::string(FF_MPIEXEC) + " --timeout 900 -np " +
                              std::to_string(ranks) + " " + self + " --job" +
                              (quick ? " --quick" : "") + (ll_only ? " --low-latency-only" : "");
      if (std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "error: bench_ep: %s failed\n", cmd.c_str());
        return 1;
      }
    }
    return 0;
  }
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, R = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &R);
  try {
    if (!ll_only) run_normal(rank, R, quick);
    run_low_latency(rank, R, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
