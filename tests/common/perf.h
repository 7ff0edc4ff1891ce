// tests/common/perf.h: what the GPU timing tests ([perf]) share: random inputs generated on the
// device (a hash of the index and a seed, no host copies), buffers that live as long as a DevBufs,
// the kernel parameters' dense-batch geometry, and the CUDA-event timing loop whose median / min /
// max they print.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/catch.h"
#include "common/device.h"

namespace gka_test {

// n values uniform in [lo, hi) as T (float or bf16), on the device (hash of the index and seed)
template <class T>
__global__ void fill_uniform_kernel(T* d, size_t n, float lo, float hi, uint64_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    const float u = static_cast<float>(x >> 40) * (1.f / 16777216.f);
    d[i] = static_cast<T>(lo + (hi - lo) * u);
  }
}
template <class T>
void fill_uniform(void* d, size_t n, float lo, float hi, uint64_t seed) {
  fill_uniform_kernel<T><<<1024, 256>>>(static_cast<T*>(d), n, lo, hi, seed);
}

// p.geo, p.heads_q and p.group of a dense batch: B sequences of T tokens in chunks of C, H query
// heads and as many key/value heads (p: kernels::BackwardParams or kernels::SolveReadoutParams).
template <class Params>
void dense_geometry(Params& p, int64_t B, int64_t T, int64_t C, int64_t H) {
  p.geo.batch = B;
  p.geo.seqlen = T;
  p.geo.chunk = C;
  p.geo.num_seqs = B;
  p.geo.chunk_bound = B * ((T + C - 1) / C);
  p.heads_q = H;
  p.group = 1;
}

// Device buffers that stay allocated until the DevBufs goes out of scope. A failed allocation
// gives a null pointer (and no fill); all_allocated() says whether there was one.
struct DevBufs {
  std::deque<DevBuf> bufs;  // a deque: the elements never move
  void* alloc(size_t bytes) {
    bufs.emplace_back(bytes);
    return bufs.back().p;
  }
  template <class T>
  void* uniform(size_t n, float lo, float hi, uint64_t seed) {  // n values from fill_uniform
    void* d = alloc(n * sizeof(T));
    if (d) fill_uniform<T>(d, n, lo, hi, seed);
    return d;
  }
  bool all_allocated() const {
    for (const DevBuf& b : bufs)
      if (b.p == nullptr) return false;
    return true;
  }
};

// Times `runs` calls of launch() (default stream), each between two CUDA events and checked; the
// first `warmup` are dropped. Returns the other times in ms, sorted: median [size / 2], min front(),
// max back().
template <class Launch>
std::vector<float> event_times_ms(Launch&& launch, int runs = 9, int warmup = 2) {
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < runs; ++it) {
    CUDA_OK(cudaEventRecord(e0));
    launch();
    CUDA_OK(cudaEventRecord(e1));
    CUDA_OK(cudaEventSynchronize(e1));
    CUDA_OK(cudaGetLastError());
    float t = 0.f;
    CUDA_OK(cudaEventElapsedTime(&t, e0, e1));
    if (it >= warmup) ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms;
}

}  // namespace gka_test
