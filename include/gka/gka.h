// gka/gka.h: the host-side public API (argument structs, status, validation). Includable from
// plain C++; the CUDA entry points are in gka/gka.cuh, the float64 reference in
// gka/reference/reference.h.
#pragma once

#include "gka/args.h"
#include "gka/config.h"
#include "gka/host/validate.h"
#include "gka/status.h"
#include "gka/types.h"
#include "gka/version.h"
