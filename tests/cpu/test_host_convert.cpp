// gka/numeric/host_convert.h: bf16 / fp16 conversions by bit manipulation, and dtype loads/stores.
#include "common/catch.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "gka/numeric/host_convert.h"

TEST_CASE("host_convert: bf16 and fp16 round-trip every bit pattern", "[cpu][reference]") {
  struct Format {
    const char* name;
    float (*to_float)(uint16_t);
    uint16_t (*from_float)(float);
    uint16_t (*from_double)(double);
  };
  const Format formats[] = {
      {"bf16", gka::bf16_bits_to_float, gka::float_to_bf16_bits, gka::double_to_bf16_bits},
      {"fp16", gka::fp16_bits_to_float, gka::float_to_fp16_bits, gka::double_to_fp16_bits}};
  for (const Format& fmt : formats)
    for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
      const uint16_t h = static_cast<uint16_t>(bits);
      const float x = fmt.to_float(h);
      INFO(fmt.name << " bits " << bits);
      if (std::isnan(x)) {
        CHECK(std::isnan(fmt.to_float(fmt.from_float(x))));
      } else {
        CHECK(fmt.from_float(x) == h);
        CHECK(fmt.from_double(x) == h);
      }
    }
}

TEST_CASE("host_convert: round to nearest even, overflow, subnormals", "[cpu][reference]") {
  // bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> even (1); just above rounds up.
  CHECK(gka::float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(gka::float_to_bf16_bits(1.0f + 0x1p-8f) == 0x3f80);
  CHECK(gka::float_to_bf16_bits(1.0f + 0x1p-7f + 0x1p-8f) == 0x3f82);  // tie, odd -> up
  CHECK(gka::float_to_bf16_bits(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);
  CHECK(gka::float_to_bf16_bits(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(gka::float_to_bf16_bits(-std::numeric_limits<float>::infinity()) == 0xff80);
  CHECK(gka::float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to Inf
  CHECK(std::isnan(gka::bf16_bits_to_float(gka::float_to_bf16_bits(std::nanf("")))));
  // double -> bf16 is rounded once: via a plain float the 2^-30 would be lost and the tie go to even.
  CHECK(gka::double_to_bf16_bits(1.0 + 0x1p-8 + 0x1p-30) == 0x3f81);
  CHECK(gka::double_to_fp16_bits(1.0 + 0x1p-11 + 0x1p-40) == 0x3c01);

  CHECK(gka::float_to_fp16_bits(1.0f) == 0x3c00);
  CHECK(gka::float_to_fp16_bits(65504.0f) == 0x7bff);
  CHECK(gka::float_to_fp16_bits(65519.0f) == 0x7bff);
  CHECK(gka::float_to_fp16_bits(65520.0f) == 0x7c00);  // tie at the top rounds to Inf
  CHECK(gka::float_to_fp16_bits(-1e6f) == 0xfc00);
  CHECK(gka::float_to_fp16_bits(0x1p-24f) == 0x0001);  // smallest subnormal
  CHECK(gka::float_to_fp16_bits(0x1p-25f) == 0x0000);  // tie -> even (0)
  CHECK(gka::float_to_fp16_bits(0x1.8p-25f) == 0x0001);
  CHECK(gka::float_to_fp16_bits(0x1.8p-24f) == 0x0002);  // 1.5 ulp: tie -> even (2)
  CHECK(gka::float_to_fp16_bits(0x1.ffcp-15f) == 0x0400);  // rounds up into the smallest normal
  CHECK(gka::float_to_fp16_bits(-0.0f) == 0x8000);
  CHECK(std::isnan(gka::fp16_bits_to_float(gka::float_to_fp16_bits(std::nanf("")))));
  CHECK(gka::fp16_bits_to_float(0x0001) == 0x1p-24f);
  CHECK(gka::fp16_bits_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
}

TEST_CASE("host_convert: load_as_double and store_from_double for every dtype", "[cpu][reference]") {
  unsigned char buf[32] = {};
  for (gka::DType t : {gka::DType::kBF16, gka::DType::kFP16, gka::DType::kFP32, gka::DType::kFP64}) {
    gka::store_from_double(buf, t, 2, -1.5);
    CHECK(gka::load_as_double(buf, t, 2) == -1.5);
    gka::store_from_double(buf, t, 3, 1.0 / 3.0);
    const double back = gka::load_as_double(buf, t, 3);
    const double ulp = t == gka::DType::kBF16 ? 0x1p-9 : t == gka::DType::kFP16 ? 0x1p-12 : t == gka::DType::kFP32 ? 0x1p-25 : 0x1p-54;
    CHECK(std::fabs(back - 1.0 / 3.0) <= ulp);
  }
}
