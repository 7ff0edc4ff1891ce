// STUB (not committed)
#pragma once
#include "gka/kernels/backward_params.cuh"
GKA_NAMESPACE_BEGIN
namespace kernels {
constexpr int kBwdSolveThreads = 128;
template <int D, bool kSplit> struct BwdSolveSmem { static constexpr int kBytes = 1024; };
template <int D, bool kSplit, class TState> __global__ void bwd_solve_kernel(BackwardParams p) {}
}
GKA_NAMESPACE_END
