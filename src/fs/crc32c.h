// CRC32C (Castagnoli, the iSCSI polynomial), the checksum of every stored chunk: the SSE4.2
// crc32 instruction where the CPU has it, a table otherwise (the same values).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ff::fs {

// Continues `crc` (0 to start) over n bytes: crc32c(b, crc32c(a)) == crc32c(a + b).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// The table version, for tests of the instruction path.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace ff::fs
