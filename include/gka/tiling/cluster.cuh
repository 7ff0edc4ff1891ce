// gka/tiling/cluster.cuh: the few thread-block-cluster operations the decode split uses (sm_90):
// the split arrive / wait of the cluster barrier and a store into another CTA's shared memory.
// On older architectures they trap: the host launches clusters only on sm_90 and newer.
#pragma once

#include <cstdint>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace tiling {

// Every thread of every CTA of the cluster arrives (release: its earlier writes, shared memory of
// other CTAs included, become visible to the threads that wait for this phase).
GKA_DEVICE inline void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// The same without ordering anything: for a phase that only says "this CTA runs" (a release
// arrive also waits for the thread's outstanding memory accesses, loads in flight included).
GKA_DEVICE inline void cluster_arrive_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// Waits until every thread of the cluster has arrived at the current phase (acquire).
GKA_DEVICE inline void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// *p = v in the shared memory of CTA `rank` of the cluster, at the offset p has in this CTA's.
GKA_DEVICE inline void store_shared_rank(float* p, uint32_t rank, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(remote), "f"(v) : "memory");
#else
  (void)p; (void)rank; (void)v;
  __trap();
#endif
}

}  // namespace tiling
GKA_NAMESPACE_END
