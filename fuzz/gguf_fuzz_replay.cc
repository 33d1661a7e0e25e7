// Replays fuzz inputs through gguf_fuzz.cc's LLVMFuzzerTestOneInput without libFuzzer, so any
// build (gcc, no sanitizer) runs the committed corpus: the GgufFuzzCorpus test.
//
//   gguf_fuzz_replay DIR_OR_FILE...
//
// Every regular file under each directory (sorted, so a failure names the same input each run)
// is one input. A crash or an escaping exception fails the run; so does finding no input at all,
// which would otherwise pass without testing anything.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg = argv[i];
    if (fs::is_directory(arg)) {
      for (const auto& e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file()) inputs.push_back(e.path());
    } else if (fs::is_regular_file(arg)) {
      inputs.push_back(arg);
    } else {
      std::fprintf(stderr, "gguf_fuzz_replay: %s: no such file or directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "gguf_fuzz_replay: no inputs (usage: gguf_fuzz_replay DIR_OR_FILE...)\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  double slowest_ms = 0;
  fs::path slowest;
  size_t bytes = 0;
  const auto start = Clock::now();
  for (const fs::path& p : inputs) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<uint8_t> data{std::istreambuf_iterator<char>(f),
                                    std::istreambuf_iterator<char>()};
    const auto t0 = Clock::now();
    LLVMFuzzerTestOneInput(data.data(), data.size());
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (ms > slowest_ms) slowest_ms = ms, slowest = p;
    bytes += data.size();
  }
  const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  std::printf("gguf_fuzz_replay: %zu inputs (%zu bytes) in %.1f ms; slowest %.2f ms: %s\n",
              inputs.size(), bytes, total_ms, slowest_ms, slowest.c_str());
  return 0;
}
