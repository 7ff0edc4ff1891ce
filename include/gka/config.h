// gka/config.h: namespace and function-qualifier macros shared by host and device code.
#pragma once

#include "gka/version.h"

// Everything lives in an inline namespace named after the major/minor version, so that two
// extensions built against different gka versions can be loaded into one process (ODR-safe).
#define GKA_NAMESPACE_BEGIN namespace gka { inline namespace v0_1 {
#define GKA_NAMESPACE_END } }

#if defined(__CUDACC__)
#define GKA_HOST_DEVICE __host__ __device__
#define GKA_DEVICE __device__
#else
#define GKA_HOST_DEVICE
#define GKA_DEVICE
#endif

// True in device code compiled for an sm_90a target (wgmma, TMA available).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GKA_ARCH_SM90A 1
#else
#define GKA_ARCH_SM90A 0
#endif
