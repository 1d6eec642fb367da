// PLACEHOLDER: replaced by the real kernels.
#include "common.cuh"
#include "distill4j_impl.h"
#include "launch.cuh"

D4J_IMPL_API int d4j_impl_token_rows_forward(void *, const float *, int64_t, int64_t, int64_t, int64_t, float *) { return d4j::cuda::fail("token_rows_forward is not implemented yet"); }

D4J_IMPL_API int d4j_impl_token_rows_backward(void *, const float *, int64_t, int64_t, int64_t, int64_t, float *) { return d4j::cuda::fail("token_rows_backward is not implemented yet"); }
