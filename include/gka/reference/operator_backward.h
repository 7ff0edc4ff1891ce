// gka/reference/operator_backward.h: the host reference behind the public BackwardArgs (spec 4,
// 12.9, 12.12, 12.13), on host pointers. Inputs of any dtype are read into Real and every gradient
// is written in its own dtype. Per (sequence, kv head):
//
//   for each query head h of the group: gather (fusions applied) -> backward_sequential or
//     backward_chunked -> fused-input backward (dq, dk, dv w.r.t. the raw inputs, dbeta) ->
//     scatter dq, dalpha, dg, df, dbeta, dh0, ds0
//   dk, dv: summed over the group in Real, then written once (spec 12.8)
//
// Outputs are written whenever present: a gradient w.r.t. an absent optional input is the gradient
// at its default (alpha = 1, g = 0, zero states). The one exception is df when f is absent: f = g
// then, and dg already holds the total.
#pragma once

#include <cstdint>
#include <vector>

#include "gka/args.h"
#include "gka/config.h"
#include "gka/host/validate.h"
#include "gka/reference/gather.h"
#include "gka/reference/head_backward.h"
#include "gka/reference/head_backward_chunked.h"
#include "gka/reference/operator.h"
#include "gka/status.h"

GKA_NAMESPACE_BEGIN
namespace reference {

// Backward of the whole problem. ReferenceOptions::schedule picks the global formulas (kSequential)
// or the chunk-wise schedule of spec 4.6 with options.chunk_size (kChunked); both accept kExact.
// The saved x / nu are used when given (z_t is solved with the forward's nu_t, spec 4.4) and
// recomputed otherwise.
template <class Real>
inline Result backward(const BackwardArgs& args, const ReferenceOptions& ref = {}) {
  GKA_RETURN_IF_ERROR(validate(args, Backend::kReference));
  const ProblemShape& shape = args.shape;
  const SolverOptions& opt = args.options;
  const int64_t D = shape.head_dim, G = shape.group_size();
  const SolverParams p = solver_params(opt, D, ref.method);

  for (const SequenceRange& seq : sequence_ranges(shape)) {
    for (int64_t kv = 0; kv < shape.heads_kv; ++kv) {
      std::vector<Real> dk_sum(static_cast<size_t>(seq.length * D), Real(0)), dv_sum(dk_sum.size(), Real(0));
      for (int64_t h = kv * G; h < (kv + 1) * G; ++h) {
        const HeadData<Real> data = gather_head<Real>(shape, args.in, opt, seq, h);
        const std::vector<Real> d_o = gather_tokens<Real>(args.d_o, seq, h, D);
        const std::vector<Real> x = gather_tokens<Real>(args.x, seq, h, D);
        const std::vector<Real> nu = gather_tokens<Real>(args.nu, seq, h, 1);
        const std::vector<Real> d_ht = load_state<Real>(args.d_ht, seq.n, h, D);
        const std::vector<Real> d_st = load_state<Real>(args.d_st, seq.n, h, D);
        HeadGradInputs<Real> gin;
        gin.d_o = d_o.data();
        gin.x = x.empty() ? nullptr : x.data();
        gin.nu = nu.empty() ? nullptr : nu.data();
        gin.d_ht = d_ht.empty() ? nullptr : d_ht.data();
        gin.d_st = d_st.empty() ? nullptr : d_st.data();

        HeadGrads<Real> g = ref.schedule == Schedule::kChunked
                                ? backward_chunked(data.inputs(), gin, p, args.bp_lambda, opt.chunk_size)
                                : backward_sequential(data.inputs(), gin, p, args.bp_lambda);

        std::vector<Real> dbeta;
        fused_inputs_backward(shape, args.in, opt, seq, h, g.dq, g.dk, g.dv, dbeta);
        for (size_t e = 0; e < dk_sum.size(); ++e) {
          dk_sum[e] += g.dk[e];
          dv_sum[e] += g.dv[e];
        }
        scatter_tokens(args.dq, seq, h, D, g.dq);
        scatter_tokens(args.dalpha, seq, h, 1, g.dalpha);
        scatter_tokens(args.dg, seq, h, 1, g.dg);
        if (args.in.f.present()) scatter_tokens(args.df, seq, h, 1, g.df);
        if (opt.fuse_beta) scatter_tokens(args.dbeta, seq, h, 1, dbeta);
        store_state(args.dh0, seq.n, h, D, g.dh0);
        store_state(args.ds0, seq.n, h, D, g.ds0);
      }
      scatter_tokens(args.dk, seq, kv, D, dk_sum);
      scatter_tokens(args.dv, seq, kv, D, dv_sum);
    }
  }
  return Result::success();
}

}  // namespace reference
GKA_NAMESPACE_END
