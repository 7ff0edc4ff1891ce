// tools/gka_run_gpu.cu: gka-run's GPU backend. Uploads a Problem, calls the CUDA entry point,
// downloads the outputs. Only the forward exists on the GPU so far; backward and decode are
// added here (one function each) when their CUDA entry points land.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gka/host/validate.h"
#include "gka_run.h"

#include "gka/api/forward.cuh"

namespace gka {
namespace tools {
namespace {

std::string cuda_message(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

// A device allocation freed on scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  Result alloc(size_t n) {
    bytes = n;
    if (n == 0) return Result::success();
    const cudaError_t e = cudaMalloc(&ptr, n);
    return e == cudaSuccess ? Result::success() : Result(Status::kErrorCuda, "cudaMalloc: " + cuda_message(e));
  }
  Result upload(const NpyArray& a) {
    GKA_RETURN_IF_ERROR(alloc(a.bytes.size()));
    if (a.bytes.empty()) return Result::success();
    const cudaError_t e = cudaMemcpy(ptr, a.data(), a.bytes.size(), cudaMemcpyHostToDevice);
    return e == cudaSuccess ? Result::success() : Result(Status::kErrorCuda, "cudaMemcpy H2D: " + cuda_message(e));
  }
  Result download(NpyArray* a) const {
    if (a->bytes.empty()) return Result::success();
    const cudaError_t e = cudaMemcpy(a->data(), ptr, a->bytes.size(), cudaMemcpyDeviceToHost);
    return e == cudaSuccess ? Result::success() : Result(Status::kErrorCuda, "cudaMemcpy D2H: " + cuda_message(e));
  }
};

// The dtype the GPU computes in: that of q (after --dtype).
DType compute_dtype(const Problem& p) { return npy_to_dtype(p.at("q").type); }

// The forward's arguments for `p`, with the device address of input `name` given by `addr`
// (null = absent). Token data in q's dtype, gates and states fp32; outputs o, x in q's dtype.
template <class Addr>
ForwardArgs gpu_forward_args(const Problem& p, Addr addr, void* o, void* x, void* nu, void* ht, void* st) {
  const DType tok = compute_dtype(p);
  auto token = [&](const char* n, DType t, int64_t heads, int64_t width) {
    void* d = addr(n);
    return d ? TokenTensor::contiguous(d, t, p.T, heads, width) : TokenTensor{};
  };
  auto state = [&](const char* n) {
    void* d = addr(n);
    return d ? StateTensor::contiguous(d, DType::kFP32, p.Hq, p.D) : StateTensor{};
  };
  ForwardArgs a;
  a.shape.batch = p.B;
  a.shape.seqlen = p.T;
  a.shape.heads_q = p.Hq;
  a.shape.heads_kv = p.Hkv;
  a.shape.head_dim = p.D;
  if (p.has("cu_seqlens")) {
    const NpyArray& cu = p.at("cu_seqlens");
    a.shape.cu_seqlens.data = addr("cu_seqlens");
    a.shape.cu_seqlens.host_data = cu.data();
    a.shape.cu_seqlens.type = cu.type == NpyType::kI32 ? IndexType::kInt32 : IndexType::kInt64;
    a.shape.cu_seqlens.num_seqs = cu.size() - 1;
  }
  a.options = p.cfg.options;
  a.in.q = token("q", tok, p.Hq, p.D);
  a.in.k = token("k", tok, p.Hkv, p.D);
  a.in.v = token("v", tok, p.Hkv, p.D);
  a.in.alpha = token("alpha", tok, p.Hq, 1);
  a.in.g = token("g", DType::kFP32, p.Hq, 1);
  a.in.f = token("f", DType::kFP32, p.Hq, 1);
  if (p.cfg.options.fuse_beta) a.in.beta = token("beta", tok, p.Hq, 1);
  a.in.h0 = state("h0");
  a.in.s0 = state("s0");
  a.o = TokenTensor::contiguous(o, tok, p.T, p.Hq, p.D);
  a.x = TokenTensor::contiguous(x, tok, p.T, p.Hq, p.D);
  a.nu = TokenTensor::contiguous(nu, DType::kFP32, p.T, p.Hq, 1);
  a.ht = StateTensor::contiguous(ht, DType::kFP32, p.Hq, p.D);
  a.st = StateTensor::contiguous(st, DType::kFP32, p.Hq, p.D);
  return a;
}

const char* const kForwardInputs[] = {"q", "k", "v", "alpha", "g", "f", "beta", "h0", "s0", "cu_seqlens"};

// Asks the CUDA forward itself (can_implement: host-only checks) whether it takes `p`. The
// addresses are placeholders, distinct and 256-byte aligned; nothing is dereferenced.
Result gpu_forward_can_implement(const Problem& p) {
  std::map<std::string, void*> fake;
  uintptr_t next = uintptr_t(1) << 40;
  for (const char* n : kForwardInputs)
    if (p.has(n)) {
      fake[n] = reinterpret_cast<void*>(next);
      next += uintptr_t(1) << 36;
    }
  auto addr = [&](const char* n) -> void* { return fake.count(n) ? fake[n] : nullptr; };
  void* o[5];
  for (void*& ptr : o) {
    ptr = reinterpret_cast<void*>(next);
    next += uintptr_t(1) << 36;
  }
  return can_implement(gpu_forward_args(p, addr, o[0], o[1], o[2], o[3], o[4]), 0);
}

Result gpu_forward(const Problem& p, Outputs* out) {
  const NpyType tok_npy = dtype_to_npy(compute_dtype(p));
  std::map<std::string, DeviceBuffer> dev;
  for (const char* n : kForwardInputs) {
    if (!p.has(n)) continue;
    const NpyArray& a = p.at(n);
    if (!npy_is_float(a.type)) {  // cu_seqlens: as given (int32 or int64)
      GKA_RETURN_IF_ERROR(dev[n].upload(a));
      continue;
    }
    const std::string name = n;
    const bool token = name == "q" || name == "k" || name == "v" || name == "alpha" || name == "beta";
    const NpyType want = token ? tok_npy : NpyType::kF32;
    GKA_RETURN_IF_ERROR(dev[n].upload(a.type == want ? a : convert_float_array(a, want)));
  }
  auto addr = [&](const char* n) -> void* { return dev.count(n) ? dev[n].ptr : nullptr; };

  NpyArray o = NpyArray::zeros(tok_npy, {p.B, p.T, p.Hq, p.D}), x = NpyArray::zeros(tok_npy, {p.B, p.T, p.Hq, p.D});
  NpyArray nu = NpyArray::zeros(NpyType::kF32, {p.B, p.T, p.Hq});
  NpyArray ht = NpyArray::zeros(NpyType::kF32, {p.N, p.Hq, p.D, p.D}), st = NpyArray::zeros(NpyType::kF32, {p.N, p.Hq, p.D, p.D});
  DeviceBuffer d_o, d_x, d_nu, d_ht, d_st;
  GKA_RETURN_IF_ERROR(d_o.alloc(o.bytes.size()));
  GKA_RETURN_IF_ERROR(d_x.alloc(x.bytes.size()));
  GKA_RETURN_IF_ERROR(d_nu.alloc(nu.bytes.size()));
  GKA_RETURN_IF_ERROR(d_ht.alloc(ht.bytes.size()));
  GKA_RETURN_IF_ERROR(d_st.alloc(st.bytes.size()));
  const ForwardArgs a = gpu_forward_args(p, addr, d_o.ptr, d_x.ptr, d_nu.ptr, d_ht.ptr, d_st.ptr);

  DeviceBuffer ws;
  GKA_RETURN_IF_ERROR(ws.alloc(forward_workspace_size(a)));
  GKA_RETURN_IF_ERROR(forward(a, ws.ptr, ws.bytes, cudaStream_t{}));
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) return Result(Status::kErrorCuda, "forward: " + cuda_message(e));
  GKA_RETURN_IF_ERROR(d_o.download(&o));
  GKA_RETURN_IF_ERROR(d_x.download(&x));
  GKA_RETURN_IF_ERROR(d_nu.download(&nu));
  GKA_RETURN_IF_ERROR(d_ht.download(&ht));
  GKA_RETURN_IF_ERROR(d_st.download(&st));
  out->push_back({"o", std::move(o)});
  out->push_back({"x", std::move(x)});
  out->push_back({"nu", std::move(nu)});
  out->push_back({"H_T", std::move(ht)});
  out->push_back({"S_T", std::move(st)});
  return Result::success();
}

}  // namespace

