// Every validation error of the public entry points gets its own Status and names the argument.
#include "common/catch.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gka/gka.h"

namespace {

using gka::Backend;
using gka::DType;
using gka::Status;

// A small valid forward problem on host buffers: B=2, T=9, H_q=4, H_kv=2, D=8, fp32.
struct ForwardFixture {
  static constexpr int64_t B = 2, T = 9, Hq = 4, Hkv = 2, D = 8;
  std::vector<float> q = std::vector<float>(B * T * Hq * D, 0.5f);
  std::vector<float> k = std::vector<float>(B * T * Hkv * D, 0.25f);
  std::vector<float> v = std::vector<float>(B * T * Hkv * D, 1.0f);
  std::vector<float> o = std::vector<float>(B * T * Hq * D);
  std::vector<float> g = std::vector<float>(B * T * Hq, -0.1f);
  std::vector<float> states = std::vector<float>(B * Hq * D * D);
  alignas(16) int32_t cu[3] = {0, 4, 9};
  gka::ForwardArgs args;

  ForwardFixture() {
    args.shape.batch = B;
    args.shape.seqlen = T;
    args.shape.heads_q = Hq;
    args.shape.heads_kv = Hkv;
    args.shape.head_dim = D;
    args.in.q = gka::TokenTensor::contiguous(q.data(), DType::kFP32, T, Hq, D);
    args.in.k = gka::TokenTensor::contiguous(k.data(), DType::kFP32, T, Hkv, D);
    args.in.v = gka::TokenTensor::contiguous(v.data(), DType::kFP32, T, Hkv, D);
    args.in.g = gka::TokenTensor::contiguous(g.data(), DType::kFP32, T, Hq, 1);
    args.o = gka::TokenTensor::contiguous(o.data(), DType::kFP32, T, Hq, D);
    args.ht = gka::StateTensor::contiguous(states.data(), DType::kFP32, Hq, D);
  }
  void make_varlen() {
    args.shape.batch = 1;
    args.shape.seqlen = 9;
    args.shape.cu_seqlens.data = cu;
    args.shape.cu_seqlens.num_seqs = 2;
  }
};

void require_error(const gka::Result& r, Status expected, const std::string& names) {
  INFO("message: " << r.what());
  REQUIRE(r.status == expected);
  REQUIRE(r.message.find(names) != std::string::npos);
}

}  // namespace

TEST_CASE("validate accepts a well-formed forward problem", "[cpu][validation]") {
  ForwardFixture fx;
  REQUIRE(gka::validate(fx.args, Backend::kReference).ok());
  fx.args.chunk_state_dtype = DType::kBF16;  // accepted (and ignored) by the reference
  REQUIRE(gka::validate(fx.args, Backend::kReference).ok());
  fx.make_varlen();
  REQUIRE(gka::validate(fx.args, Backend::kReference).ok());
}

