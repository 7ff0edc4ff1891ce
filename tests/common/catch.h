// tests/common/catch.h: the Catch2 header for either major version. Debian ships Catch2 v2
// (catch2/catch.hpp); other systems (the GPU machine among them) ship v3 (catch2/catch_all.hpp).
// The tests use only what both provide, and their mains use Catch::Session, so they build with both.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
