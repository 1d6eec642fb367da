// The linear ops against float64 references written here from the definitions in distill4j_impl.h, through the
// dispatch API as Java calls them:
//   fp32 (precision 0): the CUDA op (native/cuda/linear.cu: bias/residual prologue and bias-gradient kernels,
//       emulated, around the host OpenBLAS GEMMs that the emulated build uses);
//   tf32 (precision 1) and linear_bf16: the CPU op and the emulated CUDA op, each against a float64 reference
//       computed on the operands as the op must see them: rounded to tf32 (10 explicit mantissa bits, nearest even,
//       rounded here independently) or the bf16 values (rounded here, nearest even, and uploaded as bits).
//
//   linear_emu <libdistill4j_cudaemu.so> <libdistill4j_cpu.so> <libopenblas.so.0 | "">
//
// The emulated library finds OpenBLAS only among the libraries already in the process (as the Java backend
// loads it), so this program dlopens the one CMake extracted from the org.bytedeco:openblas jar; without one it
// says so and exits 77 (CTest: skipped; the JUnit cuda-emu cases still cover it).
// fp32 cases: y (pre-filled with NaN), dx (pre-filled with noise: written), dweight and dbias (random initial
// values, two backwards: += twice), all by ||x - ref|| / ||ref|| <= 1e-5; a repeated run gives the same bits.
// Branches: linear_bias_grad's 32-column blocks (N = 1, 5, 33, 65, 100: partial), 8 row groups (M = 1, 7 < 8) and
// 256-row chunks (M = 300: two); the prologue with bias, residual, both, or neither (beta 0); dx null. The bias
// gradient's own cases (bias_grad_cases: one chunk or several, with and without a tail; fp32, tf32, bf16) check it
// bit for bit against its documented order, and its scratch against a graph capture.
// tf32 and bf16 cases, per element (every comparison fails on NaN): the products of two tf32 or two bf16 values are
// exact in fp32, so the only error is fp32 summation's, |err| <= gamma_n * sum |terms| (gamma_n = n u / (1 - n u),
// u = 2^-24, n terms in any order, FMA or not): y has K products + bias + residual (n = K + 2); dx N products; dweight
// and dbias two backwards of M terms onto the initial value, bounded by 2 gamma_(M+2) (|initial| + 2 sum |terms|).
// The same shapes as the fp32 cases and K = 768 (the ViT's MLP), with bias/residual/dx/dbias null or not. A tie
// case (K = N = 1, weight 1) checks the tf32 rounding bit for bit: ties to even, not truncation, not ties away.
// On a GPU, cuBLAS's own tf32 rounding is undocumented: bench/gpu compares it with a bound of 2^-10 per operand.
// The emulated op's forwards and dW GEMMs go through cuBLASLt (native/cuda/cublas.cu's emulation of the subset it
// calls: residual as C, the BIAS and BGRADB epilogues): each case asserts, through the emulator's call count, one
// cublasLtMatmul per forward and per backward; the same cases then run with the emulated heuristic finding no
// algorithm, where the cuBLAS fallback (prologue and column-sum kernels) must run instead (no Lt call).
#include "distill4j.h"
#include "harness.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

// The emulated cuBLASLt's test hooks (native/cuda/cublas.cu), looked up in the cuda-emu library: the count of
// cublasLtMatmul calls, and the switch under which its heuristic finds no algorithm (the cuBLAS fallback runs).
long (*lt_calls)() = nullptr;
void (*lt_no_algorithm)(int) = nullptr;

