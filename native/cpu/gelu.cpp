// PLACEHOLDER: replaced by the real kernels.
#include "distill4j_impl.h"
#include "common.h"

D4J_IMPL_API int d4j_impl_gelu_forward(void *, const float *, int64_t, float *) { return d4j::cpu::fail("gelu_forward is not implemented yet"); }

D4J_IMPL_API int d4j_impl_gelu_backward(void *, const float *, const float *, int64_t, float *) { return d4j::cpu::fail("gelu_backward is not implemented yet"); }
