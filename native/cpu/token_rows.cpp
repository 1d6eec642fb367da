// The prefix tokens (class, then distillation) gathered for the heads, and the scatter back. See distill4j_impl.h.
// Pure copies: rows of D floats, memcpy per row.
#include "distill4j_impl.h"
#include "common.h"

#include <cstdint>
#include <cstring>

using d4j::cpu::fail;

namespace {
const char *check(int64_t B, int64_t T, int64_t D, int64_t prefix) {
    if (B <= 0 || T <= 0 || D <= 0) return "token_rows: B, T and D must be positive";
    if (prefix <= 0 || prefix > T) return "token_rows: prefix must be in [1, T]";
    return nullptr;
}
}  // namespace

D4J_IMPL_API int d4j_impl_token_rows_forward(void *, const float *tokens, int64_t B, int64_t T, int64_t D,
                                             int64_t prefix, float *rows) {
    if (const char *why = check(B, T, D, prefix)) return fail(why);
    if (tokens == nullptr || rows == nullptr) return fail("token_rows forward: tokens and rows must not be null");
    for (int64_t p = 0; p < prefix; ++p)
        for (int64_t b = 0; b < B; ++b)
            std::memcpy(rows + (p * B + b) * D, tokens + (b * T + p) * D, sizeof(float) * D);
    return 0;
}

D4J_IMPL_API int d4j_impl_token_rows_backward(void *, const float *drows, int64_t B, int64_t T, int64_t D,
                                              int64_t prefix, float *dtokens) {
    if (const char *why = check(B, T, D, prefix)) return fail(why);
    if (drows == nullptr || dtokens == nullptr) return fail("token_rows backward: drows and dtokens must not be null");
    // Written whole: it starts the backward pass, so the patch rows get an explicit 0 (B·T·D floats, one pass).
#pragma omp parallel for schedule(dynamic, d4j::cpu::row_chunk(B)) num_threads(d4j::cpu::threads_for(B * T * D))
    for (int64_t b = 0; b < B; ++b) {
        float *dst = dtokens + b * T * D;
        for (int64_t p = 0; p < prefix; ++p) std::memcpy(dst + p * D, drows + (p * B + b) * D, sizeof(float) * D);
        std::memset(dst + prefix * D, 0, sizeof(float) * (T - prefix) * D);
    }
    return 0;
}