// Every forward and every backward of the emulated op must go through exactly one cublasLtMatmul (the forward's
// GEMM with its bias/residual, the backward's dW GEMM with its bias gradient), none when the fallback is forced.
bool lt_calls_as_expected(d4j_backend *be, d4j_backend *emu, long before, long calls) {
    if (be != emu) return true;
    const long got = lt_calls() - before;
    if (got == calls) return true;
    std::printf("     cublasLtMatmul (emulated) ran %ld times, expected %ld\n", got, calls);
    return false;
}
d4j_backend *emu_backend = nullptr;
long lt_expected_per_call = 1;  // 0 while the fallback is forced

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
    const long lt_before = lt_calls();
    int rc = d4j_linear_forward(emu, nullptr, x.p, w.p, c.bias ? b.p : nullptr, c.residual ? res.p : nullptr, M, K,
                                N, y.p, 0);
    for (int i = 0; i < 2 && rc == 0; ++i)
        rc = d4j_linear_backward(emu, nullptr, x.p, w.p, dy.p, M, K, N, c.dx ? dx.p : nullptr, dw.p,
                                 c.bias ? db.p : nullptr, 0);
    const double ey = rel_err(y.p, ry), edx = c.dx ? rel_err(dx.p, rdx) : 0.0, edw = rel_err(dw.p, rdw),
                 edb = c.bias ? rel_err(db.p, rdb) : 0.0;
    // Determinism: the forward again, bit for bit.
    std::vector<float> first(y.p, y.p + M * N);
    if (rc == 0)
        rc = d4j_linear_forward(emu, nullptr, x.p, w.p, c.bias ? b.p : nullptr, c.residual ? res.p : nullptr, M, K,
                                N, y.p, 0);
    const bool same = std::memcmp(first.data(), y.p, sizeof(float) * M * N) == 0;
    const bool via_lt = lt_calls_as_expected(emu, emu, lt_before, 4 * lt_expected_per_call);
    const bool ok = rc == 0 && ey <= 1e-5 && edx <= 1e-5 && edw <= 1e-5 && edb <= 1e-5 && same && via_lt;
    std::printf("%s M=%lld K=%lld N=%lld%s%s%s: y %.2e dx %.2e dW %.2e db %.2e%s%s%s\n", ok ? "ok  " : "FAIL",
                static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(N),
                c.bias ? " +bias" : "", c.residual ? " +residual" : "", c.dx ? "" : " (dx null)", ey, edx, edw, edb,
                same ? "" : " NOT REPRODUCIBLE", rc != 0 ? ", error: " : "", rc != 0 ? d4j_backend_last_error(emu) : "");
    return ok;
}

// ---- tf32 (precision 1) and linear_bf16: per-element bounds on exactly rounded operands.

float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// Nearest even to `keep` explicit mantissa bits (finite inputs: the tests draw normal values), from the definition:
// the two neighbours that carry `keep` bits, the nearer one, on a tie the one whose last kept bit is 0.
float round_mantissa(float f, int keep) {
    const int drop = 23 - keep;
    const uint32_t u = float_bits(f), mask = (1u << drop) - 1u;
    const float down = bits_float(u & ~mask), up = bits_float((u & ~mask) + (1u << drop));
    const double dd = std::fabs(static_cast<double>(f) - down), du = std::fabs(static_cast<double>(up) - f);
    if (dd < du) return down;
    if (du < dd) return up;
    return ((float_bits(down) >> drop) & 1u) == 0 ? down : up;
}
float round_tf32(float f) { return round_mantissa(f, 10); }
uint16_t to_bf16(float f) { return static_cast<uint16_t>(float_bits(round_mantissa(f, 7)) >> 16); }

double gamma(int64_t n) {
    const double nu = static_cast<double>(n) * 0x1p-24;
    return nu / (1.0 - nu);
}

struct mp_case {
    int64_t M, K, N;
    bool bias, residual, dx, dbias;
};

enum class mode { tf32, bf16 };

// Largest |got - ref| / bound over the elements (NaN when any got or ref is NaN or over all when bound is 0).
double worst_ratio(const float *got, const std::vector<double> &ref, const std::vector<double> &bound) {
    double w = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
        const double r = bound[i] > 0.0 ? err / bound[i] : (err == 0.0 ? 0.0 : INFINITY);
        w = d4j_test::worst(w, r);
    }
    return w;
}

