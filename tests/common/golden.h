// tests/common/golden.h: access to the golden cases of the independent float64 implementation
// (GKA_CASES_DIR, see its README.md): the case list, top-level scalar fields of case.json, and
// the .npy arrays (through tools/npy.h), and a case's inputs as a gka_test::HostProblem.
//
//   gka_test::GoldenCase c;
//   std::string err = gka_test::load_golden_case(dir, "t7_d32_h3", &c);
//   int64_t T = c.integer("T");   std::vector<double> q = c.f64("q");
//   gka_test::HostProblem p = gka_test::golden_problem(c);   // then forward_args(p, ...) etc.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/random_inputs.h"
#include "gka/args.h"
#include "npy.h"

namespace gka_test {

inline bool read_text_file(const std::string& path, std::string* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[4096];
  size_t n;
  out->clear();
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  std::fclose(f);
  return true;
}

inline bool directory_exists(const std::string& path) {
  std::string ignored;
  return read_text_file(path + "/index.json", &ignored);
}

// The raw text of a top-level field of a JSON object ("2", "true", "null", "[0, 5, 69]",
// "\"cheb\""); empty when absent. Nested objects are skipped, so "H" finds the top-level head count
// and not conventions.H.
inline std::string json_field(const std::string& json, const std::string& key) {
  int depth = 0;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') {
      const size_t end = json.find('"', i + 1);
      if (end == std::string::npos) return "";
      size_t after = end + 1;
      while (after < json.size() && (json[after] == ' ' || json[after] == '\n')) ++after;
      if (depth == 1 && after < json.size() && json[after] == ':' && json.compare(i + 1, end - i - 1, key) == 0) {
        size_t v = after + 1;
        while (v < json.size() && (json[v] == ' ' || json[v] == '\n')) ++v;
        int d = 0;
        size_t e = v;
        for (; e < json.size(); ++e) {  // up to the comma or brace that closes the value
          const char x = json[e];
          if (x == '"') e = json.find('"', e + 1);
          else if (x == '[' || x == '{') ++d;
          else if ((x == ']' || x == '}') && d-- == 0) break;
          else if (x == ',' && d == 0) break;
        }
        std::string value = json.substr(v, e - v);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\n')) value.pop_back();
        return value;
      }
      i = end;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return "";
}

// The numbers of a JSON list "[0, 5, 69]".
inline std::vector<int64_t> json_int_list(const std::string& text) {
  std::vector<int64_t> out;
  const char* p = text.c_str();
  while (*p) {
    if ((*p >= '0' && *p <= '9') || *p == '-') {
      char* end;
      out.push_back(std::strtoll(p, &end, 10));
      p = end;
    } else {
      ++p;
    }
  }
  return out;
}

// The names listed under "cases" in index.json.
inline std::vector<std::string> golden_case_names(const std::string& dir) {
  std::string json;
  std::vector<std::string> names;
  if (!read_text_file(dir + "/index.json", &json)) return names;
  const std::string list = json_field(json, "cases");
  for (size_t i = list.find('"'); i != std::string::npos; i = list.find('"', i + 1)) {
    const size_t end = list.find('"', i + 1);
    names.push_back(list.substr(i + 1, end - i - 1));
    i = end;
  }
  return names;
}

struct GoldenCase {
  std::string dir, name, json;

  std::string field(const std::string& key) const { return json_field(json, key); }
  bool is_null(const std::string& key) const { const std::string v = field(key); return v.empty() || v == "null"; }
  bool flag(const std::string& key) const { return field(key) == "true"; }
  int64_t integer(const std::string& key) const { return std::strtoll(field(key).c_str(), nullptr, 10); }
  double number(const std::string& key) const { return std::strtod(field(key).c_str(), nullptr); }
  std::string text(const std::string& key) const {  // a string field without its quotes
    const std::string v = field(key);
    return v.size() >= 2 ? v.substr(1, v.size() - 2) : v;
  }
  // Whether the case lists the array `file` (without .npy) under "files".
  bool has(const std::string& file) const { return !json_field(field("files"), file).empty(); }

