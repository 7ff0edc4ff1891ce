// gka/tiling/mma.cuh: warp-level tensor-core primitives (sm_80 backend: mma.sync m16n8k16, bf16
// operands, fp32 accumulation) and the fragment conventions every kernel is written against.
//
// Fragment layout (r = lane / 4, c = lane % 4), identical to one warp's slice of a wgmma m64nN
// fragment, so the sm_90a backend (tiling/wgmma.cuh) swaps only the product calls and keeps the
// kernels' element-wise code (hopper-design.md D9):
//   accumulator n8 tile j: acc[j][0..1] = C[r][8j+2c .. +1], acc[j][2..3] = C[r+8][8j+2c .. +1]
//   A k16 step t:          a[t][0] = A[r][16t+2c..], a[t][1] = A[r+8][16t+2c..],
//                          a[t][2] = A[r][16t+8+2c..], a[t][3] = A[r+8][16t+8+2c..]
// so the A fragment of k-step t is the packed accumulator tiles 2t and 2t+1 (acc_to_a).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace tiling {

// ---- packing ------------------------------------------------------------------------------------
// Two floats -> one register of two bf16 (round to nearest even); lo element in the low half.
GKA_DEVICE inline uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
GKA_DEVICE inline float bf16_lo(uint32_t p) { return __uint_as_float(p << 16); }
GKA_DEVICE inline float bf16_hi(uint32_t p) { return __uint_as_float(p & 0xffff0000u); }
GKA_DEVICE inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// One element of a 16-bit or fp32 tile as fp32 (exact).
template <class T> GKA_DEVICE inline float to_float(T x);
template <> GKA_DEVICE inline float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> GKA_DEVICE inline float to_float<__half>(__half x) { return __half2float(x); }
template <> GKA_DEVICE inline float to_float<float>(float x) { return x; }

// Split x = hi + lo with hi = bf16(x), lo = bf16(x - hi): about 16 significant bits.
GKA_DEVICE inline void split_bf16(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16(x0, x1);
  lo = pack_bf16(x0 - bf16_lo(hi), x1 - bf16_hi(hi));
}

// ---- mma.sync -------------------------------------------------------------------------------------
// d += a * b, m16n8k16, bf16 operands, fp32 accumulators.
GKA_DEVICE inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// ---- ldmatrix -----------------------------------------------------------------------------------
GKA_DEVICE inline uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
GKA_DEVICE inline void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
GKA_DEVICE inline void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

// ---- swizzled bf16 tiles in shared memory ----------------------------------------------------
// A Rows x Cols bf16 tile in the 128B-swizzle (SW128) layout that wgmma descriptors address: Cols
// is cut into 64-column slabs of Rows x 128 B, and in each row the 16-byte chunk index is XORed
// with (row % 8). The eight row addresses of one ldmatrix hit eight different bank groups, and the
// same tile is a K-major or MN-major wgmma operand (tiling/wgmma.cuh). Cols is a multiple of 64.
template <int Cols, int Rows>
struct SwizzledTile {
  static_assert(Cols % 64 == 0, "SW128 tiles have 64-column slabs");
  static constexpr int kSlabBytes = Rows * 128;
  GKA_HOST_DEVICE static inline uint32_t offset(int row, int col) {
    return static_cast<uint32_t>((col >> 6) * kSlabBytes + row * 128 + ((((col >> 3) & 7) ^ (row & 7)) << 4) +
                                 ((col & 7) << 1));
  }
};

// A fragment (16 x 16 at rows m0.., cols k0..) from a [M][K] tile (K contiguous).
template <int Cols, int Rows>
GKA_DEVICE inline void load_a(uint32_t base, int m0, int k0, int lane, uint32_t (&a)[4]) {
  const int row = m0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = k0 + (lane >> 4) * 8;
  ldmatrix_x4(base + SwizzledTile<Cols, Rows>::offset(row, col), a[0], a[1], a[2], a[3]);
}
// B fragments of two n8 tiles (n0.., n0+8..) for k-step k0 from a [N][K] tile (K contiguous).
template <int Cols, int Rows>
GKA_DEVICE inline void load_b_nk(uint32_t base, int n0, int k0, int lane, uint32_t (&b)[4]) {
  const int row = n0 + (lane & 7) + (lane >> 4) * 8;
  const int col = k0 + ((lane >> 3) & 1) * 8;
  ldmatrix_x4(base + SwizzledTile<Cols, Rows>::offset(row, col), b[0], b[1], b[2], b[3]);
}
// The same from a [K][N] tile (N contiguous), through ldmatrix.trans.
template <int Cols, int Rows>
GKA_DEVICE inline void load_b_kn(uint32_t base, int n0, int k0, int lane, uint32_t (&b)[4]) {
  const int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = n0 + (lane >> 4) * 8;
  ldmatrix_x4_trans(base + SwizzledTile<Cols, Rows>::offset(row, col), b[0], b[1], b[2], b[3]);
}

// acc n8 tiles (2t, 2t+1) -> A fragment of k-step t, rounded to bf16.
GKA_DEVICE inline void acc_to_a(const float (&c0)[4], const float (&c1)[4], uint32_t (&a)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}
// The same, split into hi + lo.
GKA_DEVICE inline void acc_to_a_split(const float (&c0)[4], const float (&c1)[4], uint32_t (&hi)[4],
                                      uint32_t (&lo)[4]) {
  split_bf16(c0[0], c0[1], hi[0], lo[0]);
  split_bf16(c0[2], c0[3], hi[1], lo[1]);
  split_bf16(c1[0], c1[1], hi[2], lo[2]);
  split_bf16(c1[2], c1[3], hi[3], lo[3]);
}

}  // namespace tiling
GKA_NAMESPACE_END
