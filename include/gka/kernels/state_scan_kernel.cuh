// gka/kernels/state_scan_kernel.cuh: the inter-chunk scan (spec 3.2) for H (keys k, values k,
// decay f) and S (keys k, values v, decay g). Emits the fp32 state before every chunk into the
// workspace and the final state H_T / S_T.
// TState: the element type of the emitted chunk states (ForwardArgs::chunk_state_dtype), float or
// __nv_bfloat16 (rounded to nearest from the fp32 accumulators). The scan itself and H_T / S_T are
// fp32 either way, so bf16 chunk states do not accumulate rounding across chunks.
//
// Grid: (num_seqs * H_q, 2 [H, S], D / 64 row tiles). Block: 256 threads, 8 warps; warp w owns rows
// 16 (w % 4).. of the 64-row tile and columns (w / 4) * D/2 ... Token tiles arrive by cp.async into
// a two-stage raw buffer, the next chunk's load overlapping the current chunk's update.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/gating/gates.cuh"
#include "gka/tiling/chunks.cuh"
#include "gka/tiling/copy.cuh"
#include "gka/tiling/state_scan.cuh"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace kernels {

struct StateScanParams {
  tiling::ChunkGeometry geo;
  int64_t heads_q = 0, group = 1;
  TokenTensor k, v, beta;
  gating::Gate gate_h, gate_s;
  bool l2norm_k = false, use_beta = false;
  StateTensor h0, s0, ht, st;
  void* states_h = nullptr;  // [chunk_bound][H_q][D][D] of TState
  // [chunk_bound][H_q][2 (H, S)][kScanDecayRow]: the chunks' key decays (scan_decays_kernel)
  float* decays = nullptr;
  void* states_s = nullptr;
  // Optional state pool (ForwardArgs::pool): h0 / s0 / ht / st then point at the pool, the initial
  // state of sequence n is read at slot read_slots[n] (zero at pad_slot or when
  // has_initial_state[n] == 0) and the final one written at write_slots[n] (read_slots when null;
  // not at pad_slot). s0 / st may then be bf16. Null read_slots: state index n as before.
  const void* read_slots = nullptr;
  const void* write_slots = nullptr;
  IndexType slot_type = IndexType::kInt32;
  int64_t pad_slot = -1;
  const uint8_t* has_initial_state = nullptr;
};

