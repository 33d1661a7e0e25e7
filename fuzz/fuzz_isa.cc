// The fuzz build's stand-in for core/cpu.cc, which Debian's clang 14 cannot compile (it does not
// know the avx512fp16 feature name). The GGUF reader dispatches nothing by ISA itself; the bulk
// converters of core/dtype.cc run their portable loops.
#include "core/cpu.h"

namespace ff {

Isa active_isa() {
  return Isa::Scalar;
}

}  // namespace ff
