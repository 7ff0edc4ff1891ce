// tools/npy.h: a small reader/writer for NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// Used by gka-run, the tests and the examples; not part of the installed library. Handles the
// dtypes the golden cases and gka-run exchange, all little-endian, C order only:
//   '<f8' float64, '<f4' float32, '<f2' float16, '<u2' uint16 (bf16 bit patterns by convention),
//   '<i4' int32, '<i8' int64, '|b1' bool, '|u1' uint8.
// Every function reports problems through its return value (an error message, empty on success);
// nothing throws, asserts or exits on bad input.
//
//   gka::tools::NpyArray a;
//   std::string err = gka::tools::read_npy("q.npy", &a);
//   if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); return 2; }
//   const double* q = a.data_as<double>();   // null unless a.type == NpyType::kF64
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace gka {
namespace tools {

enum class NpyType : int { kF64, kF32, kF16, kU16, kI32, kI64, kBool, kU8 };

inline int npy_itemsize(NpyType t) {
  switch (t) {
    case NpyType::kF64: case NpyType::kI64: return 8;
    case NpyType::kF32: case NpyType::kI32: return 4;
    case NpyType::kF16: case NpyType::kU16: return 2;
    case NpyType::kBool: case NpyType::kU8: return 1;
  }
  return 0;
}

// The descr string written to (and expected in) the header.
inline const char* npy_descr(NpyType t) {
  switch (t) {
    case NpyType::kF64: return "<f8";
    case NpyType::kF32: return "<f4";
    case NpyType::kF16: return "<f2";
    case NpyType::kU16: return "<u2";
    case NpyType::kI32: return "<i4";
    case NpyType::kI64: return "<i8";
    case NpyType::kBool: return "|b1";
    case NpyType::kU8: return "|u1";
  }
  return "?";
}

// Human-readable name: float64, float32, float16, bf16 (uint16), int32, int64, bool, uint8.
inline const char* npy_type_name(NpyType t) {
  switch (t) {
    case NpyType::kF64: return "float64";
    case NpyType::kF32: return "float32";
    case NpyType::kF16: return "float16";
    case NpyType::kU16: return "bf16(uint16)";
    case NpyType::kI32: return "int32";
    case NpyType::kI64: return "int64";
    case NpyType::kBool: return "bool";
    case NpyType::kU8: return "uint8";
  }
  return "?";
}

// Maps a descr to a type; '=' and '|' are accepted where NumPy would write them for one-byte types,
// big-endian ('>') and every other kind are rejected with a message.
inline bool npy_parse_descr(const std::string& descr, NpyType* out, std::string* error) {
  struct Entry { const char* a; const char* b; NpyType t; };
  static const Entry table[] = {
      {"<f8", "<f8", NpyType::kF64}, {"<f4", "<f4", NpyType::kF32}, {"<f2", "<f2", NpyType::kF16},
      {"<u2", "<u2", NpyType::kU16}, {"<i4", "<i4", NpyType::kI32}, {"<i8", "<i8", NpyType::kI64},
      {"|b1", "<b1", NpyType::kBool}, {"|u1", "<u1", NpyType::kU8}};
  for (const Entry& e : table) {
    if (descr == e.a || descr == e.b) {
      *out = e.t;
      return true;
    }
  }
  if (!descr.empty() && descr[0] == '>')
    *error = "big-endian dtype '" + descr + "' is not supported (only little-endian)";
  else
    *error = "unsupported dtype '" + descr +
             "' (supported: <f8 <f4 <f2 <u2(bf16) <i4 <i8 |b1 |u1)";
  return false;
}

struct NpyArray {
  NpyType type = NpyType::kF64;
  std::vector<int64_t> shape;       // empty = a scalar (one element)
  std::vector<unsigned char> bytes; // little-endian element data, C order

  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int ndim() const { return static_cast<int>(shape.size()); }
  int itemsize() const { return npy_itemsize(type); }
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }

  // Typed access; null when T does not match the stored type's width and kind.
  template <class T>
  const T* data_as() const { return matches<T>() ? reinterpret_cast<const T*>(bytes.data()) : nullptr; }
  template <class T>
  T* data_as() { return matches<T>() ? reinterpret_cast<T*>(bytes.data()) : nullptr; }

  // "[1,65,2,32]"
  std::string shape_string() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + "]";
  }

  // An array of `shape` and `type`, zero-filled.
  static NpyArray zeros(NpyType t, std::vector<int64_t> shp) {
    NpyArray a;
    a.type = t;
    a.shape = std::move(shp);
    a.bytes.assign(static_cast<size_t>(a.size()) * npy_itemsize(t), 0);
    return a;
  }

 private:
  template <class T>
  bool matches() const {
    switch (type) {
      case NpyType::kF64: return std::is_same<T, double>::value;
      case NpyType::kF32: return std::is_same<T, float>::value;
      case NpyType::kF16: case NpyType::kU16: return std::is_same<T, uint16_t>::value;
      case NpyType::kI32: return std::is_same<T, int32_t>::value;
      case NpyType::kI64: return std::is_same<T, int64_t>::value;
      case NpyType::kBool: case NpyType::kU8: return std::is_same<T, uint8_t>::value;
    }
    return false;
  }
};

