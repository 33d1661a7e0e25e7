// Planning for parallel training and inference, after DeepSeek's Day-4 release:
//   EPLB       the expert-parallel load balancer: which experts to replicate and where
//              (plan/eplb.h).
//   DualPipe   pipeline schedules (1F1B, ZB1P, DualPipe, DualPipeV) as per-rank operation lists
//              (plan/pipeline_schedule.h), their simulator (plan/pipeline_sim.h), and an executor
//              that runs one training step of a small model across MPI ranks
//              (plan/pipeline_exec.h).
// docs/plan.md has commands to try and the rules (tie-breaking, bubble formulas).
#pragma once
#include "plan/eplb.h"
#include "plan/pipeline_exec.h"
#include "plan/pipeline_model.h"
#include "plan/pipeline_run.h"
#include "plan/pipeline_schedule.h"
#include "plan/pipeline_sim.h"
#include "plan/pipeline_transport.h"
