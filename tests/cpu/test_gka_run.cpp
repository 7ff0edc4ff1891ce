// tools/npy.h and the gka-run executable: .npy round trips and rejections, then gka-run on golden
// cases (float64 reference vs the independent float64 oracle: relative L2 <= 1e-9).
#include <sys/wait.h>
#include <unistd.h>

#include "common/catch.h"
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/golden.h"
#include "gka/numeric/host_convert.h"
#include "npy.h"

namespace fs = std::filesystem;
using gka::tools::NpyArray;
using gka::tools::NpyType;

namespace {

const std::string kCases = GKA_CASES_DIR;
const std::string kRunExe = GKA_RUN_EXE;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("gka_test_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::vector<unsigned char> file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void put_file(const std::string& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A complete .npy image with the given raw header dict and data bytes (version 1.0).
std::vector<unsigned char> npy_image(const std::string& dict, size_t data_bytes, unsigned char version = 1) {
  std::vector<unsigned char> b = {0x93, 'N', 'U', 'M', 'P', 'Y', version, 0};
  std::string h = dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  b.push_back(static_cast<unsigned char>(h.size() & 0xff));
  b.push_back(static_cast<unsigned char>(h.size() >> 8));
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data_bytes, 0);
  return b;
}

bool have_cases() { return fs::is_directory(kCases); }

// --num-iter, --ratio and --scale as the case's case.json gives them.
std::string solver_flags(const std::string& dir) {
  const fs::path path(dir);
  gka_test::GoldenCase c;
  const std::string err = gka_test::load_golden_case(path.parent_path().string(), path.filename().string(), &c);
  INFO(err);
  REQUIRE(err.empty());
  std::ostringstream s;
  s.precision(17);
  s << " --num-iter " << c.integer("num_iter") << " --ratio " << c.number("ratio") << " --scale " << c.number("scale");
  return s.str();
}

// Runs gka-run with `args`, output to `log`; returns its exit status (-1 if it did not exit).
int run_tool(const std::string& args, const std::string& log) {
  const std::string cmd = "\"" + kRunExe + "\" " + args + " > \"" + log + "\" 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

std::string read_text(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<double> load_f64(const std::string& path) {
  NpyArray a;
  const std::string err = gka::tools::read_npy(path, &a);
  INFO(err);
  REQUIRE(err.empty());
  REQUIRE(a.type == NpyType::kF64);
  const double* p = a.data_as<double>();
  return std::vector<double>(p, p + a.size());
}

// Every listed output of gka-run (in out_dir/<name>.npy) against the case's <expected>.npy.
void compare_outputs(const std::string& case_dir, const std::string& out_dir,
                     const std::vector<std::pair<std::string, std::string>>& pairs, double tol = 1e-9) {
  for (const auto& pr : pairs) {
    const std::vector<double> got = load_f64(out_dir + "/" + pr.first + ".npy");
    const std::vector<double> want = load_f64(case_dir + "/" + pr.second + ".npy");
    const double err = gka_test::rel_error(got, want);
    INFO(pr.first << " vs " << pr.second << ": relative L2 error " << err);
    CHECK(err <= tol);
  }
}

#define GKA_RUN_REQUIRE_TOOL()                                                              \
  do {                                                                                      \
    if (kRunExe.empty()) {                                                                  \
      WARN("SKIPPED: gka-run was not built (GKA_BUILD_EXAMPLES=OFF); GKA_RUN_EXE is empty"); \
      return;                                                                               \
    }                                                                                       \
    if (!have_cases()) {                                                                    \
      WARN("SKIPPED: golden cases not found at " << kCases);                                \
      return;                                                                               \
    }                                                                                       \
  } while (0)

}  // namespace

// ---- tools/npy.h -----------------------------------------------------------------------------

TEST_CASE("npy: write then read is bit-exact for every dtype and shape", "[cpu][tools]") {
  TempDir dir("npy_roundtrip");
  const NpyType types[] = {NpyType::kF64, NpyType::kF32, NpyType::kF16, NpyType::kU16,
                           NpyType::kI32, NpyType::kI64, NpyType::kBool, NpyType::kU8};
  const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {7}, {3, 5}, {2, 0, 4}, {1, 65, 2, 32}};
  std::mt19937_64 rng(7);
  for (NpyType t : types) {
    for (const auto& shape : shapes) {
      NpyArray a = NpyArray::zeros(t, shape);
      // Arbitrary bit patterns (NaNs, infinities, subnormals included); bool stays 0/1.
      for (auto& byte : a.bytes) byte = static_cast<unsigned char>(t == NpyType::kBool ? rng() & 1 : rng());
      const std::string path = dir / (std::string("a") + std::to_string(static_cast<int>(t)) + "_" +
                                      std::to_string(shape.size()) + ".npy");
      INFO(gka::tools::npy_descr(t) << " shape " << a.shape_string());
      REQUIRE(gka::tools::write_npy(path, a).empty());
      const std::vector<unsigned char> img = file_bytes(path);
      REQUIRE(img.size() >= 64);
      CHECK(img[6] == 1);                             // version 1.0
      CHECK((img.size() - a.bytes.size()) % 64 == 0);  // data aligned like NumPy's
      NpyArray b;
      REQUIRE(gka::tools::read_npy(path, &b).empty());
      CHECK(b.type == t);
      CHECK(b.shape == shape);
      CHECK(b.bytes == a.bytes);
    }
  }
}

TEST_CASE("npy: typed access, conversions and NumPy-written golden files", "[cpu][tools]") {
  NpyArray a = NpyArray::zeros(NpyType::kF32, {2, 3});
  CHECK(a.data_as<float>() != nullptr);
  CHECK(a.data_as<double>() == nullptr);
  CHECK(a.size() == 6);
  CHECK(a.shape_string() == "[2,3]");

  // bf16 stored as '<u2' keeps its bits.
  NpyArray h = NpyArray::zeros(NpyType::kU16, {3});
  h.data_as<uint16_t>()[0] = gka::double_to_bf16_bits(1.5);
  h.data_as<uint16_t>()[1] = gka::double_to_bf16_bits(-0.1);
  h.data_as<uint16_t>()[2] = 0x7fc1;  // a NaN payload
  std::vector<unsigned char> img;
  REQUIRE(gka::tools::serialize_npy(h, &img).empty());
  NpyArray back;
  REQUIRE(gka::tools::parse_npy(img.data(), img.size(), &back).empty());
  CHECK(back.type == NpyType::kU16);
  CHECK(back.bytes == h.bytes);
  CHECK(gka::bf16_bits_to_float(back.data_as<uint16_t>()[0]) == 1.5f);

  // A large header switches to version 2.0.
  std::vector<int64_t> many(30000, 1);  // "1, " x 30000 > 65535 header bytes
  NpyArray big = NpyArray::zeros(NpyType::kU8, many);
  REQUIRE(gka::tools::serialize_npy(big, &img).empty());
  CHECK(img[6] == 2);
  REQUIRE(gka::tools::parse_npy(img.data(), img.size(), &back).empty());
  CHECK(back.shape == many);

  if (!have_cases()) {
    WARN("SKIPPED (golden-file part): golden cases not found at " << kCases);
    return;
  }
  NpyArray q, slots, his;
  REQUIRE(gka::tools::read_npy(kCases + "/init_t65_d32_h2/q.npy", &q).empty());
  CHECK(q.type == NpyType::kF64);
  CHECK(q.shape == std::vector<int64_t>{1, 65, 2, 32});
  REQUIRE(gka::tools::read_npy(kCases + "/decode_varlen_iter5_ratio0.1/slots.npy", &slots).empty());
  CHECK(slots.type == NpyType::kI64);
  CHECK(slots.shape == std::vector<int64_t>{3});
  REQUIRE(gka::tools::read_npy(kCases + "/decode_varlen_iter5_ratio0.1/has_initial_state.npy", &his).empty());
  CHECK(his.type == NpyType::kBool);
  // Re-serialising a NumPy file and reading it back gives the same array.
  REQUIRE(gka::tools::serialize_npy(q, &img).empty());
  REQUIRE(gka::tools::parse_npy(img.data(), img.size(), &back).empty());
  CHECK(back.bytes == q.bytes);
  CHECK(back.shape == q.shape);
}

TEST_CASE("npy: malformed or unsupported files are rejected with a message", "[cpu][tools]") {
  TempDir dir("npy_bad");
  struct Bad {
    const char* what;
    std::vector<unsigned char> image;
    const char* expect;  // a substring of the error
  };
  const std::string ok_dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
  std::vector<unsigned char> good = npy_image(ok_dict, 48);
  std::vector<unsigned char> bad_magic = good;
  bad_magic[1] = 'X';
  std::vector<unsigned char> bad_version = good;
  bad_version[6] = 9;
  std::vector<unsigned char> truncated_header(good.begin(), good.begin() + 40);
  std::vector<unsigned char> truncated_data(good.begin(), good.end() - 8);
  std::vector<unsigned char> extra = good;
  extra.push_back(0);
  std::vector<unsigned char> bad_bool = npy_image("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 2);
  bad_bool.back() = 2;
  const std::vector<Bad> cases = {
      {"empty file", {}, "not a .npy"},
      {"bad magic", bad_magic, "magic"},
      {"unknown version", bad_version, "version"},
      {"truncated header", truncated_header, "truncated"},
      {"truncated data", truncated_data, "truncated data"},
      {"trailing bytes", extra, "unexpected bytes"},
      {"fortran order", npy_image("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", 48), "fortran_order"},
      {"big endian", npy_image("{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }", 48), "big-endian"},
      {"complex dtype", npy_image("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 32), "unsupported dtype"},
      {"structured dtype", npy_image("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }", 16), "descr"},
      {"missing shape", npy_image("{'descr': '<f8', 'fortran_order': False, }", 8), "lacks"},
      {"negative dim", npy_image("{'descr': '<f8', 'fortran_order': False, 'shape': (-2, 3), }", 0), "shape"},
      {"non-integer dim", npy_image("{'descr': '<f8', 'fortran_order': False, 'shape': (2.5,), }", 0), "shape"},
      {"unknown key", npy_image("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1, }", 8), "unexpected key"},
      {"not a dict", npy_image("['descr', '<f8']", 8), "'{'"},
      {"bool byte > 1", bad_bool, "bool"},
  };
  for (const Bad& b : cases) {
    INFO(b.what);
    const std::string path = dir / "bad.npy";
    put_file(path, b.image);
    NpyArray a;
    const std::string err = gka::tools::read_npy(path, &a);
    INFO("error: " << err);
    CHECK(!err.empty());
    CHECK(err.find(b.expect) != std::string::npos);
  }
  NpyArray a;
  CHECK(gka::tools::read_npy(dir / "does_not_exist.npy", &a).find("cannot open") != std::string::npos);
  put_file(dir / "good.npy", good);
  CHECK(gka::tools::read_npy(dir / "good.npy", &a).empty());
  // The writer refuses an array whose bytes do not match its shape.
  NpyArray inconsistent = NpyArray::zeros(NpyType::kF32, {4});
  inconsistent.bytes.resize(3);
  CHECK(!gka::tools::write_npy(dir / "x.npy", inconsistent).empty());
}

// ---- gka-run on golden cases -------------------------------------------------------------------

TEST_CASE("gka-run: forward reproduces a golden case", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_fwd");
  for (const char* name : {"init_t65_d32_h2", "varlen_gqa_sepf_iter5"}) {
    const std::string c = kCases + "/" + name;
    INFO("case " << name);
    const std::string o = out / name;
    REQUIRE(run_tool("forward --in " + c + " --out " + o + solver_flags(c) + " --backend reference", out / "log.txt") == 0);
    INFO(read_text(out / "log.txt"));
    CHECK(read_text(out / "log.txt").find("backend: CPU float64 reference") != std::string::npos);
    compare_outputs(c, o, {{"o", "o"}, {"x", "x"}, {"nu", "nu"}, {"H_T", "H_T"}, {"S_T", "S_T"}});
  }
  // The chunk-wise schedule computes the same function.
  const std::string c = kCases + "/init_t65_d32_h2";
  REQUIRE(run_tool("forward --in " + c + " --out " + (out / "chunked") + solver_flags(c) +
                       " --schedule chunked --chunk 16",
                   out / "log.txt") == 0);
  compare_outputs(c, out / "chunked", {{"o", "o"}, {"H_T", "H_T"}, {"S_T", "S_T"}});
  // Raw (un-normalised, un-scaled) q, k, v with the fused L2 norm and beta scaling (spec 12.3).
  std::string args = "forward --out " + (out / "fused") + solver_flags(c) + " --l2norm-qk --fuse-beta";
  for (const char* n : {"alpha", "g", "h0", "s0", "beta"}) args += std::string(" ") + n + "=" + c + "/" + n + ".npy";
  for (const char* n : {"q", "k", "v"}) args += std::string(" ") + n + "=" + c + "/raw_" + n + ".npy";
  const int rc = run_tool(args, out / "log.txt");
  INFO(read_text(out / "log.txt"));
  REQUIRE(rc == 0);
  compare_outputs(c, out / "fused", {{"o", "o"}, {"H_T", "H_T"}, {"S_T", "S_T"}});
}

TEST_CASE("gka-run: backward reproduces a golden case, with and without bp_lambda", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_bwd");
  const std::string c = kCases + "/init_t65_d32_h2";
  const int rc = run_tool("backward --in " + c + " --out " + (out / "bp") + solver_flags(c), out / "log.txt");
  INFO(read_text(out / "log.txt"));
  REQUIRE(rc == 0);
  compare_outputs(c, out / "bp",
                  {{"dq", "dq"}, {"dk", "dk"}, {"dv", "dv"}, {"dalpha", "dalpha"}, {"dg", "dg"}, {"dh0", "dh0"},
                   {"ds0", "ds0"}});
  CHECK(!fs::exists(out / "bp/df.npy"));  // no f input, so no df output

  // Explicit name=path inputs (no --in), x and nu recomputed, bp_lambda off.
  std::string args = "backward --out " + (out / "nolam") + solver_flags(c) + " --no-bp-lambda";
  for (const char* n : {"q", "k", "v", "alpha", "g", "h0", "s0", "do", "dHT", "dST"})
    args += std::string(" ") + n + "=" + c + "/" + n + ".npy";
  const int rc2 = run_tool(args, out / "log2.txt");
  INFO(read_text(out / "log2.txt"));
  REQUIRE(rc2 == 0);
  compare_outputs(c, out / "nolam", {{"dk", "nolam_dk"}, {"dg", "nolam_dg"}, {"dh0", "nolam_dh0"}, {"dq", "dq"},
                                     {"dv", "dv"}, {"ds0", "ds0"}});

  // The chunk-wise schedule (spec 4.6) with a partial last chunk, on a varlen GQA case with separate f.
  const std::string cv = kCases + "/varlen_gqa_sepf_iter5";
  const int rc3 = run_tool("backward --in " + cv + " --out " + (out / "chunked") + solver_flags(cv) +
                               " --schedule chunked --chunk 16",
                           out / "log3.txt");
  INFO(read_text(out / "log3.txt"));
  REQUIRE(rc3 == 0);
  compare_outputs(cv, out / "chunked", {{"dq", "dq"}, {"dk", "dk"}, {"dv", "dv"}, {"dalpha", "dalpha"},
                                        {"dg", "dg"}, {"df", "df"}, {"dh0", "dh0"}, {"ds0", "ds0"}});
}

TEST_CASE("gka-run: decode reproduces golden cases (m tokens, GQA, varlen, pool slots)", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_dec");
  for (const char* name : {"decode_m1_d32_h2", "decode_m4_gqa_sepf_d16", "decode_varlen_iter5_ratio0.1"}) {
    const std::string c = kCases + "/" + name;
    const std::string o = out / name;
    const int rc = run_tool("decode --in " + c + " --out " + o + solver_flags(c), out / "log.txt");
    INFO("case " << name << "\n" << read_text(out / "log.txt"));
    REQUIRE(rc == 0);
    compare_outputs(c, o, {{"o", "o"}, {"pool_H_out", "pool_H_out"}, {"pool_S_out", "pool_S_out"}});
  }
}

TEST_CASE("gka-run: --dtype casts the inputs before the run", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_cast");
  const std::string c = kCases + "/t64_d32_h2";
  REQUIRE(run_tool("forward --in " + c + " --out " + (out / "fp32") + solver_flags(c) + " --dtype fp32", out / "log.txt") == 0);
  REQUIRE(run_tool("forward --in " + c + " --out " + (out / "bf16") + solver_flags(c) + " --dtype bf16", out / "log.txt") == 0);
  const std::vector<double> want = load_f64(c + "/o.npy");
  const double e32 = gka_test::rel_error(load_f64(out / "fp32/o.npy"), want);
  const double e16 = gka_test::rel_error(load_f64(out / "bf16/o.npy"), want);
  INFO("fp32-rounded inputs: " << e32 << ", bf16-rounded inputs: " << e16);
  CHECK(e32 > 0);  // the inputs really were rounded
  CHECK(e32 < 1e-5);  // fp32 rounding (6e-8) amplified by kappa(A) <= 51: ~3e-6 (observed 5e-8)
  CHECK(e16 > e32);
  CHECK(e16 < 0.2);
}

TEST_CASE("gka-run: bad input gives a message and a non-zero exit", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_bad");
  const std::string c = kCases + "/init_t65_d32_h2";
  const std::string log = out / "log.txt";
  struct Bad {
    std::string args, expect;
    int rc;
  };
  const std::vector<Bad> bad = {
      {"", "missing mode", 1},
      {"sideways --out " + (out / "o"), "unknown mode", 1},
      {"forward --in " + c, "--out DIR is required", 1},
      {"forward --out " + (out / "o") + " k=" + c + "/k.npy v=" + c + "/v.npy", "missing required input 'q'", 1},
      {"forward --in " + c + " --out " + (out / "o") + " g=" + c + "/q.npy", "g: expected [B,T,Hq]", 1},
      {"forward --in " + c + " --out " + (out / "o") + " h0=" + c + "/k.npy", "h0: expected [N,Hq,D,D]", 1},
      {"forward --in " + c + " --out " + (out / "o") + " q=" + kCases + "/decode_m1_d32_h2/slots.npy", "q: dtype int64", 1},
      {"forward --in " + c + " --out " + (out / "o") + " q=" + c + "/nope.npy", "cannot open", 1},
      {"forward --in " + c + " --out " + (out / "o") + " q=" + c + "/case.json", "not a .npy", 1},
      {"forward --in " + c + " --out " + (out / "o") + " --dtype fp8", "--dtype", 1},
      {"forward --in " + c + " --out " + (out / "o") + " --num-iter -3", "--num-iter", 1},
      {"forward --in " + c + " --out " + (out / "o") + " --ratio 0", "invalid ridge ratio", 3},
      {"forward --in " + c + " --out " + (out / "o") + " --chunk 48 --schedule chunked", "invalid chunk size", 3},
      {"forward --in " + c + " --out " + (out / "o") + " --bogus", "unknown option", 1},
      {"forward --in " + c + " --out " + (out / "o") + " zz=" + c + "/q.npy", "unknown input name", 1},
      {"backward --in " + kCases + "/decode_m1_d32_h2 --out " + (out / "o"), "missing required input 'do'", 1},
      {"decode --in " + c + " --out " + (out / "o"), "missing required input 'pool_H'", 1},
      {"decode --in " + kCases + "/decode_m1_d32_h2 --out " + (out / "o") + " slots=" + kCases +
           "/decode_varlen_iter5_ratio0.1/slots.npy",
       "slots: expected [N]", 1},
      {"forward --in " + kCases + "/varlen_gqa_sepf_iter5 --out " + (out / "o") + " cu_seqlens=" + kCases +
           "/decode_varlen_iter5_ratio0.1/cu_seqlens.npy",
       "cu_seqlens", 1},
  };
  for (const Bad& b : bad) {
    const int rc = run_tool(b.args, log);
    const std::string text = read_text(log);
    INFO("gka-run " << b.args << "\n-> exit " << rc << "\n" << text);
    CHECK(rc == b.rc);
    CHECK(text.find(b.expect) != std::string::npos);
  }
}

TEST_CASE("gka-run: --backend gpu fails clearly when the GPU cannot run the request", "[cpu][tools]") {
  GKA_RUN_REQUIRE_TOOL();
  TempDir out("run_gpu");
  const std::string c = kCases + "/init_t65_d32_h2";
  // float64 inputs at D = 32 are never GPU work, whatever the build and machine.
  const int rc = run_tool("forward --in " + c + " --out " + (out / "o") + " --backend gpu", out / "log.txt");
  const std::string text = read_text(out / "log.txt");
  INFO(text);
  CHECK(rc == 2);
  CHECK(text.find("GPU backend not available: ") != std::string::npos);
  // auto falls back to the reference and says why.
  REQUIRE(run_tool("forward --in " + c + " --out " + (out / "o") + " --backend auto", out / "log.txt") == 0);
  CHECK(read_text(out / "log.txt").find("backend: CPU float64 reference") != std::string::npos);
  CHECK(read_text(out / "log.txt").find("auto: ") != std::string::npos);
}