// Slot i of a device index array.
GKA_DEVICE inline int64_t slot_at(const void* p, IndexType t, int64_t i) {
  return t == IndexType::kInt64 ? static_cast<const int64_t*>(p)[i]
                                : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// Two adjacent fp32 accumulator values -> TState at dst (4- or 8-byte aligned store).
template <class TState>
GKA_DEVICE inline void store_state2(TState* dst, float a, float b) {
  if constexpr (sizeof(TState) == 4) *reinterpret_cast<float2*>(dst) = make_float2(a, b);
  else *reinterpret_cast<uint32_t*>(dst) = tiling::pack_bf16(a, b);
}

constexpr int kScanThreads = 256;
constexpr int kScanChunk = 64;
// A chunk's decay row: the decay of each of its keys to the chunk's end, e^{F_end - F_t} (0 past the
// end), the chunk's decay e^{F_end} and 3 floats of padding (17 whole 16-byte cp.async pieces).
constexpr int kScanDecayRow = kScanChunk + 4;
constexpr int kScanDecayThreads = 64;  // one warp per recurrence (H, S)

// The scans' decay rows, ahead of the scans: they are chunk-local, so this pass forms them for every
// chunk at once and the scans' chains only load them with the chunk's rows (formed by warp 0 at the
// top of every chunk they kept the other warps waiting at the barrier). Chunk-local cumsum, decays
// from cumsum differences only (spec 8). Grid: (chunk_bound, H_q); warp 0: f (H), warp 1: g (S).
// (A template only so that the header can be included by several translation units.)
template <int C = kScanChunk>
__global__ void __launch_bounds__(kScanDecayThreads) scan_decays_kernel(StateScanParams p) {
  static_assert(C == 64, "a lane owns two tokens");
  __shared__ float cumsum[2][C];
  const int is_s = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t cidx = blockIdx.x, h = blockIdx.y;
  const tiling::ChunkEntry ce = p.geo.chunk_entry(cidx);
  if (ce.seq < 0) return;
  const int64_t b = p.geo.sequence(ce.seq).b;
  float* F = cumsum[is_s];
  gating::warp_chunk_cumsum64(is_s ? p.gate_s : p.gate_h, b, ce.t0, ce.len, h, F, lane);
  const float last = F[ce.len - 1];
  float* row = p.decays + ((cidx * p.heads_q + h) * 2 + is_s) * kScanDecayRow;
  for (int t = lane; t < C; t += 32) row[t] = t < ce.len ? gating::decay(last, F[t]) : 0.f;
  if (lane == 0) *reinterpret_cast<float4*>(row + C) = make_float4(__expf(last), 0.f, 0.f, 0.f);
}

// What one scan CTA advances: its (sequence, head), which recurrence (blockIdx.y: 0 = H from
// (k, k, f), 1 = S from (k, v, g)), where its token rows start, and its initial and final states.
// Shared by both scan kernels.
template <class Tin, class TState>
struct ScanTask {
  int64_t seq, h, hk;
  bool is_s;
  tiling::SeqEntry se;
  int64_t nchunks;
  StateTensor init, fin;
  TState* states;                     // [chunk_bound][H_q][D][D] chunk states of this recurrence
  const uint8_t *kbase, *vbase;       // first token row of the keys / values of this (sequence, kv head)
  int64_t kstride, vstride;           // token strides in bytes
  int64_t init_n, fin_n;              // state index of init / fin (a pool slot with a pool); -1: none

  GKA_DEVICE explicit ScanTask(const StateScanParams& p)
      : seq(blockIdx.x / p.heads_q), h(blockIdx.x % p.heads_q), hk(h / p.group), is_s(blockIdx.y == 1),
        se(p.geo.sequence(seq)), nchunks((se.len + kScanChunk - 1) / kScanChunk),
        init(is_s ? p.s0 : p.h0), fin(is_s ? p.st : p.ht),
        states(static_cast<TState*>(is_s ? p.states_s : p.states_h)) {
    const TokenTensor& vt = is_s ? p.v : p.k;
    kbase = static_cast<const uint8_t*>(p.k.data) + (se.b * p.k.stride_batch + hk * p.k.stride_head) * sizeof(Tin);
    vbase = static_cast<const uint8_t*>(vt.data) + (se.b * vt.stride_batch + hk * vt.stride_head) * sizeof(Tin);
    kstride = p.k.stride_token * sizeof(Tin);
    vstride = vt.stride_token * sizeof(Tin);
    init_n = fin_n = seq;
    if (p.read_slots != nullptr) {
      const int64_t rd = slot_at(p.read_slots, p.slot_type, seq);
      const int64_t wr = p.write_slots ? slot_at(p.write_slots, p.slot_type, seq) : rd;
      const bool has = rd != p.pad_slot && (p.has_initial_state == nullptr || p.has_initial_state[seq] != 0);
      init_n = has ? rd : -1;
      fin_n = wr != p.pad_slot ? wr : -1;
    }
  }
  // Tokens in chunk n; only the last chunk of a sequence may be partial.
  GKA_DEVICE int chunk_valid(int64_t n) const {
    return static_cast<int>(se.len - n * kScanChunk < kScanChunk ? se.len - n * kScanChunk : kScanChunk);
  }
  // cp.async chunk n's key [and value] rows into the raw stage st (values at st + tile), `pitch`
  // bytes per token row, and its decay row into decay_dst; one commit group.
  template <int D>
  GKA_DEVICE void issue_chunk(const StateScanParams& p, uint8_t* st, int pitch, int tile, float* decay_dst, int64_t n,
                              int tid) const {
    const int64_t t0 = se.t0 + n * kScanChunk;
    const int valid = chunk_valid(n);
    if (tid < kScanDecayRow / 4)
      tiling::cp_async_16(decay_dst + 4 * tid,
                          p.decays + (((se.chunk0 + n) * p.heads_q + h) * 2 + (is_s ? 1 : 0)) * kScanDecayRow + 4 * tid,
                          true);
    tiling::load_rows_async(st, pitch, kbase + t0 * kstride, kstride, D * sizeof(Tin), kScanChunk, valid, tid,
                            kScanThreads);
    if (is_s)
      tiling::load_rows_async(st + tile, pitch, vbase + t0 * vstride, vstride, D * sizeof(Tin), kScanChunk, valid, tid,
                              kScanThreads);
    tiling::cp_async_commit();
  }
  // Per-token scales of the fused transforms (l2norm of k, beta) of the chunk at token t0, from
  // its raw key tile: 8 tokens per warp.
  template <int D>
  GKA_DEVICE void token_scales(const StateScanParams& p, const tiling::RawTile<Tin>& keys, int64_t t0, int valid,
                               int warp, int lane, float* key_scale, float* val_scale) const {
    for (int t = warp; t < kScanChunk; t += kScanThreads / 32) {
      float ss = 0.f;
      if (p.l2norm_k) {  // uniform branch: no reduction when the norm is off
        for (int i = lane; i < D; i += 32) { const float x = keys.at(t, i); ss += x * x; }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      }
      const float b = (p.use_beta && t < valid)
                          ? gating::load_as_float(p.beta.data, p.beta.dtype, p.beta.offset(se.b, t0 + t, h))
                          : 0.f;
      if (lane == 0) {
        const float ks = gating::fused_scale(p.l2norm_k, ss, p.use_beta, b);
        key_scale[t] = ks;
        val_scale[t] = is_s ? gating::fused_scale(false, 0.f, p.use_beta, b) : ks;
      }
    }
  }
  // This thread's accumulator fragment (rows row0 + lane/4 (+8), columns col0 + 8j + 2(lane%4) (+1))
  // of the initial state, or zeros without h0 / s0.
  template <int NT>
  GKA_DEVICE void load_initial(float (&acc)[NT][4], int row0, int col0, int lane) const {
    const int r = lane >> 2, c = lane & 3;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + r + (e >= 2 ? 8 : 0), col = col0 + 8 * j + 2 * c + (e & 1);
        acc[j][e] = (init.data != nullptr && init_n >= 0)
                        ? gating::load_as_float(init.data, init.dtype, init.offset(init_n, h) + row * init.stride_row + col)
                        : 0.f;
      }
  }
  // The same fragment into the final state H_T / S_T (fp32), when the caller asked for it.
  template <int NT>
  GKA_DEVICE void store_final(const float (&acc)[NT][4], int row0, int col0, int lane) const {
    if (fin.data == nullptr || fin_n < 0) return;
    const int r = lane >> 2, c = lane & 3;
    const int64_t base = fin.offset(fin_n, h);  // fp32, or bf16 for a pool's S
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int col = col0 + 8 * j + 2 * c;
      gating::store2_from_float(fin.data, fin.dtype, base + (row0 + r) * fin.stride_row + col, acc[j][0], acc[j][1]);
      gating::store2_from_float(fin.data, fin.dtype, base + (row0 + r + 8) * fin.stride_row + col, acc[j][2], acc[j][3]);
    }
  }
};