bool run_precision_case(d4j_backend *be, const char *name, mode md, const mp_case &c, std::mt19937_64 &rng) {
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
    const std::vector<float> dw0(dw.p, dw.p + N * K), db0(db.p, db.p + N);
    // The operands as the op multiplies them (xs, ws, dys) and dy as the bias gradient sums it (dyb).
    std::vector<double> xs(M * K), ws(N * K), dys(M * N), dyb(M * N);
    std::vector<uint16_t> xh(M * K), wh(N * K), dyh(M * N);
    auto prepare = [&](const d4j_test::buffer &in, std::vector<double> &as, std::vector<uint16_t> &h) {
        for (size_t i = 0; i < in.n; ++i) {
            h[i] = to_bf16(in.p[i]);
            as[i] = md == mode::bf16 ? bits_float(static_cast<uint32_t>(h[i]) << 16) : round_tf32(in.p[i]);
        }
    };
    prepare(x, xs, xh);
    prepare(w, ws, wh);
    prepare(dy, dys, dyh);
    for (int64_t i = 0; i < M * N; ++i) dyb[i] = md == mode::bf16 ? dys[i] : dy.p[i];
    std::vector<double> ry(M * N), by(M * N), rdx(M * K), bdx(M * K), rdw(N * K), bdw(N * K), rdb(N), bdb(N);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            const double bv = c.bias ? b.p[n] : 0.0, rv = c.residual ? res.p[m * N + n] : 0.0;
            double s = bv + rv, a = std::fabs(bv) + std::fabs(rv);
            for (int64_t k = 0; k < K; ++k) {
                s += xs[m * K + k] * ws[n * K + k];
                a += std::fabs(xs[m * K + k] * ws[n * K + k]);
            }
            ry[m * N + n] = s;
            by[m * N + n] = gamma(K + 2) * a;
        }
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
            double s = 0.0, a = 0.0;
            for (int64_t n = 0; n < N; ++n) {
                s += dys[m * N + n] * ws[n * K + k];
                a += std::fabs(dys[m * N + n] * ws[n * K + k]);
            }
            rdx[m * K + k] = s;
            bdx[m * K + k] = gamma(N) * a;
        }
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; ++k) {
            double s = 0.0, a = 0.0;
            for (int64_t m = 0; m < M; ++m) {
                s += dys[m * N + n] * xs[m * K + k];
                a += std::fabs(dys[m * N + n] * xs[m * K + k]);
            }
            rdw[n * K + k] = dw0[n * K + k] + 2.0 * s;
            bdw[n * K + k] = 2.0 * gamma(M + 2) * (std::fabs(dw0[n * K + k]) + 2.0 * a);
        }
        double s = 0.0, a = 0.0;
        for (int64_t m = 0; m < M; ++m) {
            s += dyb[m * N + n];
            a += std::fabs(dyb[m * N + n]);
        }
        rdb[n] = db0[n] + 2.0 * s;
        bdb[n] = 2.0 * gamma(M + 2) * (std::fabs(db0[n]) + 2.0 * a);
    }
    const float *bias = c.bias ? b.p : nullptr, *resid = c.residual ? res.p : nullptr;
    float *dxp = c.dx ? dx.p : nullptr, *dbp = c.dbias ? db.p : nullptr;
    auto forward = [&]() {
        return md == mode::bf16 ? d4j_linear_bf16_forward(be, nullptr, xh.data(), wh.data(), bias, resid, M, K, N, y.p)
                                : d4j_linear_forward(be, nullptr, x.p, w.p, bias, resid, M, K, N, y.p, 1);
    };
    const long lt_before = lt_calls();
    int rc = forward();
    for (int i = 0; i < 2 && rc == 0; ++i)
        rc = md == mode::bf16
                 ? d4j_linear_bf16_backward(be, nullptr, xh.data(), wh.data(), dyh.data(), M, K, N, dxp, dw.p, dbp)
                 : d4j_linear_backward(be, nullptr, x.p, w.p, dy.p, M, K, N, dxp, dw.p, dbp, 1);
    const double ey = worst_ratio(y.p, ry, by), edx = c.dx ? worst_ratio(dx.p, rdx, bdx) : 0.0,
                 edw = worst_ratio(dw.p, rdw, bdw), edb = c.dbias ? worst_ratio(db.p, rdb, bdb) : 0.0;
    // Without dbias the op must leave it alone.
    const bool db_kept = c.dbias || std::memcmp(db.p, db0.data(), sizeof(float) * N) == 0;
    std::vector<float> first(y.p, y.p + M * N);
    if (rc == 0) rc = forward();
    const bool same = std::memcmp(first.data(), y.p, sizeof(float) * M * N) == 0;
    const double worst_all = d4j_test::worst({ey, edx, edw, edb});
    const bool via_lt = lt_calls_as_expected(be, emu_backend, lt_before, 4 * lt_expected_per_call);
    const bool ok = rc == 0 && d4j_test::within(worst_all, 1.0) && same && db_kept && via_lt;
    std::printf("%s %s %s M=%lld K=%lld N=%lld%s%s%s%s: err/bound y %.2f dx %.2f dW %.2f db %.2f%s%s%s\n",
                ok ? "ok  " : "FAIL", name, md == mode::bf16 ? "linear_bf16" : "linear tf32", static_cast<long long>(M),
                static_cast<long long>(K), static_cast<long long>(N), c.bias ? " +bias" : "",
                c.residual ? " +residual" : "", c.dx ? "" : " (dx null)", c.dbias ? "" : " (dbias null)", ey, edx, edw,
                edb, same ? "" : " NOT REPRODUCIBLE", rc != 0 ? ", error: " : "",
                rc != 0 ? d4j_backend_last_error(be) : "");
    return ok;
}

