// tests/common/golden.h: access to the golden cases of the independent float64 implementation
// (GKA_CASES_DIR, see its README.md): the case list, top-level scalar fields of case.json, and
// the .npy arrays (through tools/npy.h).
//
//   gka_test::GoldenCase c;
//   std::string err = gka_test::load_golden_case(dir, "t7_d32_h3", &c);
//   int64_t T = c.integer("T");   std::vector<double> q = c.f64("q");
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

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

inline std::string load_golden_case(const std::string& root, const std::string& name, GoldenCase* c) {
  c->dir = root + "/" + name;
  c->name = name;
  if (!read_text_file(c->dir + "/case.json", &c->json)) return c->dir + "/case.json: cannot read";
  return "";
}

}  // namespace gka_test
