// gka/tiling/wgmma.cuh: the sm_90a backend of the MMA primitives (hopper-design.md D3, D9):
// warpgroup wgmma m64nNk16, bf16 operands, fp32 accumulation, A from registers (RS), B from a
// 128B-swizzled shared-memory tile addressed by a matrix descriptor.
//
// Fragment layout: for warp w of the warpgroup, the accumulator d[4j + e] and A a[0..3] of a k16
// step are exactly the mma.sync m16n8k16 fragments of rows 16w.. (tiling/mma.cuh), so kernels keep
// their element-wise code and only swap the product calls.
//
// Tiles are the SW128 layout of tiling::SwizzledTile<Cols, Rows> (64-column slabs of Rows x 128 B,
// 16-B chunks XOR (row % 8)), 1024-byte aligned. Bodies compile only for sm_90a (__trap() elsewhere).
#pragma once

#include <cstdint>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN
namespace tiling {
namespace wg {

// Shared-memory matrix descriptor, 128-byte swizzle; lbo / sbo in bytes.
GKA_DEVICE inline uint64_t sw128_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((saddr >> 4) & 0x3FFF);
  d |= static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(1) << 62;  // SWIZZLE_128B
  return d;
}

// B[k][n] stored [n][k] (K-major), Rows = N extent of the tile: k16 step t.
template <int Rows>
GKA_DEVICE inline uint64_t desc_kmajor(uint32_t tile, int t) {
  return sw128_desc(tile + (t >> 2) * (Rows * 128) + (t & 3) * 32, 16, 1024);
}
// B[k][n] stored [k][n] (MN-major, n contiguous), Rows = K extent of the tile: k16 step t.
template <int Rows>
GKA_DEVICE inline uint64_t desc_mnmajor(uint32_t tile, int t) {
  return sw128_desc(tile + t * 16 * 128, Rows * 128, 1024);
}

// Make generic-proxy smem writes (thread stores) visible to wgmma's async-proxy reads; follow by a
// barrier.
GKA_DEVICE inline void fence_proxy_async() {
#if GKA_ARCH_SM90A
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
GKA_DEVICE inline void fence() {
#if GKA_ARCH_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
GKA_DEVICE inline void commit() {
#if GKA_ARCH_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
GKA_DEVICE inline void wait() {
#if GKA_ARCH_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Pin registers around an in-flight group: no compiler-generated access may move across.
template <int R>
GKA_DEVICE inline void pin(float* r) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int R>
GKA_DEVICE inline void pin(uint32_t* r) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// The instruction text, shared by the accumulate and overwrite forms (operand: scale-d, 1 or 0).
#define GKA_WGMMA_M64N64K16_RS_ASM \
      "{\n.reg .pred p;\n" \
      "setp.ne.b32 p, %37, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"
#define GKA_WGMMA_M64N128K16_RS_ASM \
      "{\n.reg .pred p;\n" \
      "setp.ne.b32 p, %69, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64,%65,%66,%67}, %68, p, 1, 1, %70;\n}\n"

// d (+)= a * B, m64nNk16. The *_zero forms overwrite d (scale-d = 0).
template <int kTransB>
GKA_DEVICE inline void mma_m64n64k16_rs(float* d, const uint32_t (&a)[4], uint64_t desc) {
#if GKA_ARCH_SM90A
  asm volatile(
      GKA_WGMMA_M64N64K16_RS_ASM
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1), "n"(kTransB));
#else
  (void)d; (void)a; (void)desc;
  __trap();
#endif
}
template <int kTransB>
GKA_DEVICE inline void mma_m64n64k16_rs_zero(float* d, const uint32_t (&a)[4], uint64_t desc) {
#if GKA_ARCH_SM90A
  asm volatile(
      GKA_WGMMA_M64N64K16_RS_ASM
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(0), "n"(kTransB));
#else
  (void)d; (void)a; (void)desc;
  __trap();
#endif
}
template <int kTransB>
GKA_DEVICE inline void mma_m64n128k16_rs(float* d, const uint32_t (&a)[4], uint64_t desc) {
#if GKA_ARCH_SM90A
  asm volatile(
      GKA_WGMMA_M64N128K16_RS_ASM
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1), "n"(kTransB));
#else
  (void)d; (void)a; (void)desc;
  __trap();
#endif
}
template <int kTransB>
GKA_DEVICE inline void mma_m64n128k16_rs_zero(float* d, const uint32_t (&a)[4], uint64_t desc) {
#if GKA_ARCH_SM90A
  asm volatile(
      GKA_WGMMA_M64N128K16_RS_ASM
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]), "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(0), "n"(kTransB));
#else
  (void)d; (void)a; (void)desc;
  __trap();
#endif
}

// Dispatch on N (64 or 128).
template <int N, int kTransB>
GKA_DEVICE inline void mma_rs(float* d, const uint32_t (&a)[4], uint64_t desc) {
  static_assert(N == 64 || N == 128, "wgmma wrappers exist for N = 64 and 128");
  if constexpr (N == 64) mma_m64n64k16_rs<kTransB>(d, a, desc);
  else mma_m64n128k16_rs<kTransB>(d, a, desc);
}
template <int N, int kTransB>
GKA_DEVICE inline void mma_rs_zero(float* d, const uint32_t (&a)[4], uint64_t desc) {
  static_assert(N == 64 || N == 128, "wgmma wrappers exist for N = 64 and 128");
  if constexpr (N == 64) mma_m64n64k16_rs_zero<kTransB>(d, a, desc);
  else mma_m64n128k16_rs_zero<kTransB>(d, a, desc);
}

#undef GKA_WGMMA_M64N64K16_RS_ASM
#undef GKA_WGMMA_M64N128K16_RS_ASM

}  // namespace wg
}  // namespace tiling
GKA_NAMESPACE_END
