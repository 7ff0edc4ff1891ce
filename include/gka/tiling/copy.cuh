// gka/tiling/copy.cuh: predicated asynchronous tile loads (cp.async, sm_80+). Rows past the end of
// a chunk are zero-filled without touching global memory, so tails never read out of bounds.
#pragma once

#include <cstdint>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace tiling {

// 16 bytes global -> shared; when !valid the destination is zero-filled and src is not read.
GKA_DEVICE inline void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(bytes));
}
// Hint: bring the 128-byte line holding p into L2 (no register result, never faults the kernel).
GKA_DEVICE inline void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

// Prefetch `bytes` contiguous bytes into L2, cooperatively (one line per thread per step).
GKA_DEVICE inline void prefetch_l2_range(const void* p, int bytes, int tid, int nthreads) {
  for (int off = tid * 128; off < bytes; off += nthreads * 128) prefetch_l2(static_cast<const uint8_t*>(p) + off);
}

GKA_DEVICE inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
GKA_DEVICE inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Rows [0, 64) of a token tile: row t is `row_bytes` contiguous bytes at src + t * stride_bytes,
// valid for t < valid_rows. Destination rows are `dst_pitch` bytes apart.
GKA_DEVICE inline void load_rows_async(uint8_t* dst, int dst_pitch, const uint8_t* src, int64_t stride_bytes,
                                       int row_bytes, int rows, int valid_rows, int tid, int nthreads) {
  const int per_row = row_bytes / 16;
  if (nthreads % per_row == 0) {
    // The threads cover whole rows (every scan's case): each keeps one 16-byte column and walks its
    // rows by pointer additions, with no division or 64-bit multiply per piece (the reverse scans'
    // row widths are runtime values, so the division was a real one there).
    const int ch = tid % per_row, step = nthreads / per_row;
    int t = tid / per_row;
    const uint8_t* s = src + t * stride_bytes + ch * 16;
    uint8_t* d = dst + t * dst_pitch + ch * 16;
    for (; t < rows; t += step, s += step * stride_bytes, d += step * dst_pitch) {
      const bool ok = t < valid_rows;
      cp_async_16(d, ok ? s : src, ok);
    }
    return;
  }
  for (int i = tid; i < rows * per_row; i += nthreads) {
    const int t = i / per_row, ch = i % per_row;
    const bool ok = t < valid_rows;
    const uint8_t* s = ok ? src + t * stride_bytes + ch * 16 : src;
    cp_async_16(dst + t * dst_pitch + ch * 16, s, ok);
  }
}

}  // namespace tiling
GKA_NAMESPACE_END
