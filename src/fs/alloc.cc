// tune_allocator: megabyte buffers from the heap instead of fresh mappings.
#include <malloc.h>

#include <mutex>

#include "fs/cluster.h"

namespace ff::fs {

void tune_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    // glibc maps every allocation of 128 KiB or more afresh and unmaps it when freed, so each
    // chunk-sized buffer (several per request) costs page faults and zeroing: a 1 MiB read
    // took three times as long. Up to 256 MiB now comes from the heap, which is kept.
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
}

}  // namespace ff::fs
