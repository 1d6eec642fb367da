// The CUDA token-rows kernels (native/cuda/token_rows.cu), run on the CPU by the emulator, against the
// definition in distill4j_impl.h, through the dispatch API as Java calls them.
//
//   token_rows_emu <libdistill4j_cudaemu.so>
//
// Pure copies, so the check is exact: rows pre-filled with NaN (an element left unwritten fails), dtokens with
// noise (it must be written whole: drows at the prefix rows, exactly 0 elsewhere). Then the argument checks.
// Branches: the grid-stride loops (8 blocks of 256 emulated) round once or several times; prefix 1 and 2 (t < prefix
// at the scatter), T = prefix (no patch rows), B > 1 (the [b][p] -> [p][b] transposition).
#include "distill4j.h"
#include "harness.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: token_rows_emu <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *emu = d4j_test::open_backend(argv[1]);
    if (emu == nullptr) return 1;
    std::mt19937_64 rng(d4j_test::test_seed("token_rows_emu"));
    int failures = 0;
    // {B, T, D, prefix}. The emulated grid is at most 8 blocks of 256: 2400 and 76032 elements take the grid-stride
    // loops round again (gather: prefix B D; scatter: B T D), the others end inside one pass.
    const int64_t cases[][4] = {{1, 1, 1, 1}, {3, 7, 5, 2}, {2, 198, 192, 2}, {4, 50, 33, 1}, {2, 2, 17, 2},
                                {4, 10, 300, 2}};
    for (const auto &c : cases) {
        const int64_t B = c[0], T = c[1], D = c[2], P = c[3];
        d4j_test::buffer tokens(B * T * D), rows(P * B * D), drows(P * B * D), dtokens(B * T * D);
        tokens.random(rng);
        drows.random(rng);
        rows.fill(NAN);
        dtokens.random(rng);
        const int rc = d4j_token_rows_forward(emu, nullptr, tokens.p, B, T, D, P, rows.p) |
                       d4j_token_rows_backward(emu, nullptr, drows.p, B, T, D, P, dtokens.p);
        int64_t bad = 0;
        for (int64_t p = 0; p < P; ++p)
            for (int64_t b = 0; b < B; ++b)
                for (int64_t d = 0; d < D; ++d) bad += rows.p[(p * B + b) * D + d] != tokens.p[(b * T + p) * D + d];
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < T; ++t)
                for (int64_t d = 0; d < D; ++d)
                    bad += dtokens.p[(b * T + t) * D + d] != (t < P ? drows.p[(t * B + b) * D + d] : 0.0f);
        const bool ok = rc == 0 && bad == 0;
        failures += !ok;
        std::printf("%s B=%lld T=%lld D=%lld prefix=%lld: %lld wrong elements%s%s\n", ok ? "ok  " : "FAIL",
                    static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(D),
                    static_cast<long long>(P), static_cast<long long>(bad), rc != 0 ? ", error: " : "",
                    rc != 0 ? d4j_backend_last_error(emu) : "");
    }
    d4j_test::buffer t(2 * 5 * 4), r(3 * 2 * 4);
    // One call at a time: the message read right after is that call's own.
    auto expect_failure = [&](const char *what, int rc) {
        const bool ok = rc != 0;
        failures += !ok;
        std::printf("%s rejects %s: %s\n", ok ? "ok  " : "FAIL", what, ok ? d4j_backend_last_error(emu) : "(accepted)");
    };
    expect_failure("prefix > T", d4j_token_rows_forward(emu, nullptr, t.p, 2, 5, 4, 6, r.p));
    expect_failure("prefix 0", d4j_token_rows_forward(emu, nullptr, t.p, 2, 5, 4, 0, r.p));
    expect_failure("null rows", d4j_token_rows_forward(emu, nullptr, t.p, 2, 5, 4, 1, nullptr));
    expect_failure("D = 0", d4j_token_rows_backward(emu, nullptr, r.p, 2, 5, 0, 1, t.p));
    d4j_backend_close(emu);
    std::printf("%s\n", failures == 0 ? "token_rows_emu: all passed" : "token_rows_emu: FAILED");
    return failures == 0 ? 0 : 1;
}
