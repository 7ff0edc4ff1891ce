// gka-run: runs gka's forward, backward or decode on .npy inputs and writes .npy outputs.
//
//   gka-run forward|backward|decode [--in DIR] [name=path.npy ...] --out DIR [options]
//
// Inputs use the golden-case names and the layouts of gka/args.h; see usage() below. The backend is
// the GPU when this build and the machine can run the request there, else the float64 reference;
// the choice and the reason are always printed.
//
// Exit status: 0 success, 1 bad usage or bad input, 2 the requested backend is not available,
// 3 the operator rejected the arguments or failed.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <list>
#include <map>
#include <string>
#include <vector>

#include "gka/gka.h"
#include "gka/reference/reference.h"
#include "gka_run.h"
#include "npy.h"

namespace gt = gka::tools;
using gt::NpyArray;
using gt::NpyType;

namespace {

constexpr int kExitOk = 0, kExitBadInput = 1, kExitNoBackend = 2, kExitOperator = 3;

void usage(std::FILE* f) {
  std::fprintf(f,
      "usage: gka-run forward|backward|decode [--in DIR] [name=path.npy ...] --out DIR [options]\n"
      "\n"
      "inputs (.npy, float64 | float32 | float16 | bf16 stored as uint16; C order):\n"
      "  q [B,T,Hq,D]  k, v [B,T,Hkv,D]  alpha, g, f, beta [B,T,Hq]  h0, s0 [N,Hq,D,D]\n"
      "  cu_seqlens [N+1] int32|int64 (varlen, B = 1)\n"
      "  backward: do [B,T,Hq,D] (required), dHT, dST [N,Hq,D,D], x [B,T,Hq,D], nu [B,T,Hq] (saved)\n"
      "  decode:   pool_H, pool_S [P,Hq,D,D], slots [N] int32|int64, has_initial_state [N] bool;\n"
      "            tokens [N,m,H,D], or packed [1,total,H,D] with cu_seqlens\n"
      "  --in DIR picks up DIR/<name>.npy for every name the mode uses; name=path overrides.\n"
      "outputs (in --out DIR, as <name>.npy):\n"
      "  forward: o x nu H_T S_T   backward: dq dk dv [dalpha dg df dbeta dh0 ds0]\n"
      "  decode:  o pool_H_out pool_S_out\n"
      "options:\n"
      "  --backend auto|gpu|reference   (default auto: GPU when available and supported)\n"
      "  --num-iter N (30)  --ratio A (0.02)  --scale S (0 = D^-1/2)  --chunk C (64)\n"
      "  --no-bp-lambda  --l2norm-qk  --fuse-beta\n"
      "  --exact-solve                  reference only: Cholesky solve instead of Chebyshev\n"
      "  --schedule sequential|chunked  reference only: token by token (default) or chunk-wise\n"
      "  --dtype bf16|fp16|fp32|fp64    cast inputs first (tokens to the dtype; gates and states\n"
      "                                 to fp32 unless fp64)\n"
      "  --pad-slot N                   decode: sequences whose slot is N are skipped\n"
      "exit status: 0 ok, 1 bad usage or input, 2 backend not available, 3 operator error\n");
}

struct CommandLine {
  gt::RunConfig cfg;
  std::string in_dir, out_dir, backend = "auto";
  std::vector<std::pair<std::string, std::string>> explicit_files;  // name, path
  bool cast = false;
  gka::DType cast_to = gka::DType::kFP64;
};

// The names each mode reads, and the expected layout of each (by role).
const std::vector<std::string>& mode_inputs(gt::RunMode m) {
  static const std::vector<std::string> fwd = {"q", "k", "v", "alpha", "g", "f", "beta", "h0", "s0", "cu_seqlens"};
  static const std::vector<std::string> bwd = {"q",  "k",  "v",          "alpha", "g",   "f",  "beta", "h0",
                                               "s0", "do", "dHT", "dST", "x",     "nu", "cu_seqlens"};
  static const std::vector<std::string> dec = {"q",      "k",      "v",     "alpha",            "g",         "f",
                                               "beta",   "pool_H", "pool_S", "slots", "has_initial_state", "cu_seqlens"};
  return m == gt::RunMode::kForward ? fwd : m == gt::RunMode::kBackward ? bwd : dec;
}

bool is_known_name(const std::string& n) {
  for (gt::RunMode m : {gt::RunMode::kForward, gt::RunMode::kBackward, gt::RunMode::kDecode}) {
    const auto& v = mode_inputs(m);
    if (std::find(v.begin(), v.end(), n) != v.end()) return true;
  }
  return false;
}

bool parse_int(const char* s, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}
bool parse_double(const char* s, double* out) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

// Returns an error message, empty on success.
std::string parse_command_line(int argc, char** argv, CommandLine* cl) {
  if (argc < 2) return "missing mode (forward, backward or decode)";
  const std::string mode = argv[1];
  if (mode == "-h" || mode == "--help" || mode == "help") return "help";
  if (mode == "forward") cl->cfg.mode = gt::RunMode::kForward;
  else if (mode == "backward") cl->cfg.mode = gt::RunMode::kBackward;
  else if (mode == "decode") cl->cfg.mode = gt::RunMode::kDecode;
  else return "unknown mode '" + mode + "' (expected forward, backward or decode)";

  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char** v) -> bool {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    const char* v = nullptr;
    int64_t iv = 0;
    double dv = 0;
    if (a == "--in") {
      if (!value(&v)) return "--in needs a directory";
      cl->in_dir = v;
    } else if (a == "--out") {
      if (!value(&v)) return "--out needs a directory";
      cl->out_dir = v;
    } else if (a == "--backend") {
      if (!value(&v)) return "--backend needs auto, gpu or reference";
      cl->backend = v;
      if (cl->backend != "auto" && cl->backend != "gpu" && cl->backend != "reference")
        return "--backend must be auto, gpu or reference (got '" + cl->backend + "')";
    } else if (a == "--num-iter") {
      if (!value(&v) || !parse_int(v, &iv) || iv < 0 || iv > 100000) return "--num-iter needs an integer >= 0";
      cl->cfg.options.num_iter = static_cast<int>(iv);
    } else if (a == "--ratio") {
      if (!value(&v) || !parse_double(v, &dv)) return "--ratio needs a number";
      cl->cfg.options.ridge_ratio = dv;
    } else if (a == "--scale") {
      if (!value(&v) || !parse_double(v, &dv)) return "--scale needs a number";
      cl->cfg.options.scale = dv;
    } else if (a == "--chunk") {
      if (!value(&v) || !parse_int(v, &iv) || iv < 1 || iv > (1 << 20)) return "--chunk needs a positive integer";
      cl->cfg.options.chunk_size = static_cast<int>(iv);
    } else if (a == "--no-bp-lambda") {
      cl->cfg.bp_lambda = false;
    } else if (a == "--l2norm-qk") {
      cl->cfg.options.l2norm_qk = true;
    } else if (a == "--fuse-beta") {
      cl->cfg.options.fuse_beta = true;
    } else if (a == "--exact-solve") {
      cl->cfg.exact_solve = true;
    } else if (a == "--schedule") {
      if (!value(&v)) return "--schedule needs sequential or chunked";
      const std::string sch = v;
      if (sch != "sequential" && sch != "chunked") return "--schedule must be sequential or chunked (got '" + sch + "')";
      cl->cfg.chunked = sch == "chunked";
    } else if (a == "--dtype") {
      if (!value(&v)) return "--dtype needs bf16, fp16, fp32 or fp64";
      const std::string d = v;
      cl->cast = true;
      if (d == "bf16") cl->cast_to = gka::DType::kBF16;
      else if (d == "fp16") cl->cast_to = gka::DType::kFP16;
      else if (d == "fp32") cl->cast_to = gka::DType::kFP32;
      else if (d == "fp64") cl->cast_to = gka::DType::kFP64;
      else return "--dtype must be bf16, fp16, fp32 or fp64 (got '" + d + "')";
    } else if (a == "--pad-slot") {
      if (!value(&v) || !parse_int(v, &iv)) return "--pad-slot needs an integer";
      cl->cfg.pad_slot = iv;
    } else if (a == "-h" || a == "--help") {
      return "help";
    } else if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      return "unknown option '" + a + "'";
    } else {
      const size_t eq = a.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == a.size())
        return "unexpected argument '" + a + "' (inputs are given as name=path.npy)";
      const std::string name = a.substr(0, eq);
      if (!is_known_name(name)) return "unknown input name '" + name + "'";
      cl->explicit_files.emplace_back(name, a.substr(eq + 1));
    }
  }
  if (cl->out_dir.empty()) return "--out DIR is required";
  if ((cl->cfg.exact_solve || cl->cfg.chunked) && cl->backend == "gpu")
    return "--exact-solve and --schedule are reference-only options";
  return std::string();
}

