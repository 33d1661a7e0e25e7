// fireflyer fs: the distributed file system after 3FS (docs/fs-design.md). Part 1, in progress:
// the storage cluster's chain and target state machine, chunk ids and the recovery diff,
// CRC32C, the key-value store (memory, RocksDB), the chunk engine; the cluster manager, the
// storage service and their transport follow.
#pragma once
#include "fs/chain_state.h"
#include "fs/chunk_engine.h"
#include "fs/chunk_meta.h"
#include "fs/cluster.h"
#include "fs/crc32c.h"
#include "fs/file.h"
#include "fs/kv.h"
#include "fs/meta.h"
#include "fs/routing.h"
#include "fs/txn.h"