TEST_CASE("validate names the offending argument for every forward error", "[cpu][validation]") {
  ForwardFixture fx;
  auto& a = fx.args;
  SECTION("null q") { a.in.q.data = nullptr; require_error(gka::validate(a, Backend::kReference), Status::kErrorNullPointer, "q.data"); }
  SECTION("null k") { a.in.k.data = nullptr; require_error(gka::validate(a, Backend::kReference), Status::kErrorNullPointer, "k.data"); }
  SECTION("null v") { a.in.v.data = nullptr; require_error(gka::validate(a, Backend::kReference), Status::kErrorNullPointer, "v.data"); }
  SECTION("null o") { a.o.data = nullptr; require_error(gka::validate(a, Backend::kReference), Status::kErrorNullPointer, "o.data"); }
  SECTION("fuse_beta without beta") { a.options.fuse_beta = true; require_error(gka::validate(a, Backend::kReference), Status::kErrorNullPointer, "beta.data"); }
  SECTION("misaligned q on CUDA") {
    a.shape.head_dim = 64;  // a CUDA head dim, so alignment is what fails
    a.in.q.data = reinterpret_cast<char*>(fx.q.data()) + 4;
    require_error(gka::validate(a, Backend::kCuda), Status::kErrorMisaligned, "q.data");
  }
  SECTION("misaligned stride on CUDA") {
    a.shape.head_dim = 64;
    a.shape.batch = 1;
    a.in.k.stride_token = 65;
    a.in.k.stride_head = 130;
    require_error(gka::validate(a, Backend::kCuda), Status::kErrorMisaligned, "k.stride");
  }
  SECTION("seqlen 0") { a.shape.seqlen = 0; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidShape, "shape.seqlen"); }
  SECTION("batch 0") { a.shape.batch = 0; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidShape, "shape.batch"); }
  SECTION("head_dim 0") { a.shape.head_dim = 0; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidShape, "shape.head_dim"); }
  SECTION("heads not grouped") { a.shape.heads_kv = 3; require_error(gka::validate(a, Backend::kReference), Status::kErrorHeadGrouping, "heads_q"); }
  SECTION("head dim 96 on CUDA") { a.shape.head_dim = 96; require_error(gka::validate(a, Backend::kCuda), Status::kErrorUnsupportedHeadDim, "head_dim = 96"); }
  SECTION("head dim 256 on CUDA") { a.shape.head_dim = 256; require_error(gka::validate(a, Backend::kCuda), Status::kErrorUnsupportedHeadDim, "supported: 64, 128"); }
  SECTION("fp64 q on CUDA") {
    a.shape.head_dim = 64;
    a.in.q.dtype = DType::kFP64;
    require_error(gka::validate(a, Backend::kCuda), Status::kErrorUnsupportedDType, "q: dtype fp64");
  }
  SECTION("k dtype differs from q") { a.in.k.dtype = DType::kBF16; require_error(gka::validate(a, Backend::kReference), Status::kErrorUnsupportedDType, "k: dtype bf16"); }
  SECTION("bf16 gate") { a.in.g.dtype = DType::kBF16; require_error(gka::validate(a, Backend::kReference), Status::kErrorUnsupportedDType, "g: dtype bf16"); }
  SECTION("bf16 final state") { a.ht.dtype = DType::kBF16; require_error(gka::validate(a, Backend::kReference), Status::kErrorUnsupportedDType, "ht: dtype"); }
  SECTION("fp16 chunk states") { a.chunk_state_dtype = DType::kFP16; require_error(gka::validate(a, Backend::kReference), Status::kErrorUnsupportedDType, "chunk_state_dtype"); }
  SECTION("fp64 chunk states") { a.chunk_state_dtype = DType::kFP64; require_error(gka::validate(a, Backend::kReference), Status::kErrorUnsupportedDType, "chunk_state_dtype"); }
  SECTION("negative stride") { a.in.v.stride_token = -8; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidStride, "v: negative"); }
  SECTION("overlapping output") { a.o.stride_head = 4; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidStride, "o: strides"); }
  SECTION("state row stride below D") { a.ht.stride_row = 4; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidStride, "ht.stride_row"); }
  SECTION("negative iteration count") { a.options.num_iter = -1; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidIterationCount, "num_iter"); }
  SECTION("zero ridge ratio") { a.options.ridge_ratio = 0.0; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidRidgeRatio, "ridge_ratio"); }
  SECTION("negative ridge ratio") { a.options.ridge_ratio = -0.5; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidRidgeRatio, "ridge_ratio"); }
  SECTION("chunk not a power of two") { a.options.chunk_size = 48; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidChunkSize, "chunk_size = 48"); }
  SECTION("chunk too large for CUDA") {
    a.shape.head_dim = 64;
    a.options.chunk_size = 128;
    require_error(gka::validate(a, Backend::kCuda), Status::kErrorInvalidChunkSize, "chunk_size = 128");
  }
}

