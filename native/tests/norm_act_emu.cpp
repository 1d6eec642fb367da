// The CUDA LayerNorm and GELU kernels (native/cuda/layernorm.cu, gelu.cu), run on the CPU by the emulator
// (libdistill4j_cudaemu), against float64 references written here from the definitions in distill4j_impl.h,
// through the dispatch API as Java calls them.
//
//   norm_act_emu <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (the seed is printed; D4J_SEED=<seed> repeats a run).
//
// Branches and thresholds, and the cases that reach them:
//   layernorm_fwd       warp per row, 8 rows per block, rows past M leave: M = 9, 70 (partial last block)
//                       C below, at, across 32 (idle lanes, several per lane): C = 1, 31, 32, 33, 100, 300
//   layernorm_bwd_rows  W = min(M, 1024) warps; a warp takes rows w, w + W, ...: M = 1033, 2100 (M <= 1024: one row)
//   layernorm_bwd_groups W > 32 only: CTA (64 columns, group of 32 slices), the sum in place over the group's first
//                       slice: W = M = 32 (not run), 33 (a second group of one slice), 64 (two full groups), 70 (the
//                       last of 6), 100 (the last of 4), 1024 = W's cap (32 full groups), 1033, 2100 (W = 1024)
//   layernorm_bwd_params one thread per column of [dweight | dbias], 64 per block, over the slices (W <= 32) or the
//                       group sums: 2C = 2 (C = 1), 64 (one full tile), 66 (a tile and 2 columns), 2000 (32 tiles)
//   gelu_phi            x clamped to +-20 (x^2 overflows from 1.8e19): x = +-25, +-1e20, +-3e38; erfc side x < 0
//   gelu grid           grid-stride (8 blocks of 256 emulated): n = 3000 (two turns), 9001 (five); n = 33
// LayerNorm: y, mean, rstd (pre-filled with NaN: an element left unwritten fails) and, from pre-filled random
// dx, dweight, dbias, their accumulated gradients, each by ||x - ref|| / ||ref|| <= 1e-5; a second backward from
// the same pre-fill must give the same bits (fixed-order reduction). Shapes: M = 1 and M past the warp count
// per block, C = 1, C below, at and across multiples of 32. The workspace is pre-filled with NaN.
// dweight and dbias must also be the bits of layernorm.cu's documented order, modelled here in float (order_model):
// the tolerance and the run-to-run check pass any fixed order, this one only the order the header promises.
// GELU: every element of y within 1e-6 relative of x Phi(x) (Phi from erfc, float64: no cancellation for x < 0)
// where y is a normal float; dx within 1e-6 relative + 1e-7 |dy|; then in place over dy. Exit 1 on any failure.
#include "distill4j.h"
#include "harness.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using d4j_test::buffer;

int failures = 0, cases = 0;

// ||x - ref|| / ||scale||, scale = ref unless given (a sum's error is relative to its terms' magnitudes, not to
// the sum: dbias[c] = pre-fill + sum over M rows of dy can cancel to near 0 where C = 1 leaves one column).
double rel_err(const float *x, const std::vector<double> &ref, const std::vector<double> *scale = nullptr) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double diff = static_cast<double>(x[i]) - ref[i], si = scale != nullptr ? (*scale)[i] : ref[i];
        d += diff * diff;
        r += si * si;
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

void report(bool ok, const char *fmt_what, double err) {
    ++cases;
    if (!ok) ++failures;
    std::printf("%-44s | max rel err %.1e | %s\n", fmt_what, err, ok ? "ok" : "FAILED");
}

