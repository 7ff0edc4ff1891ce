// gka/kernels/chunk_table_kernel.cuh: builds the varlen chunk table from cu_seqlens on the device.
// One block; sequences are processed 1024 at a time with a block-wide exclusive scan of their chunk
// counts. Entries past the true chunk count are set to -1 so surplus programs exit.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/tiling/chunks.cuh"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct ChunkTableParams {
  const void* cu_seqlens = nullptr;
  IndexType index_type = IndexType::kInt32;
  int64_t num_seqs = 0;
  int chunk = 64;
  int64_t chunk_bound = 0;
  int64_t* table = nullptr;           // [chunk_bound]
  tiling::SeqEntry* seqs = nullptr;   // [num_seqs]
};

constexpr int kChunkTableThreads = 1024;

// static: a header-defined non-template kernel, included by several translation units of one program.
static __global__ void __launch_bounds__(kChunkTableThreads) chunk_table_kernel(ChunkTableParams p) {
  __shared__ int64_t warp_sums[32];
  __shared__ int64_t carry;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid == 0) carry = 0;
  __syncthreads();
  auto cu = [&](int64_t i) -> int64_t {
    return p.index_type == IndexType::kInt32 ? static_cast<const int32_t*>(p.cu_seqlens)[i]
                                             : static_cast<const int64_t*>(p.cu_seqlens)[i];
  };
  for (int64_t base = 0; base < p.num_seqs; base += kChunkTableThreads) {
    const int64_t i = base + tid;
    int64_t t0 = 0, len = 0, n = 0;
    if (i < p.num_seqs) {
      t0 = cu(i);
      len = cu(i + 1) - t0;
      if (len < 0) len = 0;
      n = (len + p.chunk - 1) / p.chunk;
    }
    int64_t incl = n;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      int64_t w = warp_sums[lane];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int64_t y = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += y;
      }
      warp_sums[lane] = w;  // inclusive over warps
    }
    __syncthreads();
    const int64_t excl = carry + (warp > 0 ? warp_sums[warp - 1] : 0) + incl - n;
    if (i < p.num_seqs) {
      p.seqs[i] = tiling::SeqEntry{t0, len, excl, 0};
      for (int64_t c = 0; c < n && excl + c < p.chunk_bound; ++c) p.table[excl + c] = (i << 32) | c;
    }
    __syncthreads();
    if (tid == 0) carry += warp_sums[31];
    __syncthreads();
  }
  for (int64_t c = carry + tid; c < p.chunk_bound; c += kChunkTableThreads) p.table[c] = -1;
}

}  // namespace kernels
GKA_NAMESPACE_END