namespace npy_detail {

inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char c;
  std::memcpy(&c, &probe, 1);
  return c == 1;
}

// A minimal parser for the header's Python dict literal:
//   {'descr': '<f8', 'fortran_order': False, 'shape': (1, 65, 2, 32), }
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& s) : s_(s) {}

  bool parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape, std::string* error) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    if (!eat('{')) return fail(error, "header does not start with '{'");
    for (;;) {
      skip_ws();
      if (eat('}')) break;
      std::string key;
      if (!parse_string(&key)) return fail(error, "expected a quoted key in the header dict");
      skip_ws();
      if (!eat(':')) return fail(error, "expected ':' after key '" + key + "'");
      skip_ws();
      if (key == "descr") {
        if (!parse_string(descr)) return fail(error, "'descr' is not a string (structured dtypes are not supported)");
        have_descr = true;
      } else if (key == "fortran_order") {
        if (match("True")) *fortran = true;
        else if (match("False")) *fortran = false;
        else return fail(error, "'fortran_order' is neither True nor False");
        have_fortran = true;
      } else if (key == "shape") {
        if (!parse_shape(shape, error)) return false;
        have_shape = true;
      } else {
        return fail(error, "unexpected key '" + key + "' in the header");
      }
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat('}')) break;
      return fail(error, "expected ',' or '}' in the header dict");
    }
    if (!have_descr || !have_fortran || !have_shape)
      return fail(error, "header lacks one of 'descr', 'fortran_order', 'shape'");
    skip_ws();
    if (pos_ != s_.size()) return fail(error, "trailing characters after the header dict");
    return true;
  }

 private:
  bool fail(std::string* error, const std::string& m) {
    *error = "malformed .npy header: " + m;
    return false;
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool match(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }
  bool parse_string(std::string* out) {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return false;
    const char quote = s_[pos_++];
    const size_t end = s_.find(quote, pos_);
    if (end == std::string::npos) return false;
    *out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return true;
  }
  bool parse_shape(std::vector<int64_t>* shape, std::string* error) {
    shape->clear();
    if (!eat('(')) return fail(error, "'shape' is not a tuple");
    for (;;) {
      skip_ws();
      if (eat(')')) return true;
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9')
        return fail(error, "'shape' holds something other than non-negative integers");
      int64_t v = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        const int digit = s_[pos_++] - '0';
        if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) return fail(error, "'shape' entry overflows int64");
        v = v * 10 + digit;
      }
      if (eat('L')) {}  // Python 2 long suffix
      shape->push_back(v);
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat(')')) return true;
      return fail(error, "expected ',' or ')' in 'shape'");
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

struct FileCloser {
  std::FILE* f;
  ~FileCloser() {
    if (f) std::fclose(f);
  }
};

}  // namespace npy_detail