// ---- input loading and checking -----------------------------------------------------------

bool file_exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

std::string load_inputs(const CommandLine& cl, gt::Problem* p) {
  const auto& names = mode_inputs(cl.cfg.mode);
  std::map<std::string, std::string> paths;
  if (!cl.in_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(cl.in_dir, ec)) return "--in " + cl.in_dir + ": not a directory";
    for (const std::string& n : names) {
      const std::string path = cl.in_dir + "/" + n + ".npy";
      if (file_exists(path)) paths[n] = path;
    }
  }
  for (const auto& nf : cl.explicit_files) {
    if (std::find(names.begin(), names.end(), nf.first) == names.end()) {
      std::fprintf(stderr, "gka-run: note: input '%s' is not used by %s; ignored\n", nf.first.c_str(),
                   gt::run_mode_name(cl.cfg.mode));
      continue;
    }
    paths[nf.first] = nf.second;
  }
  for (const auto& np : paths) {
    NpyArray a;
    const std::string err = gt::read_npy(np.second, &a);
    if (!err.empty()) return "input " + np.first + ": " + err;
    p->in[np.first] = std::move(a);
  }
  return std::string();
}

std::string shape_of(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// Checks shapes and dtypes of everything loaded; fills the sizes of `p`.
std::string check_inputs(gt::Problem* p) {
  const gt::RunMode mode = p->cfg.mode;
  for (const char* req : {"q", "k", "v"})
    if (!p->has(req)) return std::string("missing required input '") + req + "'";
  if (mode == gt::RunMode::kBackward && !p->has("do")) return "missing required input 'do' (the gradient of o)";
  if (mode == gt::RunMode::kDecode) {
    for (const char* req : {"pool_H", "pool_S", "slots"})
      if (!p->has(req)) return std::string("missing required input '") + req + "' (decode)";
  }
  if (p->cfg.options.fuse_beta && !p->has("beta")) return "--fuse-beta needs the input 'beta'";

  for (auto& kv : p->in) {
    const std::string& n = kv.first;
    const NpyType t = kv.second.type;
    const bool index = n == "cu_seqlens" || n == "slots";
    if (index) {
      if (t != NpyType::kI32 && t != NpyType::kI64)
        return n + ": dtype " + gt::npy_type_name(t) + " not accepted (int32 or int64)";
    } else if (n == "has_initial_state") {
      if (t != NpyType::kBool && t != NpyType::kU8)
        return n + ": dtype " + gt::npy_type_name(t) + " not accepted (bool or uint8)";
    } else if (!gt::npy_is_float(t)) {
      return n + ": dtype " + gt::npy_type_name(t) + " not accepted (float64, float32, float16 or bf16 as uint16)";
    }
  }

  const NpyArray& q = p->at("q");
  if (q.ndim() != 4) return "q: expected 4 dimensions [B,T,Hq,D], got " + q.shape_string();
  p->B = q.shape[0];
  p->T = q.shape[1];
  p->Hq = q.shape[2];
  p->D = q.shape[3];
  if (p->B < 1 || p->T < 1 || p->Hq < 1 || p->D < 1) return "q: every dimension must be >= 1, got " + q.shape_string();
  const NpyArray& k = p->at("k");
  if (k.ndim() != 4 || k.shape[0] != p->B || k.shape[1] != p->T || k.shape[3] != p->D || k.shape[2] < 1)
    return "k: expected [" + std::to_string(p->B) + "," + std::to_string(p->T) + ",Hkv," + std::to_string(p->D) +
           "] to match q " + q.shape_string() + ", got " + k.shape_string();
  p->Hkv = k.shape[2];
  if (p->Hq % p->Hkv != 0)
    return "heads: q has " + std::to_string(p->Hq) + " heads, not a multiple of k's " + std::to_string(p->Hkv);

  p->N = p->B;
  if (p->has("cu_seqlens")) {
    const NpyArray& cu = p->at("cu_seqlens");
    if (cu.ndim() != 1 || cu.shape[0] < 2) return "cu_seqlens: expected a 1-D array of N+1 >= 2 offsets, got " + cu.shape_string();
    if (p->B != 1) return "cu_seqlens: packed (varlen) inputs need B = 1, q has B = " + std::to_string(p->B);
    p->N = cu.shape[0] - 1;
    for (int64_t i = 0; i < cu.size(); ++i) {
      const int64_t c = cu.type == NpyType::kI32 ? cu.data_as<int32_t>()[i] : cu.data_as<int64_t>()[i];
      const int64_t prev = i == 0 ? 0 : (cu.type == NpyType::kI32 ? cu.data_as<int32_t>()[i - 1] : cu.data_as<int64_t>()[i - 1]);
      if ((i == 0 && c != 0) || c < prev || (i + 1 == cu.size() && c != p->T))
        return "cu_seqlens: must start at 0, never decrease and end at T = " + std::to_string(p->T);
    }
  }

  const std::vector<int64_t> tok_q = {p->B, p->T, p->Hq, p->D}, tok_kv = {p->B, p->T, p->Hkv, p->D},
                             scal = {p->B, p->T, p->Hq}, state = {p->N, p->Hq, p->D, p->D};
  auto expect = [&](const char* name, const std::vector<int64_t>& shape, const char* layout) -> std::string {
    if (!p->has(name)) return std::string();
    if (p->at(name).shape != shape)
      return std::string(name) + ": expected " + layout + " = " + shape_of(shape) + ", got " + p->at(name).shape_string();
    return std::string();
  };
  std::string e;
  if (!(e = expect("v", tok_kv, "[B,T,Hkv,D]")).empty()) return e;
  for (const char* n : {"alpha", "g", "f", "beta", "nu"})
    if (!(e = expect(n, scal, "[B,T,Hq]")).empty()) return e;
  for (const char* n : {"do", "x"})
    if (!(e = expect(n, tok_q, "[B,T,Hq,D]")).empty()) return e;
  for (const char* n : {"h0", "s0", "dHT", "dST"})
    if (!(e = expect(n, state, "[N,Hq,D,D]")).empty()) return e;

  if (mode == gt::RunMode::kDecode) {
    const NpyArray& ph = p->at("pool_H");
    if (ph.ndim() != 4 || ph.shape[0] < 1 || ph.shape[1] != p->Hq || ph.shape[2] != p->D || ph.shape[3] != p->D)
      return "pool_H: expected [P," + std::to_string(p->Hq) + "," + std::to_string(p->D) + "," + std::to_string(p->D) +
             "], got " + ph.shape_string();
    p->P = ph.shape[0];
    if (!(e = expect("pool_S", ph.shape, "[P,Hq,D,D]")).empty()) return e;
    if (!(e = expect("slots", {p->N}, "[N]")).empty()) return e;
    if (!(e = expect("has_initial_state", {p->N}, "[N]")).empty()) return e;
    const NpyArray& sl = p->at("slots");
    for (int64_t i = 0; i < p->N; ++i) {
      const int64_t s = sl.type == NpyType::kI32 ? sl.data_as<int32_t>()[i] : sl.data_as<int64_t>()[i];
      if (s != p->cfg.pad_slot && (s < 0 || s >= p->P))
        return "slots[" + std::to_string(i) + "] = " + std::to_string(s) + " is outside the pool [0, " +
               std::to_string(p->P) + ")";
    }
  }
  return std::string();
}

// --dtype: token data to the dtype; gates, saved nu and states to fp32 (fp64 when casting to fp64).
void cast_inputs(gt::Problem* p, gka::DType to) {
  static const char* token_names[] = {"q", "k", "v", "alpha", "beta", "do", "x"};
  const NpyType tok = gt::dtype_to_npy(to), wide = to == gka::DType::kFP64 ? NpyType::kF64 : NpyType::kF32;
  for (auto& kv : p->in) {
    if (!gt::npy_is_float(kv.second.type)) continue;
    const bool is_token = std::find(std::begin(token_names), std::end(token_names), kv.first) != std::end(token_names);
    kv.second = gt::convert_float_array(kv.second, is_token ? tok : wide);
  }
}

// ---- the float64 reference backend --------------------------------------------------------

// Every float input as contiguous float64, plus the views the argument structs need.
struct Reference64 {
  std::map<std::string, std::vector<double>> f64;
  const gt::Problem& p;

  explicit Reference64(const gt::Problem& prob) : p(prob) {
    for (const auto& kv : p.in)
      if (gt::npy_is_float(kv.second.type)) f64[kv.first] = gt::to_double_vector(kv.second);
  }
  const double* ptr(const std::string& n) const {
    auto it = f64.find(n);
    return it == f64.end() ? nullptr : it->second.data();
  }
  gka::TokenTensor token(const std::string& n, int64_t heads, int64_t width) const {
    const double* d = ptr(n);
    return d ? gka::TokenTensor::contiguous(d, gka::DType::kFP64, p.T, heads, width) : gka::TokenTensor{};
  }
  gka::StateTensor state(const std::string& n) const {
    const double* d = ptr(n);
    return d ? gka::StateTensor::contiguous(d, gka::DType::kFP64, p.Hq, p.D) : gka::StateTensor{};
  }
  gka::ProblemShape shape() const {
    gka::ProblemShape s;
    s.batch = p.B;
    s.seqlen = p.T;
    s.heads_q = p.Hq;
    s.heads_kv = p.Hkv;
    s.head_dim = p.D;
    if (p.has("cu_seqlens")) {
      const NpyArray& cu = p.at("cu_seqlens");
      s.cu_seqlens.data = cu.data();
      s.cu_seqlens.host_data = cu.data();
      s.cu_seqlens.type = cu.type == NpyType::kI32 ? gka::IndexType::kInt32 : gka::IndexType::kInt64;
      s.cu_seqlens.num_seqs = cu.size() - 1;
    }
    return s;
  }
  // ForwardArgs, BackwardArgs or DecodeArgs with the shape, inputs and options filled in.
  template <class Args>
  Args args(bool with_states) const {
    Args a;
    a.shape = shape();
    a.in = inputs(with_states);
    a.options = p.cfg.options;
    return a;
  }
  gka::OperatorInputs inputs(bool with_states) const {
    gka::OperatorInputs in;
    in.q = token("q", p.Hq, p.D);
    in.k = token("k", p.Hkv, p.D);
    in.v = token("v", p.Hkv, p.D);
    in.alpha = token("alpha", p.Hq, 1);
    in.g = token("g", p.Hq, 1);
    in.f = token("f", p.Hq, 1);
    if (p.cfg.options.fuse_beta) in.beta = token("beta", p.Hq, 1);
    if (with_states) {
      in.h0 = state("h0");
      in.s0 = state("s0");
    }
    return in;
  }
};

gka::reference::ReferenceOptions reference_options(const gt::Problem& p) {
  gka::reference::ReferenceOptions o;
  o.method = p.cfg.exact_solve ? gka::reference::SolveMethod::kExact : gka::reference::SolveMethod::kChebyshev;
  o.schedule = p.cfg.chunked ? gka::reference::Schedule::kChunked : gka::reference::Schedule::kSequential;
  return o;
}

// The float64 result arrays of one reference run, named as the cases name them and allocated
// (zeroed) as the run asks for them; handed to the caller in that order.
class ResultArrays {
 public:
  explicit ResultArrays(const gt::Problem& p) : p_(p) {}
  // [B, T, heads, width] ([B, T, heads] for width 1).
  gka::TokenTensor token(const std::string& name, int64_t heads, int64_t width) {
    std::vector<int64_t> shape = {p_.B, p_.T, heads};
    if (width != 1) shape.push_back(width);
    NpyArray& a = add(name, NpyArray::zeros(NpyType::kF64, shape));
    return gka::TokenTensor::contiguous(a.data(), gka::DType::kFP64, p_.T, heads, width);
  }
  // [rows, Hq, D, D]: N per-sequence states, or a pool of P slots.
  gka::StateTensor state(const std::string& name, int64_t rows) {
    return state_over(add(name, NpyArray::zeros(NpyType::kF64, {rows, p_.Hq, p_.D, p_.D})));
  }
  // An input array converted to float64 that the run updates in place (a state pool).
  gka::StateTensor state_from(const std::string& name, const NpyArray& initial) {
    return state_over(add(name, gt::convert_float_array(initial, NpyType::kF64)));
  }
  void move_to(gt::Outputs* out) {
    for (gt::NamedArray& a : arrays_) out->push_back(std::move(a));
    arrays_.clear();
  }

 private:
  NpyArray& add(const std::string& name, NpyArray a) {
    arrays_.push_back({name, std::move(a)});
    return arrays_.back().array;
  }
  gka::StateTensor state_over(NpyArray& a) const {
    return gka::StateTensor::contiguous(a.data(), gka::DType::kFP64, p_.Hq, p_.D);
  }
  const gt::Problem& p_;
  std::list<gt::NamedArray> arrays_;  // stable addresses: the argument structs point into them
};

gka::Result reference_forward(const gt::Problem& p, gt::Outputs* out) {
  const Reference64 r(p);
  ResultArrays res(p);
  gka::ForwardArgs a = r.args<gka::ForwardArgs>(true);
  a.o = res.token("o", p.Hq, p.D);
  a.x = res.token("x", p.Hq, p.D);
  a.nu = res.token("nu", p.Hq, 1);
  a.ht = res.state("H_T", p.N);
  a.st = res.state("S_T", p.N);
  GKA_RETURN_IF_ERROR(gka::reference::forward<double>(a, reference_options(p)));
  res.move_to(out);
  return gka::Result::success();
}

gka::Result reference_backward(const gt::Problem& p, gt::Outputs* out) {
  const Reference64 r(p);
  ResultArrays res(p);
  gka::BackwardArgs a = r.args<gka::BackwardArgs>(true);
  a.bp_lambda = p.cfg.bp_lambda;
  a.x = r.token("x", p.Hq, p.D);
  a.nu = r.token("nu", p.Hq, 1);
  a.d_o = r.token("do", p.Hq, p.D);
  a.d_ht = r.state("dHT");
  a.d_st = r.state("dST");
  // A gradient is returned for every input given (and dbeta with fuse_beta).
  a.dq = res.token("dq", p.Hq, p.D);
  a.dk = res.token("dk", p.Hkv, p.D);
  a.dv = res.token("dv", p.Hkv, p.D);
  if (a.in.alpha.present()) a.dalpha = res.token("dalpha", p.Hq, 1);
  if (a.in.g.present()) a.dg = res.token("dg", p.Hq, 1);
  if (a.in.f.present()) a.df = res.token("df", p.Hq, 1);
  if (p.cfg.options.fuse_beta) a.dbeta = res.token("dbeta", p.Hq, 1);
  if (a.in.h0.present()) a.dh0 = res.state("dh0", p.N);
  if (a.in.s0.present()) a.ds0 = res.state("ds0", p.N);
  GKA_RETURN_IF_ERROR(gka::reference::backward<double>(a, reference_options(p)));
  res.move_to(out);
  return gka::Result::success();
}

gka::Result reference_decode(const gt::Problem& p, gt::Outputs* out) {
  const Reference64 r(p);
  ResultArrays res(p);
  gka::DecodeArgs a = r.args<gka::DecodeArgs>(false);
  a.o = res.token("o", p.Hq, p.D);
  a.pool.h = res.state_from("pool_H_out", p.at("pool_H"));
  a.pool.s = res.state_from("pool_S_out", p.at("pool_S"));
  a.pool.num_slots = p.P;
  const NpyArray& slots = p.at("slots");
  a.pool.read_slots = slots.data();
  a.pool.write_slots = slots.data();
  a.pool.host_read_slots = slots.data();
  a.pool.host_write_slots = slots.data();
  a.pool.slot_type = slots.type == NpyType::kI32 ? gka::IndexType::kInt32 : gka::IndexType::kInt64;
  a.pool.pad_slot = p.cfg.pad_slot;
  if (p.has("has_initial_state")) a.pool.has_initial_state = static_cast<const uint8_t*>(p.at("has_initial_state").data());
  GKA_RETURN_IF_ERROR(gka::reference::decode<double>(a, reference_options(p)));
  res.move_to(out);
  return gka::Result::success();
}

gka::Result reference_run(const gt::Problem& p, gt::Outputs* out) {
  switch (p.cfg.mode) {
    case gt::RunMode::kForward: return reference_forward(p, out);
    case gt::RunMode::kBackward: return reference_backward(p, out);
    case gt::RunMode::kDecode: return reference_decode(p, out);
  }
  return gka::Result(gka::Status::kErrorNotSupported, "unknown mode");
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cl;
  const std::string perr = parse_command_line(argc, argv, &cl);
  if (perr == "help") {
    usage(stdout);
    return kExitOk;
  }
  if (!perr.empty()) {
    std::fprintf(stderr, "gka-run: %s\n\n", perr.c_str());
    usage(stderr);
    return kExitBadInput;
  }

  gt::Problem p;
  p.cfg = cl.cfg;
  std::string err = load_inputs(cl, &p);
  if (err.empty()) err = check_inputs(&p);
  if (!err.empty()) {
    std::fprintf(stderr, "gka-run: %s\n", err.c_str());
    return kExitBadInput;
  }
  if (cl.cast) cast_inputs(&p, cl.cast_to);
  if (p.has("beta") && !p.cfg.options.fuse_beta)
    std::printf("gka-run: note: beta is ignored without --fuse-beta\n");
  if (p.cfg.mode == gt::RunMode::kBackward && (p.has("x") || p.has("nu")))
    std::printf("gka-run: note: using the saved%s%s given as inputs (not recomputed)\n", p.has("x") ? " x" : "",
                p.has("nu") ? " nu" : "");

  // ---- pick the backend ----
  bool use_gpu = false;
  std::string reason;
  if (cl.backend == "reference") {
    reason = "requested with --backend reference";
  } else {
    const gt::GpuProbe probe = gt::gpu_probe();
    std::string why;
    const bool ref_only = p.cfg.exact_solve || p.cfg.chunked;
    const bool supported = probe.usable && !ref_only && gt::gpu_supports(p, &why);
    if (!probe.usable) why = probe.why;
    else if (ref_only) why = "--exact-solve / --schedule are reference-only";
    if (cl.backend == "gpu") {
      if (!supported) {
        std::fprintf(stderr, "gka-run: GPU backend not available: %s\n", why.c_str());
        return kExitNoBackend;
      }
      use_gpu = true;
      reason = "requested with --backend gpu (" + probe.why + ")";
    } else if (supported) {
      use_gpu = true;
      reason = "auto: " + probe.why;
    } else {
      reason = "auto: " + why;
    }
  }
  const char* backend_name = use_gpu ? "gpu" : "reference-fp64";
  std::printf("gka-run: %s B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld N=%lld%s num_iter=%d ratio=%g scale=%g chunk=%d\n",
              gt::run_mode_name(p.cfg.mode), static_cast<long long>(p.B), static_cast<long long>(p.T),
              static_cast<long long>(p.Hq), static_cast<long long>(p.Hkv), static_cast<long long>(p.D),
              static_cast<long long>(p.N), p.has("cu_seqlens") ? " (varlen)" : "", p.cfg.options.num_iter,
              p.cfg.options.ridge_ratio, p.cfg.options.resolved_scale(p.D), p.cfg.options.chunk_size);
  if (use_gpu)
    std::printf("gka-run: backend: GPU (%s)\n", reason.c_str());
  else
    std::printf("gka-run: backend: CPU float64 reference, %s schedule, %s solve (%s)\n",
                p.cfg.chunked ? "chunked" : "sequential", p.cfg.exact_solve ? "exact" : "Chebyshev", reason.c_str());

  gt::Outputs outputs;
  const auto t0 = std::chrono::steady_clock::now();
  const gka::Result res = use_gpu ? gt::gpu_run(p, &outputs) : reference_run(p, &outputs);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!res.ok()) {
    std::fprintf(stderr, "gka-run: %s %s failed: %s\n", backend_name, gt::run_mode_name(p.cfg.mode), res.what().c_str());
    return kExitOperator;
  }
  std::printf("gka-run: %s took %.3f ms%s\n", gt::run_mode_name(p.cfg.mode), ms,
              use_gpu ? " (including CUDA start-up and host<->device copies)" : "");

  std::error_code ec;
  std::filesystem::create_directories(cl.out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "gka-run: --out %s: cannot create the directory: %s\n", cl.out_dir.c_str(), ec.message().c_str());
    return kExitBadInput;
  }
  for (const gt::NamedArray& o : outputs) {
    const std::string path = cl.out_dir + "/" + o.name + ".npy";
    const std::string werr = gt::write_npy(path, o.array);
    if (!werr.empty()) {
      std::fprintf(stderr, "gka-run: %s\n", werr.c_str());
      return kExitBadInput;
    }
    std::printf("%-10s %-16s %-13s backend=%s -> %s\n", o.name.c_str(), o.array.shape_string().c_str(),
                gt::npy_type_name(o.array.type), backend_name, path.c_str());
  }
  return kExitOk;
}