// The order layernorm.cu's header documents for dweight, dbias, from the pre-fill and the kernel's own mean and
// rstd (checked against float64 on their own): slice w holds rows w, w + W, ... (W = min(M, 1024)) accumulated as
// kernel 1 does (dy xhat by one fma, xhat = (x - mean) rstd); for W > 32 each group of 32 slices is summed in slice
// order, then the group sums in group order; for W <= 32 the slices in order. Every step a correctly rounded float
// operation: the bits the kernels must give.
void order_model(const float *x, const float *dy, const float *mean, const float *rstd, int64_t M, int64_t C,
                 const float *dw0, const float *db0, std::vector<float> &dw, std::vector<float> &db) {
    const int64_t W = std::min<int64_t>(M, 1024), G = 32;
    std::vector<float> slice(W * 2 * C, 0.0f);
    for (int64_t w = 0; w < W; ++w)
        for (int64_t row = w; row < M; row += W)
            for (int64_t c = 0; c < C; ++c) {
                const float xhat = (x[row * C + c] - mean[row]) * rstd[row], d = dy[row * C + c];
                float &pw = slice[w * 2 * C + c], &pb = slice[w * 2 * C + C + c];
                pw = std::fma(d, xhat, pw);
                pb = pb + d;
            }
    std::vector<float> sums(2 * C);
    for (int64_t j = 0; j < 2 * C; ++j) {
        float total = 0.0f;
        if (W <= G) {
            total = slice[j];
            for (int64_t w = 1; w < W; ++w) total = total + slice[w * 2 * C + j];
        } else {
            for (int64_t first = 0; first < W; first += G) {
                float s = slice[first * 2 * C + j];
                for (int64_t w = first + 1; w < std::min(first + G, W); ++w) s = s + slice[w * 2 * C + j];
                total = first == 0 ? s : total + s;
            }
        }
        sums[j] = total;
    }
    dw.resize(C), db.resize(C);
    for (int64_t c = 0; c < C; ++c) dw[c] = dw0[c] + sums[c], db[c] = db0[c] + sums[C + c];
}

