// fireflyer core: number formats, tensor views, the thread pool, CPU dispatch, errors, mmap,
// the opt-in stage profile, fault-injection points.
// The module's public header; the parts are split by responsibility.
#pragma once
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/mmap_file.h"
#include "core/profile.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "core/vec4.h"
