// gka/reference/reference.h: umbrella for the float64 host reference (opt-in; not part of gka.h).
// Tests, tools and examples include this to get the reference entry points:
//   gka::reference::forward<Real>(const ForwardArgs&, const ReferenceOptions&)
//   gka::reference::decode<Real>(const DecodeArgs&, const ReferenceOptions&)
//   gka::reference::backward<Real>(const BackwardArgs&, const ReferenceOptions&)
// and the per-(sequence, head) programs they are built from.
#pragma once

#include "gka/reference/gather.h"
#include "gka/reference/head_chunked.h"
#include "gka/reference/head_forward.h"
#include "gka/reference/input_fusions.h"
#include "gka/reference/operator.h"
#include "gka/reference/operator_backward.h"