// K = N = 1, weight 1: y = tf32(x) and dx = tf32(dy) exactly. Ties go to the even neighbour; above a tie, up.
bool tf32_ties(d4j_backend *be, const char *name) {
    const float in[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 3 * 0x1p-11f), 1.0f + 0x1p-11f + 0x1p-23f,
                        1.0f + 0x1p-11f - 0x1p-23f, 0x1p-130f * (1.0f + 0x1p-11f)};
    const float want[] = {1.0f, 1.0f + 0x1p-9f, -(1.0f + 0x1p-9f), 1.0f + 0x1p-10f, 1.0f, 0x1p-130f};
    constexpr int64_t M = 6;
    d4j_test::buffer x(M), w(1), y(M), dx(M), dw(1);
    for (int64_t i = 0; i < M; ++i) x.p[i] = in[i];
    w.p[0] = 1.0f;
    dw.p[0] = 0.0f;
    y.fill(NAN);
    const long lt_before = lt_calls();
    int rc = d4j_linear_forward(be, nullptr, x.p, w.p, nullptr, nullptr, M, 1, 1, y.p, 1);
    if (rc == 0) rc = d4j_linear_backward(be, nullptr, x.p, w.p, x.p, M, 1, 1, dx.p, dw.p, nullptr, 1);
    bool ok = rc == 0 && lt_calls_as_expected(be, emu_backend, lt_before, 2);
    for (int64_t i = 0; i < M; ++i) ok = ok && y.p[i] == want[i] && dx.p[i] == want[i];
    std::printf("%s %s linear tf32 rounding of ties and near-ties%s%s\n", ok ? "ok  " : "FAIL", name,
                rc != 0 ? ", error: " : "", rc != 0 ? d4j_backend_last_error(be) : "");
    if (!ok && rc == 0)
        for (int64_t i = 0; i < M; ++i)
            std::printf("     x %a: y %a dx %a, want %a\n", in[i], y.p[i], dx.p[i], want[i]);
    return ok;
}

int precision_cases(d4j_backend *be, const char *name, std::mt19937_64 &rng) {
    int failures = 0;
    const mp_case cases[] = {{1, 1, 1, true, true, true, true},      {8, 192, 100, true, false, true, true},
                             {7, 13, 5, false, false, true, false},  {33, 97, 65, true, true, true, true},
                             {50, 40, 70, true, true, false, true},  {300, 24, 33, false, true, true, false},
                             {5, 768, 7, true, false, true, false},  {3, 5, 40, false, false, false, true}};
    for (mode md : {mode::tf32, mode::bf16})
        for (const mp_case &c : cases) failures += !run_precision_case(be, name, md, c, rng);
    failures += !tf32_ties(be, name);
    // One call at a time: the message read right after is that call's own.
    d4j_test::buffer a(64), o(64);
    const std::vector<uint16_t> h(64, 0x3f80);
    auto expect_failure = [&](const char *what, int rc, const char *part) {
        const std::string msg = rc != 0 ? d4j_backend_last_error(be) : "";
        const bool ok = rc != 0 && msg.find(part) != std::string::npos;
        failures += !ok;
        std::printf("%s %s rejects %s: %s\n", ok ? "ok  " : "FAIL", name, what, rc != 0 ? msg.c_str() : "(accepted)");
    };
    expect_failure("precision 2", d4j_linear_forward(be, nullptr, a.p, a.p, nullptr, nullptr, 4, 4, 4, o.p, 2),
                   "precision 2 is not supported");
    expect_failure("precision -1", d4j_linear_backward(be, nullptr, a.p, a.p, a.p, 4, 4, 4, o.p, o.p, nullptr, -1),
                   "precision -1 is not supported");
    const uint16_t *hp = h.data();
    expect_failure("bf16 M = 0", d4j_linear_bf16_forward(be, nullptr, hp, hp, nullptr, nullptr, 0, 4, 4, o.p),
                   "linear_bf16: M, K and N must be positive");
    expect_failure("bf16 null x", d4j_linear_bf16_forward(be, nullptr, nullptr, hp, nullptr, nullptr, 4, 4, 4, o.p),
                   "must not be null");
    expect_failure("bf16 residual = y", d4j_linear_bf16_forward(be, nullptr, hp, hp, nullptr, o.p, 4, 4, 4, o.p),
                   "residual may not alias y");
    expect_failure("bf16 null dweight",
                   d4j_linear_bf16_backward(be, nullptr, h.data(), h.data(), h.data(), 4, 4, 4, o.p, nullptr, nullptr),
                   "must not be null");
    expect_failure("bf16 N > 2^31",
                   d4j_linear_bf16_backward(be, nullptr, h.data(), h.data(), h.data(), 1, 1, int64_t{1} << 32, o.p, o.p,
                                            nullptr),
                   "2^31");
    return failures;
}

