// Catch2 main for the CPU test binary (v2 or v3, see tests/common/catch.h).
#define CATCH_CONFIG_RUNNER
#include "common/catch.h"

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
