// fireflyer fs: the distributed file system after 3FS (docs/fs-design.md). Part 1, in progress:
// the storage cluster's chain and target state machine; the cluster manager, the storage
// service and their transport follow.
#pragma once
#include "fs/chain_state.h"