// Parses a whole .npy file held in memory. `what` names the source in error messages.
inline std::string parse_npy(const unsigned char* buf, size_t len, NpyArray* out, const std::string& what = "buffer") {
  if (!npy_detail::host_is_little_endian()) return what + ": this reader supports little-endian hosts only";
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (len < 10 || std::memcmp(buf, magic, 6) != 0) return what + ": not a .npy file (bad magic string)";
  const int major = buf[6];
  size_t header_len = 0, prefix = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(buf[8]) | (static_cast<size_t>(buf[9]) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return what + ": truncated .npy preamble";
    header_len = static_cast<size_t>(buf[8]) | (static_cast<size_t>(buf[9]) << 8) |
                 (static_cast<size_t>(buf[10]) << 16) | (static_cast<size_t>(buf[11]) << 24);
    prefix = 12;
  } else {
    return what + ": unsupported .npy format version " + std::to_string(major) + "." + std::to_string(buf[7]);
  }
  if (header_len > len - prefix) return what + ": truncated .npy header";
  const std::string header(reinterpret_cast<const char*>(buf + prefix), header_len);

  std::string descr, error;
  bool fortran = false;
  std::vector<int64_t> shape;
  npy_detail::HeaderParser parser(header);
  if (!parser.parse(&descr, &fortran, &shape, &error)) return what + ": " + error;
  NpyType type;
  if (!npy_parse_descr(descr, &type, &error)) return what + ": " + error;
  if (fortran)
    return what + ": fortran_order=True is not supported; save the array in C order "
                  "(numpy.ascontiguousarray) before writing it";

  const int64_t item = npy_itemsize(type);
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / item / d) return what + ": shape too large";
    count *= d;
  }
  const size_t nbytes = static_cast<size_t>(count * item);
  const size_t data_off = prefix + header_len;
  if (len - data_off < nbytes)
    return what + ": truncated data (header promises " + std::to_string(nbytes) + " bytes, file has " +
           std::to_string(len - data_off) + ")";
  if (len - data_off > nbytes)
    return what + ": " + std::to_string(len - data_off - nbytes) + " unexpected bytes after the data";

  out->type = type;
  out->shape = std::move(shape);
  out->bytes.assign(buf + data_off, buf + data_off + nbytes);
  if (type == NpyType::kBool) {
    for (unsigned char c : out->bytes)
      if (c > 1) return what + ": bool array holds a byte other than 0 or 1";
  }
  return std::string();
}

inline std::string read_npy(const std::string& path, NpyArray* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return path + ": cannot open for reading";
  npy_detail::FileCloser closer{f};
  std::vector<unsigned char> buf;
  unsigned char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
  if (std::ferror(f)) return path + ": read error";
  return parse_npy(buf.data(), buf.size(), out, path);
}

// Serialises to the .npy byte stream: version 1.0 (2.0 if the header needs it), header padded with
// spaces and a newline so that the data starts at a multiple of 64 bytes, as NumPy writes it.
inline std::string serialize_npy(const NpyArray& a, std::vector<unsigned char>* out) {
  if (!npy_detail::host_is_little_endian()) return "this writer supports little-endian hosts only";
  for (int64_t d : a.shape)
    if (d < 0) return "negative dimension in shape " + a.shape_string();
  if (a.bytes.size() != static_cast<size_t>(a.size()) * a.itemsize())
    return "array holds " + std::to_string(a.bytes.size()) + " bytes, shape " + a.shape_string() + " of " +
           npy_type_name(a.type) + " needs " + std::to_string(a.size() * a.itemsize());
  std::string dict = std::string("{'descr': '") + npy_descr(a.type) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < a.shape.size(); ++i) {
    if (i > 0) dict += ", ";
    dict += std::to_string(a.shape[i]);
  }
  if (a.shape.size() == 1) dict += ",";  // a one-element tuple: (5,)
  dict += "), }";
  size_t prefix = 10;
  size_t total = prefix + dict.size() + 1;
  if ((total + 63) / 64 * 64 - prefix > 65535) {
    prefix = 12;
    total = prefix + dict.size() + 1;
  }
  const size_t padded = (total + 63) / 64 * 64;
  const size_t header_len = padded - prefix;
  dict.append(header_len - dict.size() - 1, ' ');
  dict.push_back('\n');

  out->clear();
  out->reserve(padded + a.bytes.size());
  const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  out->insert(out->end(), magic, magic + 6);
  out->push_back(prefix == 10 ? 1 : 2);
  out->push_back(0);
  for (size_t i = 0; i < prefix - 8; ++i) out->push_back(static_cast<unsigned char>((header_len >> (8 * i)) & 0xff));
  out->insert(out->end(), dict.begin(), dict.end());
  out->insert(out->end(), a.bytes.begin(), a.bytes.end());
  return std::string();
}

inline std::string write_npy(const std::string& path, const NpyArray& a) {
  std::vector<unsigned char> buf;
  std::string err = serialize_npy(a, &buf);
  if (!err.empty()) return path + ": " + err;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return path + ": cannot open for writing";
  const size_t n = std::fwrite(buf.data(), 1, buf.size(), f);
  const bool close_failed = std::fclose(f) != 0;
  if (n != buf.size() || close_failed) return path + ": write failed";
  return std::string();
}

// Convenience: wraps raw host data of `shape` into an array (copies) and writes it.
inline std::string write_npy(const std::string& path, NpyType t, const std::vector<int64_t>& shape, const void* data) {
  NpyArray a = NpyArray::zeros(t, shape);
  if (!a.bytes.empty()) std::memcpy(a.bytes.data(), data, a.bytes.size());
  return write_npy(path, a);
}

}  // namespace tools
}  // namespace gka