void layernorm_case(d4j_backend *emu, int64_t M, int64_t C, std::mt19937_64 &rng) {
    const float eps = 1e-6f;
    buffer x(M * C), w(C), b(C), y(M * C), mean(M), rstd(M), dy(M * C), dx(M * C), dw(C), db(C);
    buffer dx2(M * C), dw2(C), db2(C);
    x.random(rng), w.random(rng), b.random(rng), dy.random(rng), dx.random(rng), dw.random(rng), db.random(rng);
    for (size_t i = 0; i < x.n; ++i) x.p[i] = 2.0f * x.p[i] + 3.0f;  // a mean far from 0
    std::memcpy(dx2.p, dx.p, dx.n * sizeof(float));
    std::memcpy(dw2.p, dw.p, dw.n * sizeof(float));
    std::memcpy(db2.p, db.p, db.n * sizeof(float));
    const std::vector<float> dw0(dw.p, dw.p + C), db0(db.p, db.p + C);
    y.fill(NAN), mean.fill(NAN), rstd.fill(NAN);

    // float64 reference, gradients added to the pre-fill.
    std::vector<double> ry(M * C), rmean(M), rrstd(M), rdx(M * C), rdw(C), rdb(C), xhat(C), mdw(C), mdb(C);
    for (int64_t c = 0; c < C; ++c) {
        rdw[c] = dw.p[c], rdb[c] = db.p[c];
        mdw[c] = std::fabs(dw.p[c]), mdb[c] = std::fabs(db.p[c]);
    }
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x.p + m * C, *dyr = dy.p + m * C;
        double s = 0.0, sq = 0.0;
        for (int64_t c = 0; c < C; ++c) s += xr[c];
        const double mu = s / C;
        for (int64_t c = 0; c < C; ++c) sq += (xr[c] - mu) * (xr[c] - mu);
        const double r = 1.0 / std::sqrt(sq / C + eps);
        rmean[m] = mu, rrstd[m] = r;
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = 0; c < C; ++c) {
            xhat[c] = (xr[c] - mu) * r;
            ry[m * C + c] = xhat[c] * w.p[c] + b.p[c];
            const double g = static_cast<double>(dyr[c]) * w.p[c];
            sg += g, sgx += g * xhat[c];
            rdw[c] += dyr[c] * xhat[c];
            rdb[c] += dyr[c];
            mdw[c] += std::fabs(dyr[c] * xhat[c]);
            mdb[c] += std::fabs(dyr[c]);
        }
        for (int64_t c = 0; c < C; ++c)
            rdx[m * C + c] = dx.p[m * C + c] + r * (static_cast<double>(dyr[c]) * w.p[c] - sg / C - xhat[c] * sgx / C);
    }

    const int64_t ws_bytes = d4j_layernorm_workspace(emu, M, C);
    buffer ws(ws_bytes > 0 ? static_cast<size_t>(ws_bytes) / sizeof(float) : 0);
    ws.fill(NAN);
    const int rc_f = d4j_layernorm_forward(emu, nullptr, x.p, w.p, b.p, M, C, eps, y.p, mean.p, rstd.p);
    const int rc_b = d4j_layernorm_backward(emu, nullptr, x.p, w.p, mean.p, rstd.p, dy.p, M, C, dx.p, dw.p, db.p, ws.p);
    ws.fill(NAN);
    const int rc_b2 =
        d4j_layernorm_backward(emu, nullptr, x.p, w.p, mean.p, rstd.p, dy.p, M, C, dx2.p, dw2.p, db2.p, ws.p);
    if (rc_f != 0 || rc_b != 0 || rc_b2 != 0) std::printf("  failed: %s\n", d4j_backend_last_error(emu));
    // C = 1: the true dx is its pre-fill, which the kernel keeps exactly (x - mean and g - mean(g) are 0).
    const double err = d4j_test::worst({rel_err(y.p, ry), rel_err(mean.p, rmean), rel_err(rstd.p, rrstd),
                                        rel_err(dw.p, rdw, &mdw), rel_err(db.p, rdb, &mdb), rel_err(dx.p, rdx)});
    const bool same = std::memcmp(dx.p, dx2.p, dx.n * 4) == 0 && std::memcmp(dw.p, dw2.p, dw.n * 4) == 0 &&
                      std::memcmp(db.p, db2.p, db.n * 4) == 0;
    std::vector<float> mdw_bits, mdb_bits;
    order_model(x.p, dy.p, mean.p, rstd.p, M, C, dw0.data(), db0.data(), mdw_bits, mdb_bits);
    const bool ordered =
        std::memcmp(dw.p, mdw_bits.data(), C * 4) == 0 && std::memcmp(db.p, mdb_bits.data(), C * 4) == 0;
    char what[112];
    std::snprintf(what, sizeof what, "layernorm M=%lld C=%lld ws=%lld B%s%s", static_cast<long long>(M),
                  static_cast<long long>(C), static_cast<long long>(ws_bytes), same ? "" : " (2nd run differs)",
                  ordered ? "" : " (not the documented order)");
    report(rc_f == 0 && rc_b == 0 && rc_b2 == 0 && ws_bytes >= 0 && d4j_test::within(err, 1e-5) && same && ordered,
           what, err);
}

double phi_cdf(double x) {
    const double half = 0.5 * std::erfc(std::fabs(x) / std::sqrt(2.0));
    return x < 0 ? half : 1.0 - half;
}

