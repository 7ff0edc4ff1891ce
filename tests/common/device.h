// tests/common/device.h: what the GPU tests share: checked CUDA calls, an owning device buffer,
// typed host/device copies of fp64 test data (with their rounded values), and [B, T, H, w] / state
// views over them.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include <cuda_runtime.h>

#include "common/catch.h"
#include "gka/numeric/host_convert.h"
#include "gka/status.h"
#include "gka/types.h"

#define CUDA_OK(expr)                                                                  \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    INFO(#expr << ": " << cudaGetErrorString(e_));                                     \
    REQUIRE(e_ == cudaSuccess);                                                        \
  } while (0)

namespace gka_test {

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t n) : bytes(n) {
    if (n) {
      const cudaError_t e = cudaMalloc(&p, n);
      if (e != cudaSuccess) p = nullptr;
    }
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { if (p) cudaFree(p); }
  void reset(size_t n) {
    this->~DevBuf();
    new (this) DevBuf(n);
  }
};

// Host bytes of x in dtype t, and back.
inline std::vector<uint8_t> to_bytes(const std::vector<double>& x, gka::DType t) {
  std::vector<uint8_t> b(x.size() * gka::dtype_size(t));
  for (size_t i = 0; i < x.size(); ++i) gka::store_from_double(b.data(), t, static_cast<int64_t>(i), x[i]);
  return b;
}
inline std::vector<double> to_double(const std::vector<uint8_t>& b, gka::DType t) {
  std::vector<double> x(b.size() / gka::dtype_size(t));
  for (size_t i = 0; i < x.size(); ++i) x[i] = gka::load_as_double(b.data(), t, static_cast<int64_t>(i));
  return x;
}
// x as the device holds it in dtype t.
inline std::vector<double> rounded(const std::vector<double>& x, gka::DType t) { return to_double(to_bytes(x, t), t); }

// d (re)allocated to hold the host bytes h, and h copied in; h must not be empty.
inline void upload(DevBuf& d, const std::vector<uint8_t>& h) {
  d.reset(h.size());
  REQUIRE(d.p != nullptr);
  CUDA_OK(cudaMemcpy(d.p, h.data(), h.size(), cudaMemcpyHostToDevice));
}

struct HostTensor {  // typed host copy + device copy
  std::vector<uint8_t> host;
  DevBuf dev;
  gka::DType t = gka::DType::kFP32;
};

inline void upload(HostTensor& h, const std::vector<double>& x, gka::DType t) {
  h.t = t;
  if (x.empty()) return;
  h.host = to_bytes(x, t);
  upload(h.dev, h.host);
}

// A [B, T, H, w] view of h (host or device copy); with head_major the storage is [B, H, T, w].
inline gka::TokenTensor tok(const HostTensor& h, bool device, int64_t T, int64_t H, int64_t w, bool head_major = false) {
  if (h.host.empty()) return gka::TokenTensor{};
  gka::TokenTensor t = gka::TokenTensor::contiguous(device ? h.dev.p : h.host.data(), h.t, T, H, w);
  if (head_major) {
    t.stride_token = w;
    t.stride_head = T * w;
  }
  return t;
}
inline gka::StateTensor st(const HostTensor& h, bool device, int64_t H, int64_t D) {
  if (h.host.empty()) return gka::StateTensor{};
  return gka::StateTensor::contiguous(device ? h.dev.p : h.host.data(), h.t, H, D);
}

inline std::vector<uint8_t> download(const DevBuf& b) {
  std::vector<uint8_t> h(b.bytes);
  REQUIRE(cudaMemcpy(h.data(), b.p, b.bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}
inline std::vector<float> download_f32(const DevBuf& b) {
  std::vector<float> h(b.bytes / 4);
  CUDA_OK(cudaMemcpy(h.data(), b.p, b.bytes, cudaMemcpyDeviceToHost));
  return h;
}

// All-ones bytes are NaN in bf16, fp16 and fp32: unwritten elements fail every comparison.
inline void poison(DevBuf& b, cudaStream_t stream) {
  if (b.p) CUDA_OK(cudaMemsetAsync(b.p, 0xff, b.bytes, stream));
}

// A device copy of x in dtype t and, for float64 host references, the values it holds.
struct RoundedTensor {
  DevBuf dev;
  gka::DType t = gka::DType::kFP32;
  std::vector<double> rounded;  // x rounded to t; empty (and dev unallocated) when x is
  bool present() const { return !rounded.empty(); }
};

inline void upload(RoundedTensor& d, const std::vector<double>& x, gka::DType t) {
  d.t = t;
  if (x.empty()) return;
  const std::vector<uint8_t> b = to_bytes(x, t);
  d.rounded = to_double(b, t);
  upload(d.dev, b);
}

// A [B, T, H, w] view of d: its device copy, or (device = false) the rounded values in fp64.
inline gka::TokenTensor tok(const RoundedTensor& d, bool device, int64_t T, int64_t H, int64_t w) {
  if (!d.present()) return gka::TokenTensor{};
  return gka::TokenTensor::contiguous(device ? d.dev.p : const_cast<double*>(d.rounded.data()),
                                      device ? d.t : gka::DType::kFP64, T, H, w);
}

// The graph-capture checks: enqueue(stream) -> gka::Result is captured into a CUDA graph, which is
// instantiated, replayed once and waited for. The call's own result must be success.
template <class Enqueue>
void capture_and_replay(cudaStream_t stream, Enqueue&& enqueue) {
  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const gka::Result rc = enqueue();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  INFO(rc.what());
  REQUIRE(rc.ok());
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
}

}  // namespace gka_test