  // Reads <dir>/<file>.npy; the message is empty on success.
  std::string load(const std::string& file, gka::tools::NpyArray* a) const {
    return gka::tools::read_npy(dir + "/" + file + ".npy", a);
  }
  // The array as doubles / int64 / bytes (empty on any error; tests check the size they expect).
  std::vector<double> f64(const std::string& file) const {
    gka::tools::NpyArray a;
    if (!load(file, &a).empty() || !a.data_as<double>()) return {};
    return std::vector<double>(a.data_as<double>(), a.data_as<double>() + a.size());
  }
  std::vector<int64_t> i64(const std::string& file) const {
    gka::tools::NpyArray a;
    if (!load(file, &a).empty() || !a.data_as<int64_t>()) return {};
    return std::vector<int64_t>(a.data_as<int64_t>(), a.data_as<int64_t>() + a.size());
  }
  std::vector<uint8_t> bytes(const std::string& file) const {
    gka::tools::NpyArray a;
    if (!load(file, &a).empty() || !a.data_as<uint8_t>()) return {};
    return std::vector<uint8_t>(a.data_as<uint8_t>(), a.data_as<uint8_t>() + a.size());
  }
};

// A case's sizes and operator inputs (q, k, v, raw_q, raw_k, raw_v, beta, alpha, g, f, h0, s0 and
// cu_seqlens, each empty where the case has no such file). A decode case holds N_seq sequences of
// m tokens, or one packed row with cu_seqlens.
inline HostProblem golden_problem(const GoldenCase& c) {
  HostProblem p;
  ProblemSpec& s = p.spec;
  if (c.has("cu_seqlens")) s.cu_seqlens = c.i64("cu_seqlens");
  if (c.text("kind") == "decode") {
    s.B = s.cu_seqlens.empty() ? c.integer("N_seq") : 1;
    s.T = s.cu_seqlens.empty() ? c.integer("m") : s.cu_seqlens.back();
  } else {
    s.B = c.integer("B");
    s.T = c.integer("T");
  }
  s.Hq = c.integer("H");
  s.Hkv = c.integer("H_kv");
  s.D = c.integer("D");
  const struct { const char* file; std::vector<double> HostProblem::*array; } arrays[] = {
      {"q", &HostProblem::q},         {"k", &HostProblem::k},         {"v", &HostProblem::v},
      {"raw_q", &HostProblem::raw_q}, {"raw_k", &HostProblem::raw_k}, {"raw_v", &HostProblem::raw_v},
      {"beta", &HostProblem::beta},   {"alpha", &HostProblem::alpha}, {"g", &HostProblem::g},
      {"f", &HostProblem::f},         {"h0", &HostProblem::h0},       {"s0", &HostProblem::s0}};
  for (const auto& a : arrays)
    if (c.has(a.file)) p.*a.array = c.f64(a.file);
  s.alpha = !p.alpha.empty();
  s.g = !p.g.empty();
  s.separate_f = !p.f.empty();
  s.h0 = !p.h0.empty();
  s.s0 = !p.s0.empty();
  return p;
}

// num_iter, ratio and scale of a case; every other option at its default.
inline gka::SolverOptions golden_solver_options(const GoldenCase& c) {
  gka::SolverOptions o;
  o.num_iter = static_cast<int>(c.integer("num_iter"));
  o.ridge_ratio = c.number("ratio");
  o.scale = c.number("scale");
  return o;
}

inline std::string load_golden_case(const std::string& root, const std::string& name, GoldenCase* c) {
  c->dir = root + "/" + name;
  c->name = name;
  if (!read_text_file(c->dir + "/case.json", &c->json)) return c->dir + "/case.json: cannot read";
  return "";
}

// Every case of one kind ("forward_backward", "decode") listed in root/index.json, in its order.
struct GoldenCases {
  bool present = false;  // false: root has no index.json (the tests skip)
  std::string error;     // a listed case that cannot be read (the tests fail)
  std::vector<GoldenCase> cases;
};

inline GoldenCases load_golden_cases(const std::string& root, const std::string& kind) {
  GoldenCases out;
  out.present = directory_exists(root);
  for (const std::string& name : golden_case_names(root)) {
    GoldenCase c;
    out.error = load_golden_case(root, name, &c);
    if (!out.error.empty()) break;
    if (c.text("kind") == kind) out.cases.push_back(c);
  }
  return out;
}

}  // namespace gka_test

// In a TEST_CASE: declares `var`, the golden cases of `kind`; returns with a visible SKIPPED when
// GKA_CASES_DIR has no index.json, and fails when a listed case cannot be read.
#define GKA_GOLDEN_CASES_OR_SKIP(var, kind)                                                     \
  const gka_test::GoldenCases var = gka_test::load_golden_cases(GKA_CASES_DIR, kind);          \
  if (!var.present) {                                                                         \
    WARN("SKIPPED: golden cases not found at " << GKA_CASES_DIR << " (set -DGKA_CASES_DIR=...)"); \
    std::printf("SKIPPED: golden cases not found at %s\n", GKA_CASES_DIR);                    \
    return;                                                                                   \
  }                                                                                           \
  REQUIRE(var.error == "")