void gelu_case(d4j_backend *emu, int64_t n, std::mt19937_64 &rng) {
    buffer x(n), y(n), dy(n), dx(n), dy0(n);
    x.random(rng), dy.random(rng);
    std::memcpy(dy0.p, dy.p, n * sizeof(float));
    for (int64_t i = 0; i < n; ++i) x.p[i] = i < 14 * 128 + 1 ? -14.0f + i / 64.0f : 4.0f * x.p[i];  // sweep, then tails
    // Past the kernel's clamp at +-20: x^2 overflows float from |x| = 1.8e19 on.
    const float huge[] = {1e20f, -1e20f, 3e38f, -3e38f, 25.0f, -25.0f};
    if (n >= 3000)
        for (int k = 0; k < 6; ++k) x.p[n - 1 - k] = huge[k];
    y.fill(NAN), dx.fill(NAN);
    const int rc_f = d4j_gelu_forward(emu, nullptr, x.p, n, y.p);
    const int rc_b = d4j_gelu_backward(emu, nullptr, x.p, dy.p, n, dx.p);
    const int rc_i = d4j_gelu_backward(emu, nullptr, x.p, dy.p, n, dy.p);  // in place: dy becomes dx
    if (rc_f != 0 || rc_b != 0 || rc_i != 0) std::printf("  failed: %s\n", d4j_backend_last_error(emu));
    double worst = 0.0;
    bool ok = rc_f == 0 && rc_b == 0 && rc_i == 0 && std::memcmp(dx.p, dy.p, n * 4) == 0;
    for (int64_t i = 0; i < n; ++i) {
        const double v = x.p[i], cdf = phi_cdf(v), pdf = std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
        const double ry = v * cdf;
        if (std::fabs(ry) >= 1.17549435e-38) {
            const double e = std::fabs(y.p[i] - ry) / std::fabs(ry);
            worst = d4j_test::worst(worst, e);
            ok = ok && d4j_test::within(e, 1e-6);
        } else {
            ok = ok && std::fabs(y.p[i]) < 1.17549435e-38;  // 0 (or x = -1e20: -0); NaN fails
        }
        // gelu' crosses 0 near x = -0.75, where only an absolute bound means anything.
        const double rdx = dy0.p[i] * (cdf + v * pdf);
        ok = ok && std::fabs(dx.p[i] - rdx) <= 1e-6 * std::fabs(rdx) + 1e-7 * std::fabs(dy0.p[i]);
    }
    char what[96];
    std::snprintf(what, sizeof what, "gelu n=%lld (y, dx per element)", static_cast<long long>(n));
    report(ok, what, worst);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: norm_act_emu <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *emu = d4j_test::open_backend(argv[1]);
    if (emu == nullptr) return 1;
    const uint64_t seed = d4j_test::test_seed("norm_act_emu");
    std::mt19937_64 rng(seed);
    for (int64_t M : {1, 9, 70})
        for (int64_t C : {1, 31, 32, 33, 100, 300}) layernorm_case(emu, M, C, rng);
    // The parameter-gradient passes around the group size 32 (W = M here), across the column tile of 64.
    for (int64_t M : {32, 33, 64})
        for (int64_t C : {1, 32, 33}) layernorm_case(emu, M, C, rng);
    layernorm_case(emu, 100, 1000, rng);  // large C: 32 tiles; 4 groups, the last of 4 slices
    layernorm_case(emu, 1024, 33, rng);   // W at its cap exactly: 32 full groups, one row per warp
    // Past 1024 rows the backward's warps take several rows each (1033: rows w and w + 1024; 2100: up to three).
    layernorm_case(emu, 1033, 33, rng);
#ifndef D4J_TEST_SANITIZED
    layernorm_case(emu, 2100, 5, rng);  // under a sanitizer 1033 alone: 260 blocks, seconds there
#endif
    for (int64_t n : {1, 33, 3000, 9001}) gelu_case(emu, n, rng);
    buffer a(64), ws(64);
    auto expect_failure = [&](const char *what, bool failed) {
        ++cases;
        if (!failed) ++failures;
        std::printf("rejects %-36s | %s | %s\n", what, failed ? d4j_backend_last_error(emu) : "(accepted)",
                    failed ? "ok" : "FAILED");
    };
    expect_failure("layernorm M = 0", d4j_layernorm_forward(emu, nullptr, a.p, a.p, a.p, 0, 8, 1e-6f, a.p, a.p, a.p) != 0);
    expect_failure("layernorm null bias",
                   d4j_layernorm_forward(emu, nullptr, a.p, a.p, nullptr, 2, 8, 1e-6f, a.p, a.p, a.p) != 0);
    expect_failure("layernorm backward without workspace", d4j_layernorm_backward(emu, nullptr, a.p, a.p, a.p, a.p,
                                                                                   a.p, 2, 8, a.p, a.p, a.p, nullptr) != 0);
    expect_failure("layernorm workspace C = 0", d4j_layernorm_workspace(emu, 4, 0) < 0);
    expect_failure("gelu n = 0", d4j_gelu_forward(emu, nullptr, a.p, 0, a.p) != 0);
    expect_failure("gelu null dy", d4j_gelu_backward(emu, nullptr, a.p, nullptr, 8, a.p) != 0);
    std::printf("%d of %d checks passed (seed %llu)\n", cases - failures, cases, static_cast<unsigned long long>(seed));
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