// ---- The bias gradient's column sums (linear.cu: the tf32 path and the cuBLAS fallback), bit for bit against the
// order linear.cu documents, reproduced here in float: rows cut into chunks of 256 (the last shorter); in chunk c,
// row group g (0..7) sums rows c·256 + g, + 8, ... from 0 in order, the 8 group sums are added in order; the chunk
// sums are added in chunk order and the total added to dbias. Also against float64: dbias after two backwards is a
// sum of 2M + 1 floats (the initial value, dy's column twice), and any summation tree of n terms is within
// gamma_(n-1) sum |terms| of the exact sum (no term passes through more than n - 1 roundings), so the bound is
// gamma_2M (|dbias0| + 2 sum_m |dy[m, n]|). The shapes: one chunk (M = 1, 255, 256), one row over (257), several
// with a tail (1061 = 4·256 + 37) and without (1280), and DeiT-Ti's M = 12672 (49.5 chunks), N not a multiple of 32
// (33, 70) but 192. Largest M first on one stream: the later, smaller calls find the scratch holding an earlier
// call's partials, so a slot read past its chunks is a stale value, not a lucky zero.
enum class bg_mode { fp32, tf32, bf16 };

float bias_grad_total(const std::vector<float> &v, int64_t M, int64_t N, int64_t n) {
    constexpr int64_t R = 256;  // linear.cu's kChunkRows
    float total = 0.0f;
    for (int64_t c = 0; c * R < M; ++c) {
        const int64_t end = std::min(M, (c + 1) * R);
        float chunk = 0.0f;
        for (int64_t g = 0; g < 8; ++g) {
            float s = 0.0f;
            for (int64_t m = c * R + g; m < end; m += 8) s += v[m * N + n];
            chunk = g == 0 ? s : chunk + s;
        }
        total = c == 0 ? chunk : total + chunk;
    }
    return total;
}