TEST_CASE("validate checks cu_seqlens contents from the host copy", "[cpu][validation]") {
  ForwardFixture fx;
  fx.make_varlen();
  auto& a = fx.args;
  SECTION("not starting at 0") { fx.cu[0] = 1; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidCuSeqlens, "cu_seqlens[0]"); }
  SECTION("decreasing") { fx.cu[1] = 10; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidCuSeqlens, "decreases at index 2"); }
  SECTION("last != T") { fx.cu[2] = 8; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidCuSeqlens, "must equal the total token count"); }
  SECTION("batch > 1 with cu_seqlens") { a.shape.batch = 2; require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidShape, "shape.batch must be 1"); }
  SECTION("int64 offsets checked too") {
    alignas(16) int64_t cu64[3] = {0, 5, 7};
    a.shape.cu_seqlens.data = cu64;
    a.shape.cu_seqlens.type = gka::IndexType::kInt64;
    require_error(gka::validate(a, Backend::kReference), Status::kErrorInvalidCuSeqlens, "cu_seqlens[num_seqs] = 7");
  }
  SECTION("CUDA backend reads only the host copy") {
    a.shape.head_dim = 64;  // device pointers are never dereferenced: no host copy, no check
    fx.cu[2] = 8;
    a.shape.cu_seqlens.host_data = nullptr;
    std::vector<float> q64(9 * 4 * 64), k64(9 * 2 * 64), v64(9 * 2 * 64), o64(9 * 4 * 64);
    a.in.q = gka::TokenTensor::contiguous(q64.data(), DType::kFP32, 9, 4, 64);
    a.in.k = gka::TokenTensor::contiguous(k64.data(), DType::kFP32, 9, 2, 64);
    a.in.v = gka::TokenTensor::contiguous(v64.data(), DType::kFP32, 9, 2, 64);
    a.o = gka::TokenTensor::contiguous(o64.data(), DType::kFP32, 9, 4, 64);
    a.ht = gka::StateTensor{};
    // Host vectors of float are 16-byte aligned by the allocator on this platform.
    REQUIRE(gka::validate(a, Backend::kCuda).ok());
    a.shape.cu_seqlens.host_data = fx.cu;
    require_error(gka::validate(a, Backend::kCuda), Status::kErrorInvalidCuSeqlens, "must equal");
  }
}

TEST_CASE("validate requires the gradient outputs that match the inputs", "[cpu][validation]") {
  ForwardFixture fx;
  std::vector<float> grad_q(fx.q.size()), grad_k(fx.k.size()), grad_v(fx.v.size()), grad_g(fx.g.size());
  gka::BackwardArgs b;
  b.shape = fx.args.shape;
  b.in = fx.args.in;
  b.d_o = fx.args.o;
  b.dq = gka::TokenTensor::contiguous(grad_q.data(), DType::kFP32, 9, 4, 8);
  b.dk = gka::TokenTensor::contiguous(grad_k.data(), DType::kFP32, 9, 2, 8);
  b.dv = gka::TokenTensor::contiguous(grad_v.data(), DType::kFP32, 9, 2, 8);
  b.dg = gka::TokenTensor::contiguous(grad_g.data(), DType::kFP32, 9, 4, 1);
  REQUIRE(gka::validate(b, Backend::kReference).ok());
  SECTION("missing dg") { b.dg.data = nullptr; require_error(gka::validate(b, Backend::kReference), Status::kErrorNullPointer, "dg.data"); }
  SECTION("missing d_o") { b.d_o.data = nullptr; require_error(gka::validate(b, Backend::kReference), Status::kErrorNullPointer, "d_o.data"); }
  SECTION("missing dh0 with h0") {
    b.in.h0 = gka::StateTensor::contiguous(fx.states.data(), DType::kFP32, 4, 8);
    require_error(gka::validate(b, Backend::kReference), Status::kErrorNullPointer, "dh0.data");
  }
  SECTION("missing dalpha with alpha") {
    b.in.alpha = fx.args.in.g;
    require_error(gka::validate(b, Backend::kReference), Status::kErrorNullPointer, "dalpha.data");
  }
  SECTION("scan_segments out of range") {
    b.scan_segments = 16;
    REQUIRE(gka::validate(b, Backend::kReference).ok());
    b.scan_segments = -1;
    require_error(gka::validate(b, Backend::kReference), Status::kErrorInvalidShape, "scan_segments");
  }
  SECTION("saved chunk states: dtype and alignment of the forward's workspace") {
    alignas(256) static uint8_t fws[512];
    b.forward_workspace = fws;
    REQUIRE(gka::validate(b, Backend::kReference).ok());
    b.chunk_state_dtype = DType::kFP16;
    require_error(gka::validate(b, Backend::kReference), Status::kErrorUnsupportedDType, "chunk_state_dtype");
    b.chunk_state_dtype = DType::kBF16;
    b.forward_workspace = fws + 16;
    require_error(gka::validate(b, Backend::kReference), Status::kErrorMisaligned, "forward_workspace");
  }
}

