// Private to the CLI: one function pair per subcommand, and the options several of them share.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ff {
class Model;
class ExpertParallel;
struct ModelConfig;
}  // namespace ff

namespace ff::cli {

// --quantize none|q8|q4|fp8 (generate, serve): the linear weights' format at load
// (ff::parse_quantize turns the value into Model::load's Quantize).
inline void add_quantize_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--quantize", value,
                  "Quantize the linear weights at load: q8 (GGUF Q8_0), q4 (Q4_K; Q8_0 where rows "
                  "are not a multiple of 256) or fp8 (e4m3, 128x128 block scales); none keeps them")
      ->check(CLI::IsMember({"none", "q8", "q4", "fp8"}))
      ->capture_default_str();
}

// --ep, --ep-placement, --ep-max-tokens (generate, serve): expert parallelism under mpirun.
struct EpArgs {
  bool enabled = false;
  std::string placement;
  int64_t max_tokens = 4096;
};
void add_ep_options(CLI::App* cmd, EpArgs& args);

// MPI and the model's expert parallelism for one command, set up from the model's config before
// the model loads (experts() tells Model::load which experts this rank holds), then attached to
// it; the destructor ends both (the leader first tells the other ranks to stop following).
class EpSession {
 public:
  EpSession(const EpArgs& args, const ModelConfig& config);
  ~EpSession();
  bool leader() const;
  std::function<bool(int, int)> experts() const;
  void attach(Model& model);

 private:
  std::unique_ptr<ExpertParallel> ep_;
};

// The model for generate / serve. With --ep, *session is set up first (so each rank binds only
// the experts it holds); on the ranks other than 0 the call then serves rank 0's forward passes
// until rank 0 is done (with SIGINT / SIGTERM blocked: they end the job through rank 0) and
// returns null.
std::unique_ptr<Model> load_model(const std::string& path, const std::string& quantize,
                                  const EpArgs& ep, std::unique_ptr<EpSession>* session);

struct GenerateArgs {
  EpArgs ep;
  std::string model;
  std::string quantize = "none";  // --quantize: none, q8, q4, fp8
  std::string prompt;
  std::string system;
  bool chat = false;
  int max_tokens = 128;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  float min_p = 0.f;
  float repetition_penalty = 1.f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::string cache_dtype;  // "", "f32", "bf16"
  bool ignore_eos = false;
  bool quiet_stats = false;
};

void add_generate_command(CLI::App& app, GenerateArgs& args);
int run_generate(const GenerateArgs& args);

struct ServeArgs {
  EpArgs ep;
  std::string model;
  std::string quantize = "none";
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;  // default: the model directory's name
  int64_t kv_pages = 0;           // 0: sized from --kv-cache-mb
  int64_t kv_cache_mb = 2048;
  int64_t max_batch_tokens = 512;
  int max_running = 64;
  bool no_prefix_caching = false;
  std::string cache_dtype;  // "", "f32", "bf16"
  int max_connections = 0;  // 0: from the open-file limit
  double header_timeout = 10;
  double keep_alive = 5;
};

void add_serve_command(CLI::App& app, ServeArgs& args);
int run_serve(const ServeArgs& args);

struct TokenizeArgs {
  std::string model;  // a directory with tokenizer.json (and tokenizer_config.json)
  std::string text;   // "-": standard input
  bool no_special = false;
};

void add_tokenize_command(CLI::App& app, TokenizeArgs& args);
int run_tokenize(const TokenizeArgs& args);

struct DualPipeArgs {
  std::string method = "dualpipe";
  int pp = 8;
  int chunks = 20;
  double f = 1, b = 2, w = 1, p2p = 0;
  std::optional<double> fb;  // default F + B (no overlap benefit)
  bool overlap_middle_pair = false;
  std::string svg;
  bool json = false;
};

void add_dualpipe_command(CLI::App& app, DualPipeArgs& args);
int run_dualpipe(const DualPipeArgs& args);

struct TrainPipelineArgs {
  std::string method = "dualpipe";
  int pp = 4;
  int chunks = 8;
  int hidden = 512;
  int seq = 256;
  int micro_batch = 3;
  std::string dtype = "f32";  // "f32", "f64"
  uint64_t seed = 233;
  int steps = 1;
  bool forward_only = false;
  bool check = false;
  bool overlap_middle_pair = false;
  bool json = false;
};

// Initialises MPI itself: run it under mpirun.
void add_train_pipeline_command(CLI::App& app, TrainPipelineArgs& args);
int run_train_pipeline(const TrainPipelineArgs& args);

struct EplbArgs {
  std::string load;             // JSON or CSV file of expert loads, [layers][experts]
  std::optional<int> replicas;  // default: the number of experts (no copies)
  int groups = 1;
  int nodes = 1;
  int gpus = 1;
  std::string policy = "auto";  // "auto", "hierarchical", "global"
  bool spread = false;
  bool json = false;
};

void add_eplb_command(CLI::App& app, EplbArgs& args);
int run_eplb(const EplbArgs& args);

// fireflyer fs mgmtd | storage | cluster | chains | routing: the storage cluster's services
// and tools (docs/fs.md).
struct FsArgs {
  std::string listen = "127.0.0.1:0";
  std::string mgmtd;  // host:port
  std::string db;     // mgmtd: RocksDB directory ("" : memory)
  std::string data;   // storage: the targets' directory; cluster: the cluster's
  uint32_t node = 0;
  uint32_t targets = 1;
  uint64_t capacity_mb = 0;
  bool no_fsync = false;
  int heartbeat_ms = 300;
  int lease_ms = 1500;
  uint32_t nodes = 3;
  uint32_t replicas = 3;
  uint32_t table = 1;
  int base_port = 0;  // cluster: mgmtd on it, node n on it + n (0: free ports)
  bool json = false;
  std::string etcd;              // meta: etcd's host:port (instead of --db)
  uint32_t chunk_kb = 1024;      // meta: new files' chunk size
  uint32_t stripe = 4;           // meta: new files' stripe (chains per file)
  int session_lease_ms = 30000;  // meta: a silent writer's session ends after this
  std::string mountpoint;        // mount, up
  std::string path;              // put, get: the file in the file system
  bool allow_other = false;      // mount, up: other users may use the mount
  double attr_timeout = 1.0;     // mount, up: seconds the kernel caches attributes
};

void add_fs_command(CLI::App& app, FsArgs& args);
int run_fs(CLI::App& app, const FsArgs& args);

}  // namespace ff::cli
