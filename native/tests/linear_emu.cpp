// The CUDA linear op (native/cuda/linear.cu: bias/residual prologue and bias-gradient kernels, emulated, around
// the host OpenBLAS GEMMs that the emulated build uses), against a float64 reference written here from the
// definition in distill4j_impl.h, through the dispatch API as Java calls them.
//
//   linear_emu <libdistill4j_cudaemu.so> <libopenblas.so.0 | "">
//
// The emulated library finds OpenBLAS only among the libraries already in the process (as the Java backend
// loads it), so this program dlopens the one CMake extracted from the org.bytedeco:openblas jar; without one it
// says so and exits 77 (CTest: skipped; the JUnit cuda-emu cases still cover it).
// Each case: y (pre-filled with NaN), dx (pre-filled with noise: written), dweight and dbias (random initial
// values, two backwards: += twice), all by ||x - ref|| / ||ref|| <= 1e-5; a repeated run gives the same bits.
// Branches: linear_bias_grad's 32-column blocks (N = 1, 5, 33, 65, 100: partial) and 8 row groups (M = 1, 7 < 8,
// 300); the prologue with bias, residual, both, or neither (beta 0); dx null.
#include "distill4j.h"
#include "harness.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

double rel_err(const float *x, const std::vector<double> &ref) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double diff = static_cast<double>(x[i]) - ref[i];
        d += diff * diff;
        r += ref[i] * ref[i];
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

struct lin_case {
    int64_t M, K, N;
    bool bias, residual, dx;
};

bool run_case(d4j_backend *emu, const lin_case &c, std::mt19937_64 &rng) {
    const int64_t M = c.M, K = c.K, N = c.N;
    d4j_test::buffer x(M * K), w(N * K), b(N), res(M * N), y(M * N), dy(M * N), dx(M * K), dw(N * K), db(N);
    x.random(rng);
    w.random(rng);
    b.random(rng);
    res.random(rng);
    dy.random(rng);
    dx.random(rng);
    dw.random(rng);
    db.random(rng);
    y.fill(NAN);
    std::vector<double> ry(M * N), rdx(M * K), rdw(N * K), rdb(N);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double s = (c.bias ? b.p[n] : 0.0) + (c.residual ? res.p[m * N + n] : 0.0);
            for (int64_t k = 0; k < K; ++k) s += static_cast<double>(x.p[m * K + k]) * w.p[n * K + k];
            ry[m * N + n] = s;
        }
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
            double s = 0.0;
            for (int64_t n = 0; n < N; ++n) s += static_cast<double>(dy.p[m * N + n]) * w.p[n * K + k];
            rdx[m * K + k] = s;
        }
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; ++k) {
            double s = 0.0;
            for (int64_t m = 0; m < M; ++m) s += static_cast<double>(dy.p[m * N + n]) * x.p[m * K + k];
            rdw[n * K + k] = dw.p[n * K + k] + 2.0 * s;
        }
        double s = 0.0;
        for (int64_t m = 0; m < M; ++m) s += dy.p[m * N + n];
        rdb[n] = db.p[n] + 2.0 * s;
    }
    int rc = d4j_linear_forward(emu, nullptr, x.p, w.p, c.bias ? b.p : nullptr, c.residual ? res.p : nullptr, M, K,
                                N, y.p);
    for (int i = 0; i < 2 && rc == 0; ++i)
        rc = d4j_linear_backward(emu, nullptr, x.p, w.p, dy.p, M, K, N, c.dx ? dx.p : nullptr, dw.p,
                                 c.bias ? db.p : nullptr);
    const double ey = rel_err(y.p, ry), edx = c.dx ? rel_err(dx.p, rdx) : 0.0, edw = rel_err(dw.p, rdw),
                 edb = c.bias ? rel_err(db.p, rdb) : 0.0;
    // Determinism: the forward again, bit for bit.
    std::vector<float> first(y.p, y.p + M * N);
    if (rc == 0)
        rc = d4j_linear_forward(emu, nullptr, x.p, w.p, c.bias ? b.p : nullptr, c.residual ? res.p : nullptr, M, K,
                                N, y.p);
    const bool same = std::memcmp(first.data(), y.p, sizeof(float) * M * N) == 0;
    const bool ok = rc == 0 && ey <= 1e-5 && edx <= 1e-5 && edw <= 1e-5 && edb <= 1e-5 && same;
    std::printf("%s M=%lld K=%lld N=%lld%s%s%s: y %.2e dx %.2e dW %.2e db %.2e%s%s%s\n", ok ? "ok  " : "FAIL",
                static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(N),
                c.bias ? " +bias" : "", c.residual ? " +residual" : "", c.dx ? "" : " (dx null)", ey, edx, edw, edb,
                same ? "" : " NOT REPRODUCIBLE", rc != 0 ? ", error: " : "", rc != 0 ? d4j_backend_last_error(emu) : "");
    return ok;
}

}  // namespace

int main(int argc, char **argv) {
    // CMake drops an empty last argument (no OpenBLAS found at configure time): argc 2 means the same as "".
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: linear_emu <libdistill4j_cudaemu.so> [libopenblas.so.0]\n");
        return 2;
    }
    const char *openblas = argc == 3 ? argv[2] : "";
    if (openblas[0] == '\0') {
        std::printf("linear_emu: SKIPPED: no OpenBLAS (org.bytedeco:openblas linux-x86_64 jar not found in ~/.m2 at "
                    "configure time); the JUnit cuda-emu cases of LinearTest cover the op\n");
        return 77;
    }
    if (dlopen(openblas, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        std::printf("linear_emu: SKIPPED: cannot load %s: %s\n", openblas, dlerror());
        return 77;
    }
    d4j_backend *emu = d4j_test::open_backend(argv[1]);
    if (emu == nullptr) return 1;
    std::mt19937_64 rng(d4j_test::test_seed("linear_emu"));
    int failures = 0;
    const lin_case cases[] = {{1, 1, 1, true, true, true},    {8, 192, 100, true, false, true},
                              {7, 13, 5, false, false, true}, {33, 97, 65, true, true, true},
                              {50, 40, 70, true, true, false}, {300, 24, 33, false, true, true}};
    for (const lin_case &c : cases) failures += !run_case(emu, c, rng);
    d4j_test::buffer a(64), o(64);
    // One call at a time: the message read right after is that call's own.
    auto expect_failure = [&](const char *what, int rc) {
        const bool ok = rc != 0;
        failures += !ok;
        std::printf("%s rejects %s: %s\n", ok ? "ok  " : "FAIL", what, ok ? d4j_backend_last_error(emu) : "(accepted)");
    };
    expect_failure("M = 0", d4j_linear_forward(emu, nullptr, a.p, a.p, nullptr, nullptr, 0, 4, 4, o.p));
    expect_failure("null weight", d4j_linear_forward(emu, nullptr, a.p, nullptr, nullptr, nullptr, 4, 4, 4, o.p));
    expect_failure("residual = y", d4j_linear_forward(emu, nullptr, a.p, a.p, nullptr, o.p, 4, 4, 4, o.p));
    expect_failure("null dweight", d4j_linear_backward(emu, nullptr, a.p, a.p, a.p, 4, 4, 4, o.p, nullptr, nullptr));
    expect_failure("K > 2^31", d4j_linear_backward(emu, nullptr, a.p, a.p, a.p, 1, int64_t{1} << 32, 1, o.p, o.p, nullptr));
    d4j_backend_close(emu);
    std::printf("%s\n", failures == 0 ? "linear_emu: all passed" : "linear_emu: FAILED");
    return failures == 0 ? 0 : 1;
}