template <class Tin, int D>
struct ScanSmem {
  static constexpr int kPitch = D * static_cast<int>(sizeof(Tin)) + 16;
  static constexpr int kTile = kScanChunk * kPitch;
  // [stage][keys, values] raw tiles, then per-token scalars.
  static constexpr int kScalars = 2 * kTile * 2;
  // decay rows [2 stages], key / value scales
  static constexpr int kBytes = kScalars + (2 * kScanDecayRow + 2 * kScanChunk) * 4;
};

template <class Tin, int D, bool kSplit, class TState = float>
__global__ void __launch_bounds__(kScanThreads) state_scan_kernel(StateScanParams p) {
  using Smem = ScanSmem<Tin, D>;
  constexpr int NT = D / 16;  // n8 tiles per warp (D/2 columns)
  extern __shared__ __align__(128) uint8_t smem[];
  float* decay_rows = reinterpret_cast<float*>(smem + Smem::kScalars);  // [2 stages][kScanDecayRow]
  float* key_scale = decay_rows + 2 * kScanDecayRow;
  float* val_scale = key_scale + kScanChunk;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const ScanTask<Tin, TState> task(p);
  const int64_t h = task.h;
  const bool is_s = task.is_s;
  const int row_tile = blockIdx.z;
  const int row0 = row_tile * 64 + 16 * (warp & 3);  // first state row of this warp
  const int col0 = (warp >> 2) * (D / 2);
  const tiling::SeqEntry& se = task.se;
  const int64_t nchunks = task.nchunks;
  const int r = lane >> 2, c = lane & 3;

  float acc[NT][4];
  task.load_initial(acc, row0, col0, lane);

  auto issue = [&](int64_t n) {
    task.template issue_chunk<D>(p, smem + (n & 1) * 2 * Smem::kTile, Smem::kPitch, Smem::kTile,
                                 decay_rows + (n & 1) * kScanDecayRow, n, tid);
  };
  if (nchunks > 0) issue(0);

  for (int64_t n = 0; n < nchunks; ++n) {
    const int64_t t0 = se.t0 + n * kScanChunk;
    const int valid = task.chunk_valid(n);
    if (n + 1 < nchunks) {
      issue(n + 1);
      tiling::cp_async_wait<1>();
    } else {
      tiling::cp_async_wait<0>();
    }
    __syncthreads();  // raw tiles and decays of chunk n visible to all threads
    const float* key_decay = decay_rows + (n & 1) * kScanDecayRow;
    const uint8_t* st = smem + (n & 1) * 2 * Smem::kTile;
    const tiling::RawTile<Tin> keys{st, Smem::kPitch};
    const tiling::RawTile<Tin> vals{is_s ? st + Smem::kTile : st, Smem::kPitch};
    // per-token scales of the fused transforms: 8 tokens per warp
    task.template token_scales<D>(p, keys, t0, valid, warp, lane, key_scale, val_scale);
    // emit the state before this chunk (TState)
    {
      TState* out = task.states + ((se.chunk0 + n) * p.heads_q + h) * D * D;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = col0 + 8 * j + 2 * c;
        store_state2(out + (row0 + r) * D + col, acc[j][0], acc[j][1]);
        store_state2(out + (row0 + r + 8) * D + col, acc[j][2], acc[j][3]);
      }
    }
    __syncthreads();
    tiling::state_chunk_update<Tin, NT, kSplit>(acc, key_decay[kScanChunk], keys, vals, key_decay, key_scale, val_scale, row0,
                                                col0, lane);
    __syncthreads();  // the stage may be overwritten by the load issued in the next iteration
  }
  task.store_final(acc, row0, col0, lane);
}


