// fireflyer fs: the distributed file system after 3FS (docs/fs.md, docs/fs-design.md). The storage
// cluster (mgmtd, CRAQ chains of storage targets, recovery; cluster.h), the metadata on a
// transactional key-value store (memory, RocksDB, etcd; txn.h, meta.h) behind a stateless
// metadata service, the client (file.h) and the FUSE mount (mount.h).
#pragma once
#include "fs/chain_state.h"
#include "fs/chunk_engine.h"
#include "fs/chunk_meta.h"
#include "fs/cluster.h"
#include "fs/crc32c.h"
#include "fs/file.h"
#include "fs/kv.h"
#include "fs/kvcache.h"
#include "fs/meta.h"
#include "fs/mount.h"
#include "fs/routing.h"
#include "fs/txn.h"
#include "fs/usrbio.h"