bool bias_grad_case(d4j_backend *emu, bg_mode md, int64_t M, int64_t N, std::mt19937_64 &rng) {
    d4j_test::buffer x(M), w(N), dy(M * N), dw(N), db(N);
    x.random(rng);
    w.random(rng);
    dy.random(rng);
    dw.random(rng);
    db.random(rng);
    std::vector<uint16_t> xh(M), wh(N), dyh(M * N);
    std::vector<float> v(dy.p, dy.p + M * N), model(N);  // v: dy as the kernel sums it
    for (int64_t i = 0; i < M; ++i) xh[i] = to_bf16(x.p[i]);
    for (int64_t i = 0; i < N; ++i) wh[i] = to_bf16(w.p[i]);
    for (int64_t i = 0; i < M * N; ++i) {
        dyh[i] = to_bf16(dy.p[i]);
        if (md == bg_mode::bf16) v[i] = bits_float(static_cast<uint32_t>(dyh[i]) << 16);
    }
    std::vector<double> ref(N), bound(N);
    for (int64_t n = 0; n < N; ++n) {
        const float total = bias_grad_total(v, M, N, n);
        model[n] = (db.p[n] + total) + total;
        double s = 0.0, a = 0.0;
        for (int64_t m = 0; m < M; ++m) s += v[m * N + n], a += std::fabs(v[m * N + n]);
        ref[n] = db.p[n] + 2.0 * s;
        bound[n] = gamma(2 * M) * (std::fabs(db.p[n]) + 2.0 * a);
    }
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; ++i)
        rc = md == bg_mode::bf16
                 ? d4j_linear_bf16_backward(emu, nullptr, xh.data(), wh.data(), dyh.data(), M, 1, N, nullptr, dw.p,
                                            db.p)
                 : d4j_linear_backward(emu, nullptr, x.p, w.p, dy.p, M, 1, N, nullptr, dw.p, db.p,
                                       md == bg_mode::tf32 ? 1 : 0);
    int64_t differ = 0;
    for (int64_t n = 0; n < N; ++n) differ += float_bits(db.p[n]) != float_bits(model[n]);
    const double err = worst_ratio(db.p, ref, bound);
    const bool ok = rc == 0 && differ == 0 && d4j_test::within(err, 1.0);
    const char *name = md == bg_mode::fp32 ? "fp32 (fallback)" : md == bg_mode::tf32 ? "tf32" : "bf16 (fallback)";
    std::printf("%s bias gradient %s M=%lld N=%lld: %lld of %lld elements differ from the documented order, "
                "err/bound %.2g%s%s\n",
                ok ? "ok  " : "FAIL", name, static_cast<long long>(M), static_cast<long long>(N),
                static_cast<long long>(differ), static_cast<long long>(N), err, rc != 0 ? ", error: " : "",
                rc != 0 ? d4j_backend_last_error(emu) : "");
    return ok;
}

// The scratch grows by cudaMalloc, which a graph capture may not call: on a stream that never needed it a captured
// call that does is refused with the reason; after one uncaptured call of the size the same call captures, and the
// replay gives the uncaptured run's bits.
bool bias_grad_capture(d4j_backend *emu, std::mt19937_64 &rng) {
    constexpr int64_t M = 1061, N = 33;
    d4j_test::buffer x(M), w(N), dy(M * N), dw(N), db(N);
    x.random(rng);
    w.random(rng);
    dy.random(rng);
    dw.random(rng);
    db.random(rng);
    const std::vector<float> db0(db.p, db.p + N);
    void *stream = nullptr, *graph = nullptr;
    if (d4j_stream_create(emu, &stream) != 0) return std::printf("FAIL stream_create\n"), false;
    auto backward = [&](int64_t rows) {
        return d4j_linear_backward(emu, stream, x.p, w.p, dy.p, rows, 1, N, nullptr, dw.p, db.p, 1);
    };
    // One row first, uncaptured: cuBLASLt's workspace exists then, the partials scratch not (one chunk needs none).
    bool ok = backward(1) == 0 && d4j_graph_begin(emu, stream) == 0;
    const int refused = backward(M);
    const std::string why = refused != 0 ? d4j_backend_last_error(emu) : "(accepted)";
    ok = ok && refused != 0 && why.find("capture") != std::string::npos;
    d4j_graph_end(emu, stream, &graph);
    if (graph != nullptr) d4j_graph_destroy(emu, graph), graph = nullptr;
    std::memcpy(db.p, db0.data(), sizeof(float) * N);
    ok = ok && backward(M) == 0 && d4j_synchronize(emu, stream) == 0;
    const std::vector<float> eager(db.p, db.p + N);
    std::memcpy(db.p, db0.data(), sizeof(float) * N);
    ok = ok && d4j_graph_begin(emu, stream) == 0 && backward(M) == 0 && d4j_graph_end(emu, stream, &graph) == 0 &&
         std::memcmp(db.p, db0.data(), sizeof(float) * N) == 0 && d4j_graph_launch(emu, stream, graph) == 0 &&
         d4j_synchronize(emu, stream) == 0 && std::memcmp(db.p, eager.data(), sizeof(float) * N) == 0;
    if (graph != nullptr) d4j_graph_destroy(emu, graph);
    ok = d4j_stream_destroy(emu, stream) == 0 && ok;
    std::printf("%s bias gradient tf32 M=%lld N=%lld in a graph capture: refused before the scratch exists (%s), "
                "captured and replayed to the same bits after\n",
                ok ? "ok  " : "FAIL", static_cast<long long>(M), static_cast<long long>(N), why.c_str());
    return ok;
}