// ---- bf16 fast path ------------------------------------------------------------------------------
// The same scan for bf16 inputs (single operand policy), with the per-chunk operands prepared once
// per CTA in shared memory instead of element by element in every warp: the decayed keys of this
// CTA's kRows state rows are split into bf16 hi + lo tiles [token][row], the values are the raw tile
// [token][col] (transformed in place only when l2norm / beta are fused), and every MMA operand then
// comes from one ldmatrix.trans. Element values, MMA order and accumulator layout are those of
// state_scan_kernel, so the results are bitwise the same (checked on H200). The old kernel was
// bound by per-chunk instruction issue and by its 32-byte-piece stores, not by DRAM bandwidth.
// kRows = 32 doubles the CTAs per (sequence, head) for batches too small to fill the device.
//
// Grid: (num_seqs * H_q, 2 [H, S], D / kRows). Block: 256 threads; warp w owns state rows
// 16 (w % (kRows/16)).. of the tile and the (w / (kRows/16))-th slice of D * kRows / 128 columns.
template <int D, int kRows>
struct ScanMmaSmem {
  static constexpr int kRawPitch = D * 2 + 16;         // bytes per token row; conflict-free ldmatrix
  static constexpr int kRawTile = kScanChunk * kRawPitch;
  static constexpr int kOpPitch = kRows * 2 + 16;      // [token][row] split key tiles
  static constexpr int kOpTile = kScanChunk * kOpPitch;
  static constexpr int kOpBase = 2 * 2 * kRawTile;      // [stage][keys, values]
  // per-warp fp32 staging of 8 state rows for coalesced stores; +8 floats: conflict-free float2 writes
  static constexpr int kCols = D * kRows / 128;  // columns per warp
  static constexpr int kStagePitch = kCols + 8;
  static constexpr int kStageBase = kOpBase + 2 * kOpTile;  // hi, lo
  static constexpr int kScalars = kStageBase + 8 * 8 * kStagePitch * 4;
  // decay rows [2 stages], key / value scales
  static constexpr int kBytes = kScalars + (2 * kScanDecayRow + 2 * kScanChunk) * 4;
};

