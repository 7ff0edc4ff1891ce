// gka/types.h: dtype tags and the strided tensor views every public argument struct is built from.
#pragma once

#include <cstdint>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN

enum class DType : int { kBF16, kFP16, kFP32, kFP64 };

GKA_HOST_DEVICE inline constexpr int dtype_size(DType t) {
  return t == DType::kFP64 ? 8 : t == DType::kFP32 ? 4 : 2;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kBF16: return "bf16";
    case DType::kFP16: return "fp16";
    case DType::kFP32: return "fp32";
    case DType::kFP64: return "fp64";
  }
  return "?";
}

enum class IndexType : int { kInt32, kInt64 };

// Per-token data: vectors [B, T, H, D] or scalars [B, T, H].
// The innermost dimension (D) is contiguous; the three outer strides are in elements and may
// describe any permutation (e.g. [B, H, T, D] storage) or a slice of a fused projection.
// A null `data` means "absent" for optional arguments.
struct TokenTensor {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t stride_batch = 0;
  int64_t stride_token = 0;
  int64_t stride_head = 0;

  GKA_HOST_DEVICE bool present() const { return data != nullptr; }
  // Contiguous [B, T, H, width] (width = D for vectors, 1 for scalars).
  static TokenTensor contiguous(const void* p, DType t, int64_t T, int64_t H, int64_t width) {
    return TokenTensor{const_cast<void*>(p), t, T * H * width, H * width, width};
  }
  GKA_HOST_DEVICE int64_t offset(int64_t b, int64_t t, int64_t h) const {
    return b * stride_batch + t * stride_token + h * stride_head;
  }
};

// Per-sequence D x D states [N, H, D, D] (row index = key dimension, columns contiguous).
// For S the layout is fla's [K, V]: S[key][value].
struct StateTensor {
  void* data = nullptr;
  DType dtype = DType::kFP32;
  int64_t stride_seq = 0;
  int64_t stride_head = 0;
  int64_t stride_row = 0;

  GKA_HOST_DEVICE bool present() const { return data != nullptr; }
  static StateTensor contiguous(const void* p, DType t, int64_t H, int64_t D) {
    return StateTensor{const_cast<void*>(p), t, H * D * D, D * D, D};
  }
  GKA_HOST_DEVICE int64_t offset(int64_t n, int64_t h) const {
    return n * stride_seq + h * stride_head;
  }
};

// Sequence boundaries of a packed (varlen) batch: num_seqs + 1 offsets into T, starting at 0.
// `data` is where the kernels read it (device memory for the CUDA backend, host memory for the
// reference). `host_data`, when given, is a host copy used only for validation; the CUDA
// launchers never read device memory on the host.
struct SeqOffsets {
  const void* data = nullptr;
  const void* host_data = nullptr;
  IndexType type = IndexType::kInt32;
  int64_t num_seqs = 0;

  GKA_HOST_DEVICE bool present() const { return data != nullptr; }
};

GKA_NAMESPACE_END