int bias_grad_cases(d4j_backend *emu, std::mt19937_64 &rng) {
    const int64_t shapes[][2] = {{12672, 192}, {1280, 70}, {1061, 33}, {257, 70}, {256, 33}, {255, 70}, {1, 33}};
    int failures = 0;
    // fp32 reaches the kernel only where cuBLASLt has no algorithm (else BGRADB sums), bf16 likewise; tf32 always.
    for (bg_mode md : {bg_mode::fp32, bg_mode::tf32, bg_mode::bf16}) {
        lt_no_algorithm(md != bg_mode::tf32);
        for (const auto &s : shapes) failures += !bias_grad_case(emu, md, s[0], s[1], rng);
    }
    lt_no_algorithm(0);
    failures += !bias_grad_capture(emu, rng);
    return failures;
}

}  // namespace

int main(int argc, char **argv) {
    // CMake drops an empty last argument (no OpenBLAS found at configure time): argc 3 means the same as "".
    if (argc != 3 && argc != 4) {
        std::fprintf(stderr, "usage: linear_emu <libdistill4j_cudaemu.so> <libdistill4j_cpu.so> [libopenblas.so.0]\n");
        return 2;
    }
    const char *openblas = argc == 4 ? argv[3] : "";
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
    void *emu_lib = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
    if (emu_lib != nullptr) {
        lt_calls = reinterpret_cast<long (*)()>(dlsym(emu_lib, "d4j_impl_emu_lt_matmul_calls"));
        lt_no_algorithm = reinterpret_cast<void (*)(int)>(dlsym(emu_lib, "d4j_impl_emu_lt_no_algorithm"));
    }
    if (lt_calls == nullptr || lt_no_algorithm == nullptr) {
        std::fprintf(stderr, "linear_emu: %s lacks the emulated cuBLASLt's test hooks\n", argv[1]);
        return 1;
    }
    emu_backend = emu;
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
    expect_failure("M = 0", d4j_linear_forward(emu, nullptr, a.p, a.p, nullptr, nullptr, 0, 4, 4, o.p, 0));
    expect_failure("null weight", d4j_linear_forward(emu, nullptr, a.p, nullptr, nullptr, nullptr, 4, 4, 4, o.p, 0));
    expect_failure("residual = y", d4j_linear_forward(emu, nullptr, a.p, a.p, nullptr, o.p, 4, 4, 4, o.p, 0));
    expect_failure("null dweight", d4j_linear_backward(emu, nullptr, a.p, a.p, a.p, 4, 4, 4, o.p, nullptr, nullptr, 0));
    expect_failure("K > 2^31",
                   d4j_linear_backward(emu, nullptr, a.p, a.p, a.p, 1, int64_t{1} << 32, 1, o.p, o.p, nullptr, 0));
    d4j_backend *cpu = d4j_test::open_backend(argv[2]);
    if (cpu == nullptr) return 1;
    failures += precision_cases(cpu, "cpu", rng);
    failures += precision_cases(emu, "cuda-emu", rng);
    failures += bias_grad_cases(emu, rng);
    // cuBLASLt without an algorithm for the case: the cuBLAS path (prologue and column-sum kernels) must run instead,
    // and give the same results within the same bounds.
    std::printf("-- cuda-emu with the emulated cuBLASLt's heuristic finding no algorithm (cuBLAS fallback)\n");
    lt_no_algorithm(1);
    lt_expected_per_call = 0;
    const lin_case fallback[] = {{33, 97, 65, true, true, true}, {8, 192, 100, true, false, true},
                                 {300, 24, 33, false, true, false}};
    for (const lin_case &c : fallback) failures += !run_case(emu, c, rng);
    const mp_case fallback_mp[] = {{33, 97, 65, true, true, true, true}, {5, 768, 7, true, false, true, false}};
    for (mode md : {mode::tf32, mode::bf16})
        for (const mp_case &c : fallback_mp) failures += !run_precision_case(emu, "cuda-emu fallback", md, c, rng);
    lt_no_algorithm(0);
    d4j_backend_close(cpu);
    d4j_backend_close(emu);
    std::printf("%s\n", failures == 0 ? "linear_emu: all passed" : "linear_emu: FAILED");
    return failures == 0 ? 0 : 1;
}