GpuProbe gpu_probe() {
  GpuProbe probe;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    probe.why = e != cudaSuccess ? "no CUDA device visible (" + cuda_message(e) + ")" : "no CUDA device visible";
    return probe;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    probe.why = "cannot query CUDA device 0";
    return probe;
  }
  const std::string device = "CUDA device 0: " + std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
                             std::to_string(prop.minor);
  probe.usable = true;
  probe.why = device;
  return probe;
}

bool gpu_supports(const Problem& p, std::string* why) {
  if (p.cfg.mode != RunMode::kForward) {
    *why = std::string("the GPU API has no ") + run_mode_name(p.cfg.mode) + " yet";
    return false;
  }
  if (p.at("q").type == NpyType::kF64) {
    *why = "the inputs are float64, which the GPU kernels do not take (add --dtype bf16|fp16|fp32)";
    return false;
  }
  const Result r = gpu_forward_can_implement(p);
  if (!r.ok()) {
    *why = "the GPU forward cannot run this request: " + r.what();
    return false;
  }
  return true;
}

Result gpu_run(const Problem& p, Outputs* out) {
  if (p.cfg.mode == RunMode::kForward) return gpu_forward(p, out);
  return Result(Status::kErrorNotSupported,
                std::string("GPU backend not available: no GPU ") + run_mode_name(p.cfg.mode) + " in this build");
}

}  // namespace tools
}  // namespace gka
