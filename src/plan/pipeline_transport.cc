#include "plan/pipeline_transport.h"

namespace ff::plan {

int64_t message_tag(MessageKind kind, const ChunkRef& receiver, int num_stages, int num_dirs) {
  const int64_t slot =
      (int64_t(receiver.chunk) * num_dirs + receiver.dir) * num_stages + receiver.stage;
  return slot * 2 + int64_t(kind);
}

}  // namespace ff::plan