template <int D, int kRows, class TState = float>
__global__ void __launch_bounds__(kScanThreads) state_scan_mma_kernel(StateScanParams p) {
  using Smem = ScanMmaSmem<D, kRows>;
  using Tin = __nv_bfloat16;
  constexpr int kWm = kRows / 16;           // warps along rows
  constexpr int kCols = Smem::kCols;         // columns per warp
  constexpr int NT = kCols / 8;
  static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* op_hi = smem + Smem::kOpBase;
  uint8_t* op_lo = op_hi + Smem::kOpTile;
  float* decay_rows = reinterpret_cast<float*>(smem + Smem::kScalars);  // [2 stages][kScanDecayRow]
  float* key_scale = decay_rows + 2 * kScanDecayRow;
  float* val_scale = key_scale + kScanChunk;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const ScanTask<__nv_bfloat16, TState> task(p);
  const int64_t h = task.h;
  const bool is_s = task.is_s;
  const int tile_row0 = blockIdx.z * kRows;
  const int m0 = 16 * (warp % kWm);          // first row of this warp inside the tile
  const int row0 = tile_row0 + m0;           // ... in the state
  const int col0 = (warp / kWm) * kCols;
  const tiling::SeqEntry& se = task.se;
  const int64_t nchunks = task.nchunks;
  const bool scaled = p.l2norm_k || p.use_beta;
  const int r = lane >> 2, c = lane & 3;

  float acc[NT][4];
  task.load_initial(acc, row0, col0, lane);

  auto issue = [&](int64_t n) {
    task.template issue_chunk<D>(p, smem + (n & 1) * 2 * Smem::kRawTile, Smem::kRawPitch, Smem::kRawTile,
                                 decay_rows + (n & 1) * kScanDecayRow, n, tid);
  };
  if (nchunks > 0) issue(0);
  if (!scaled && tid < kScanChunk) {  // unit scales, written once
    key_scale[tid] = 1.f;
    val_scale[tid] = 1.f;
  }

  // One barrier pair per chunk: (A) raw tile + decay row of chunk n ready and every warp done with
  // chunk n-1's MMA (so its stage and the operand tiles may be overwritten); (B) operand tiles ready.
  for (int64_t n = 0; n < nchunks; ++n) {
    const int64_t t0 = se.t0 + n * kScanChunk;
    const int valid = task.chunk_valid(n);
    tiling::cp_async_wait<0>();
    __syncthreads();  // (A)
    const float* key_decay = decay_rows + (n & 1) * kScanDecayRow;
    if (n + 1 < nchunks) issue(n + 1);  // overlaps everything below
    uint8_t* st = smem + (n & 1) * 2 * Smem::kRawTile;
    uint8_t* vals = is_s ? st + Smem::kRawTile : st;
    if (scaled) {  // uniform branch: per-token scales of the fused transforms, 8 tokens per warp
      task.template token_scales<D>(p, tiling::RawTile<Tin>{st, Smem::kRawPitch}, t0, valid, warp, lane, key_scale,
                                    val_scale);
      __syncthreads();
    }
    // emit the state before this chunk (TState); the stores drain while the operands are prepared
    {
      TState* out = task.states + ((se.chunk0 + n) * p.heads_q + h) * D * D;
      // through a per-warp staging buffer, 8 rows at a time: every 16-byte store of a warp then
      // covers whole 128-byte lines (the fragment layout writes 32-byte pieces of 8-16 rows, and the
      // scan was bound by store instructions / L2 requests rather than by DRAM)
      float* stage = reinterpret_cast<float*>(smem + Smem::kStageBase) + warp * 8 * Smem::kStagePitch;
      constexpr int kLanesPerRow = kCols / 4;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int j = 0; j < NT; ++j)
          *reinterpret_cast<float2*>(stage + r * Smem::kStagePitch + 8 * j + 2 * c) =
              make_float2(acc[j][2 * half], acc[j][2 * half + 1]);
        __syncwarp();
#pragma unroll
        for (int i = lane; i < 8 * kLanesPerRow; i += 32) {
          const int rr = i / kLanesPerRow, cc = (i % kLanesPerRow) * 4;
          const float4 x = *reinterpret_cast<const float4*>(stage + rr * Smem::kStagePitch + cc);
          TState* dst = out + (row0 + 8 * half + rr) * D + col0 + cc;
          if constexpr (sizeof(TState) == 4) *reinterpret_cast<float4*>(dst) = x;
          else *reinterpret_cast<uint2*>(dst) = make_uint2(tiling::pack_bf16(x.x, x.y), tiling::pack_bf16(x.z, x.w));
        }
        __syncwarp();
      }
    }
    const float chunk_decay = key_decay[kScanChunk];
    // decayed keys of this tile's rows, split hi + lo: 8 rows (16 bytes) of one token per item
    for (int i = tid; i < kScanChunk * kRows / 8; i += kScanThreads) {
      const int t = i / (kRows / 8), g8 = (i % (kRows / 8)) * 8;
      const uint4 raw = *reinterpret_cast<const uint4*>(st + t * Smem::kRawPitch + 2 * (tile_row0 + g8));
      const float kd = key_decay[t], ks = key_scale[t];
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int q = 0; q < 4; ++q)
        tiling::split_bf16(kd * tiling::operand_value<false>(tiling::bf16_lo(w[q]), ks),
                           kd * tiling::operand_value<false>(tiling::bf16_hi(w[q]), ks), hi[q], lo[q]);
      *reinterpret_cast<uint4*>(op_hi + t * Smem::kOpPitch + 2 * g8) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
      *reinterpret_cast<uint4*>(op_lo + t * Smem::kOpPitch + 2 * g8) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
    }
    if (scaled) {  // values as every kernel sees them, in place (the keys above read the raw tile first)
      __syncthreads();
      for (int i = tid; i < kScanChunk * D / 8; i += kScanThreads) {
        const int t = i / (D / 8), g8 = (i % (D / 8)) * 8;
        uint4* pv = reinterpret_cast<uint4*>(vals + t * Smem::kRawPitch + 2 * g8);
        const uint4 raw = *pv;
        const float vs = val_scale[t];
        const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
        uint32_t o[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          o[q] = tiling::pack_bf16(tiling::operand_value<false>(tiling::bf16_lo(w[q]), vs),
                                   tiling::operand_value<false>(tiling::bf16_hi(w[q]), vs));
        *pv = make_uint4(o[0], o[1], o[2], o[3]);
      }
    }
    __syncthreads();  // (B)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] *= chunk_decay;
    const uint32_t hi_base = tiling::smem_addr(op_hi), lo_base = tiling::smem_addr(op_lo);
    const uint32_t v_base = tiling::smem_addr(vals);
    const int li = lane >> 3, lr = lane & 7;
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      // A[m = row][k = token] from the [token][row] tiles: matrices (k0, m0), (k0, m0+8), (k0+8, m0), (k0+8, m0+8)
      const uint32_t a_off = (16 * kt + lr + (li >> 1) * 8) * Smem::kOpPitch + 2 * (m0 + (li & 1) * 8);
      uint32_t ahi[4], alo[4];
      tiling::ldmatrix_x4_trans(hi_base + a_off, ahi[0], ahi[1], ahi[2], ahi[3]);
      tiling::ldmatrix_x4_trans(lo_base + a_off, alo[0], alo[1], alo[2], alo[3]);
#pragma unroll
      for (int jj = 0; jj < NT / 2; ++jj) {
        // B[k = token][n = col] for n8 tiles 2jj, 2jj+1: matrices (k0, n0), (k0+8, n0), (k0, n0+8), (k0+8, n0+8)
        const uint32_t b_off = (16 * kt + lr + (li & 1) * 8) * Smem::kRawPitch + 2 * (col0 + 16 * jj + (li >> 1) * 8);
        uint32_t b[4];
        tiling::ldmatrix_x4_trans(v_base + b_off, b[0], b[1], b[2], b[3]);
        tiling::mma_bf16(acc[2 * jj], ahi, b[0], b[1]);
        tiling::mma_bf16(acc[2 * jj], alo, b[0], b[1]);
        tiling::mma_bf16(acc[2 * jj + 1], ahi, b[2], b[3]);
        tiling::mma_bf16(acc[2 * jj + 1], alo, b[2], b[3]);
      }
    }
  }
  task.store_final(acc, row0, col0, lane);
}

}  // namespace kernels
GKA_NAMESPACE_END
