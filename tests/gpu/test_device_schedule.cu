// The Chebyshev scalar schedule is one piece of code for host and device. The device's float32
// table matches the host's to a few ulp (nvcc contracts 1 - c*w into an FMA, g++ does not, so
// bitwise equality is not expected) and the float64 table to float32 rounding.
#include "common/catch.h"

#include <cmath>
#include <vector>

#include <cuda_runtime.h>

#include "gka/gka.h"
#include "gka/solver/chebyshev_schedule.h"

namespace {

__global__ void omega_table_kernel(float ratio, int n, float* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  const float c = gka::chebyshev_c(ratio);
  float omega = gka::chebyshev_omega0<float>();
  for (int i = 0; i < n; ++i) {
    omega = gka::chebyshev_next_omega(c, omega);
    out[i] = omega;
  }
}

}  // namespace

TEST_CASE("device Chebyshev omega schedule equals the host schedule", "[gpu][solver]") {
  const int n = 30;
  const float ratio = 0.02f;
  float* d_out = nullptr;
  REQUIRE(cudaMalloc(&d_out, n * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMemset(d_out, 0xff, n * sizeof(float)) == cudaSuccess);  // NaN poison
  omega_table_kernel<<<1, 32>>>(ratio, n, d_out);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  std::vector<float> device(n);
  REQUIRE(cudaMemcpy(device.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(cudaFree(d_out) == cudaSuccess);

  const float c32 = gka::chebyshev_c(ratio);
  const double c64 = gka::chebyshev_c(0.02);
  float w32 = gka::chebyshev_omega0<float>();
  double w64 = gka::chebyshev_omega0<double>();
  for (int i = 0; i < n; ++i) {
    w32 = gka::chebyshev_next_omega(c32, w32);
    w64 = gka::chebyshev_next_omega(c64, w64);
    REQUIRE(std::fabs(device[i] - w32) <= 4 * 1.2e-7f * w32);  // 4 ulp at omega in (1.5, 2]
    REQUIRE(std::fabs(device[i] - w64) <= 4e-7 * w64);
  }
  // spec 2.3: omega_30 = 1.569033 at a = 0.02
  REQUIRE(std::fabs(w64 - 1.569033) < 1e-6);
}
