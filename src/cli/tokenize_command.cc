#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "cli/commands.h"
#include "core/core.h"
#include "engine/engine.h"
#include "text/text.h"

namespace ff::cli {

void add_tokenize_command(CLI::App& app, TokenizeArgs& a) {
  CLI::App* t = app.add_subcommand(
      "tokenize", "Print the token ids of a text as one JSON array (needs only the tokenizer)");
  t->add_option("--model,-m", a.model,
                "Directory with tokenizer.json (and tokenizer_config.json, for BOS / EOS), or a "
                "GGUF file")
      ->required();
  t->add_flag("--no-special", a.no_special,
              "No special tokens (without it, BOS is added as the tokenizer config says)");
  t->add_option("text", a.text, "The text; - reads standard input")->required();
}

int run_tokenize(const TokenizeArgs& a) {
  const Tokenizer tok = engine::load_tokenizer(a.model);
  std::string text = a.text;
  if (text == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    FF_CHECK(!std::cin.bad(), "cannot read standard input");
  }
  const std::vector<int32_t> ids = tok.encode(text, /*add_special=*/!a.no_special);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace ff::cli
