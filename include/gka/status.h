// gka/status.h: error codes returned by every public entry point. Library code never throws or exits.
#pragma once

#include <string>
#include <utility>

#include "gka/config.h"

GKA_NAMESPACE_BEGIN

enum class Status : int {
  kSuccess = 0,
  kErrorNullPointer,          // a required pointer is null
  kErrorMisaligned,           // a pointer or stride breaks the vector-load alignment
  kErrorInvalidShape,         // B, T, H or D out of range or inconsistent
  kErrorInvalidStride,        // strides that would alias or run out of the tensor
  kErrorHeadGrouping,         // H_q is not a multiple of H_kv
  kErrorUnsupportedHeadDim,   // D not available on the chosen backend
  kErrorUnsupportedDType,     // dtype not accepted for this argument
  kErrorInvalidCuSeqlens,     // cu_seqlens does not start at 0, decreases, or does not end at T
  kErrorInvalidIterationCount,// num_iter < 0
  kErrorInvalidRidgeRatio,    // ridge_ratio <= 0 or not finite
  kErrorInvalidChunkSize,     // chunk size not a supported power of two
  kErrorInvalidSlot,          // a decode slot index outside the pool
  kErrorWorkspaceTooSmall,    // the caller's workspace is smaller than workspace_size()
  kErrorArchMismatch,         // the device cannot run the compiled kernels
  kErrorNotSupported,         // a valid request this build or backend does not implement
  kErrorCuda,                 // a CUDA runtime call failed
};

inline const char* status_string(Status s) {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kErrorNullPointer: return "null pointer";
    case Status::kErrorMisaligned: return "misaligned pointer or stride";
    case Status::kErrorInvalidShape: return "invalid shape";
    case Status::kErrorInvalidStride: return "invalid stride";
    case Status::kErrorHeadGrouping: return "H_q is not a multiple of H_kv";
    case Status::kErrorUnsupportedHeadDim: return "unsupported head dim";
    case Status::kErrorUnsupportedDType: return "unsupported dtype";
    case Status::kErrorInvalidCuSeqlens: return "invalid cu_seqlens";
    case Status::kErrorInvalidIterationCount: return "invalid iteration count";
    case Status::kErrorInvalidRidgeRatio: return "invalid ridge ratio";
    case Status::kErrorInvalidChunkSize: return "invalid chunk size";
    case Status::kErrorInvalidSlot: return "invalid state slot";
    case Status::kErrorWorkspaceTooSmall: return "workspace too small";
    case Status::kErrorArchMismatch: return "architecture mismatch";
    case Status::kErrorNotSupported: return "not supported";
    case Status::kErrorCuda: return "CUDA error";
  }
  return "unknown status";
}

// A status plus a message that names the offending argument ("k.stride_head: ...").
struct Result {
  Status status = Status::kSuccess;
  std::string message;

  Result() = default;
  Result(Status s, std::string m) : status(s), message(std::move(m)) {}
  static Result success() { return Result(); }
  bool ok() const { return status == Status::kSuccess; }
  explicit operator bool() const { return ok(); }
  // "invalid shape: T must be >= 1 (got 0)"
  std::string what() const {
    return message.empty() ? std::string(status_string(status))
                           : std::string(status_string(status)) + ": " + message;
  }
};

#define GKA_RETURN_IF_ERROR(expr)          \
  do {                                     \
    ::gka::Result gka_result_ = (expr);    \
    if (!gka_result_.ok()) return gka_result_; \
  } while (0)

GKA_NAMESPACE_END
