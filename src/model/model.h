// fireflyer model: DeepSeek-V3/V2 architecture on CPU.
#pragma once
#include "core/core.h"
