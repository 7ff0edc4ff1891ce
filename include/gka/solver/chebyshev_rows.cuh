// gka/solver/chebyshev_rows.cuh: the chunked Chebyshev program of one chunk (spec 2.3, 3.4), as the
// forward's solve (right-hand side q) and the backward's adjoint solve (right-hand side dX = alpha dq~,
// spec 4.4) both run it. The round and the update are in solver/chebyshev_tc.cuh; this header holds
// what a kernel does around them:
//   chebyshev_row_coefs   per-row scalars u = eta Gamma', v = lambda / Gamma', 1 / Gamma' from nu
//   build_chebyshev_mask  M_ji = L_ji / Gamma'_j in fragment order (each thread writes what it reads)
//   chebyshev_solve_rows  D_0, E_0 from the right-hand side in registers, then the r rounds
// One warpgroup, warp w owns chunk rows 16w .. 16w+15 (r = lane / 4 and r + 8 per thread).
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/solver/chebyshev_schedule.h"
#include "gka/solver/chebyshev_tc.cuh"
#include "gka/tiling/mma.cuh"

GKA_NAMESPACE_BEGIN
namespace solver {

// Gamma'_j = max(Gamma_j, e^-60) (hopper-design.md 1.3): the accumulator's row scale.
constexpr float kMinGammaPrime = 8.75651076e-27f;

struct RowCoefs {
  float u;     // eta Gamma'   (0 where nu = 0)
  float v;     // lambda / Gamma'   (0 where nu = 0)
  float ginv;  // 1 / Gamma'
};

// From the chunk-local cumsum F_j of the H gate and nu_j. nu = 0 (the guard of spec 12.4, and rows
// past the chunk's end) gives eta = lambda = 0, which keeps the row's solution at 0.
GKA_DEVICE inline RowCoefs chebyshev_row_coefs(float ridge, float F, float nu) {
  const float gp = fmaxf(__expf(F), kMinGammaPrime);
  const bool live = nu > 0.f;
  const float lam = live ? ridge * nu : 0.f;
  const float eta = live ? chebyshev_eta<float>(ridge, nu) : 0.f;
  return RowCoefs{eta * gp, lam / gp, 1.f / gp};
}

// M_ji = e^{(F_j - max(F_j, -60)) - F_i} for i <= j < len, else 0, into `scratch` (C x C floats, 16
// KiB) in fragment order [warp][n8 tile][lane] float4. Each thread writes exactly the entries it
// reads in the rounds, so a __syncwarp (done here) is all the ordering needed.
GKA_DEVICE inline const float4* build_chebyshev_mask(const float* F, int len, float* scratch, int warp, int lane) {
  const int r = lane >> 2, c = lane & 3;
  float4* mw = reinterpret_cast<float4*>(scratch);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    float m[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = 16 * warp + r + (e >= 2 ? 8 : 0), i = 8 * nt + 2 * c + (e & 1);
      const float Fp = fmaxf(F[j], -60.f);
      m[e] = (i <= j && j < len) ? __expf((F[j] - Fp) - F[i]) : 0.f;
    }
    mw[(warp * 8 + nt) * 32 + lane] = make_float4(m[0], m[1], m[2], m[3]);
  }
  __syncwarp();
  return reinterpret_cast<const float4*>(scratch);
}

// r >= 1 Chebyshev rounds on the warp's 16 rows. In: X = the right-hand side (fp32, fragment layout
// of tiling/mma.cuh). Out: X = the r-step iterate. E and Dh are the caller's registers (the forward
// reuses E after the solve), clobbered. u, v, ginv: per-row scalars in shared memory (RowCoefs).
// kWgmma: the sm_90a round (bf16 policy only; H-bar and K visible to the async proxy).
template <int D, bool kSplit, bool kWgmma>
GKA_DEVICE inline void chebyshev_solve_rows(float (&X)[D / 8][4], float (&E)[D / 8][4], uint32_t (&Dh)[D / 16][4],
                                            const ChunkOperands& op, const float* u_s, const float* vv_s,
                                            const float* ginv, float ridge, int r_iter, int warp, int lane) {
  using namespace tiling;
  const int row_a = 16 * warp + (lane >> 2), row_b = row_a + 8;
  RowScalars rs;
  rs.u[0] = u_s[row_a];
  rs.u[1] = u_s[row_b];
  rs.v[0] = vv_s[row_a];
  rs.v[1] = vv_s[row_b];
  const float eta0 = u_s[row_a] * ginv[row_a], eta1 = u_s[row_b] * ginv[row_b];
  const float gi0 = ginv[row_a], gi1 = ginv[row_b];
  // D_0 = bf16(eta q), xi_0 = D_0, E_0 = (-q + lambda D_0) / Gamma' (the A D_0 part is round 1)
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const bool lo = e < 2;
      const float qv = X[j][e];
      const float d = round_bf16((lo ? eta0 : eta1) * qv);
      X[j][e] = d;
      E[j][e] = -qv * (lo ? gi0 : gi1) + (lo ? rs.v[0] : rs.v[1]) * d;
    }
#pragma unroll
  for (int kt = 0; kt < D / 16; ++kt) acc_to_a(X[2 * kt], X[2 * kt + 1], Dh[kt]);
  const float cc = chebyshev_c<float>(ridge);
  float omega = chebyshev_omega0<float>();
  for (int it = 0; it < r_iter; ++it) {
    if constexpr (kWgmma) matvec_round_wg<D>(E, Dh, op, warp, lane);
    else matvec_round<D, kSplit>(E, Dh, op, warp, lane);
    omega = chebyshev_next_omega(cc, omega);
    chebyshev_update<D>(E, X, Dh, rs, omega, it + 1 < r_iter);
  }
}

}  // namespace solver
GKA_NAMESPACE_END