TEST_CASE("validate checks decode slots against the pool", "[cpu][validation]") {
  ForwardFixture fx;
  std::vector<float> pool_h(5 * 4 * 8 * 8), pool_s(5 * 4 * 8 * 8);
  alignas(16) int32_t slots[2] = {3, 1};
  gka::DecodeArgs d;
  d.shape = fx.args.shape;
  d.shape.seqlen = 1;
  d.in = fx.args.in;
  d.o = fx.args.o;
  d.pool.h = gka::StateTensor::contiguous(pool_h.data(), DType::kFP32, 4, 8);
  d.pool.s = gka::StateTensor::contiguous(pool_s.data(), DType::kFP32, 4, 8);
  d.pool.num_slots = 5;
  d.pool.read_slots = slots;
  REQUIRE(gka::validate(d, Backend::kReference).ok());
  SECTION("slot out of range") { slots[1] = 5; require_error(gka::validate(d, Backend::kReference), Status::kErrorInvalidSlot, "pool.read_slots[1] = 5"); }
  SECTION("negative slot") { slots[0] = -2; require_error(gka::validate(d, Backend::kReference), Status::kErrorInvalidSlot, "read_slots[0]"); }
  SECTION("pad slot is accepted") { slots[0] = -1; REQUIRE(gka::validate(d, Backend::kReference).ok()); }
  SECTION("no read slots") { d.pool.read_slots = nullptr; require_error(gka::validate(d, Backend::kReference), Status::kErrorNullPointer, "pool.read_slots"); }
  SECTION("empty pool") { d.pool.num_slots = 0; require_error(gka::validate(d, Backend::kReference), Status::kErrorInvalidShape, "pool.num_slots"); }
}

// The CUDA kernels read and write every pool slot in one pass: no sequence may write a slot another
// reads, nor two sequences the same slot (the reference reads everything first and allows both).
TEST_CASE("validate rejects pool slots the one-pass CUDA kernels cannot honour", "[cpu][validation]") {
  constexpr int64_t N = 2, H = 2, D = 64;
  alignas(16) static float q[N * H * D], k[N * H * D], v[N * H * D], o[N * H * D];
  std::vector<float> pool_h(4 * H * D * D), pool_s(4 * H * D * D);
  alignas(16) int32_t reads[2] = {0, 1}, writes[2] = {2, 3};
  gka::DecodeArgs d;
  d.shape.batch = N;
  d.shape.seqlen = 1;
  d.shape.heads_q = d.shape.heads_kv = H;
  d.shape.head_dim = D;
  d.in.q = gka::TokenTensor::contiguous(q, DType::kFP32, 1, H, D);
  d.in.k = gka::TokenTensor::contiguous(k, DType::kFP32, 1, H, D);
  d.in.v = gka::TokenTensor::contiguous(v, DType::kFP32, 1, H, D);
  d.o = gka::TokenTensor::contiguous(o, DType::kFP32, 1, H, D);
  d.pool.h = gka::StateTensor::contiguous(pool_h.data(), DType::kFP32, H, D);
  d.pool.s = gka::StateTensor::contiguous(pool_s.data(), DType::kFP32, H, D);
  d.pool.num_slots = 4;
  d.pool.read_slots = d.pool.host_read_slots = reads;
  d.pool.write_slots = d.pool.host_write_slots = writes;
  REQUIRE(gka::validate(d, Backend::kCuda).ok());
  SECTION("two sequences write one slot") {
    writes[1] = 2;
    REQUIRE(gka::validate(d, Backend::kReference).ok());
    require_error(gka::validate(d, Backend::kCuda), Status::kErrorInvalidSlot, "pool.write_slots");
  }
  SECTION("a sequence writes a slot another reads") {
    writes[0] = 1;
    REQUIRE(gka::validate(d, Backend::kReference).ok());
    require_error(gka::validate(d, Backend::kCuda), Status::kErrorInvalidSlot, "pool");
  }
  SECTION("a forward with a pool takes no h0 / ht") {
    gka::ForwardArgs f;
    f.shape = d.shape;
    f.in = d.in;
    f.o = d.o;
    f.pool = d.pool;
    REQUIRE(gka::validate(f, Backend::kCuda).ok());
    f.ht = d.pool.h;
    require_error(gka::validate(f, Backend::kCuda), Status::kErrorInvalidShape, "pool");
  }
}

TEST_CASE("status strings are distinct and non-empty", "[cpu][validation]") {
  std::vector<std::string> seen;
  for (int s = 0; s <= static_cast<int>(Status::kErrorCuda); ++s) {
    const std::string str = gka::status_string(static_cast<Status>(s));
    REQUIRE_FALSE(str.empty());
    REQUIRE(std::find(seen.begin(), seen.end(), str) == seen.end());
    seen.push_back(str);
  }
}
