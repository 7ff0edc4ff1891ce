// gka/tiling/chunks.cuh: which tokens a chunk program owns. Chunks never straddle sequences.
//
// Dense batches: chunk c = b * N + n with N = ceil(T / C). Varlen: a table built on the device
// (kernels/chunk_table_kernel.cuh) from cu_seqlens, so the host never reads device memory; the grid
// is bounded by floor(T / C) + num_seqs >= the true chunk count, and surplus programs exit.
#pragma once

#include <cstdint>

#include "gka/config.h"
#include "gka/types.h"

GKA_NAMESPACE_BEGIN
namespace tiling {

struct SeqEntry {   // one sequence (varlen) or batch row (dense)
  int64_t t0;       // first token (index into the T axis)
  int64_t len;      // tokens
  int64_t chunk0;   // global index of its first chunk
  int64_t b;        // batch index into the token tensors
};

struct ChunkEntry {
  int64_t seq;      // sequence (or batch row); < 0 means "no chunk": exit
  int64_t t0;       // first token of the chunk
  int len;          // tokens in the chunk, 1..C
  int first;        // 1 if this is the sequence's first chunk
};

struct ChunkGeometry {
  int64_t batch = 1, seqlen = 0;
  int chunk = 64;
  bool varlen = false;
  int64_t num_seqs = 1;
  int64_t chunk_bound = 0;        // grid size along chunks
  const int64_t* table = nullptr; // varlen: [chunk_bound] packed (seq << 32 | local chunk), -1 = none
  const SeqEntry* seqs = nullptr; // varlen: [num_seqs]

  GKA_HOST_DEVICE int64_t chunks_per_row() const { return (seqlen + chunk - 1) / chunk; }

  GKA_DEVICE SeqEntry sequence(int64_t i) const {
    if (varlen) return seqs[i];
    const int64_t n = chunks_per_row();
    return SeqEntry{0, seqlen, i * n, i};
  }
  GKA_DEVICE ChunkEntry chunk_entry(int64_t c) const {
    ChunkEntry e{-1, 0, 0, 0};
    int64_t seq, local;
    if (varlen) {
      const int64_t packed = table[c];
      if (packed < 0) return e;
      seq = packed >> 32;
      local = packed & 0xffffffffll;
    } else {
      const int64_t n = chunks_per_row();
      seq = c / n;
      local = c % n;
      if (seq >= batch) return e;
    }
    const SeqEntry s = sequence(seq);
    e.seq = seq;
    e.t0 = s.t0 + local * chunk;
    const int64_t rest = s.len - local * chunk;
    e.len = static_cast<int>(rest < chunk ? rest : chunk);
    e.first = local == 0;
    return e;
  }
};

// Host-side bound on the number of chunks (no device read).
inline int64_t chunk_bound(int64_t batch, int64_t seqlen, bool varlen, int64_t num_seqs, int chunk) {
  return varlen ? seqlen / chunk + num_seqs : batch * ((seqlen + chunk - 1) / chunk);
}

}  // namespace tiling
GKA_NAMESPACE_END
