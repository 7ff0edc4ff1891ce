// Uses the installed headers: the public API and the float64 reference.
#include <cstdio>
#include <vector>

#include "gka/gka.h"
#include "gka/reference/reference.h"

int main() {
  const int T = 5, H = 1, D = 4;
  std::vector<double> q(T * H * D, 0.5), k(T * H * D, 0.25), v(T * H * D, 1.0), o(T * H * D, 0.0);
  gka::ForwardArgs args;
  args.shape.seqlen = T;
  args.shape.heads_q = args.shape.heads_kv = H;
  args.shape.head_dim = D;
  args.in.q = gka::TokenTensor::contiguous(q.data(), gka::DType::kFP64, T, H, D);
  args.in.k = gka::TokenTensor::contiguous(k.data(), gka::DType::kFP64, T, H, D);
  args.in.v = gka::TokenTensor::contiguous(v.data(), gka::DType::kFP64, T, H, D);
  args.o = gka::TokenTensor::contiguous(o.data(), gka::DType::kFP64, T, H, D);
  gka::Result r = gka::reference::forward<double>(args);
  std::printf("consumer: gka %s forward: %s, o[0] = %g\n", GKA_VERSION_STRING, r.what().c_str(), o[0]);
  return r.ok() && o[0] != 0.0 ? 0 : 1;
}
