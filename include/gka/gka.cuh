// gka/gka.cuh: the CUDA umbrella header: the host API of gka/gka.h plus the GPU entry points
// (forward, backward, decode).
#pragma once

#include "gka/gka.h"
#include "gka/api/forward.cuh"
#include "gka/api/backward.cuh"
#include "gka/api/decode.cuh"
