// The CUDA LayerNorm and GELU kernels (native/cuda/layernorm.cu, gelu.cu), run on the CPU by the emulator
// (libdistill4j_cudaemu), against float64 references written here from the definitions in distill4j_impl.h,
// through the dispatch API as Java calls them.
//
//   norm_act_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>
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
//
// GELU with bf16 outputs (d4j_gelu_forward_bf16 / _backward_bf16), on the CPU backend and the emulated CUDA one:
//   contract   every element is the fp32 entry's value rounded to nearest even, NaN -> quiet NaN with its sign (the
//              rounding written here from the definition, on the float64 value, not the library's): bit for bit
//   accuracy   against bf16(float64 reference), rounded by the same definition: the fp32 value is within
//              e of the reference, the fp32 bounds above: e = 1e-6 |ref| for y (FLT_MIN where |ref| < FLT_MIN),
//              1e-6 |ref| + 1e-7 |dy| for dx. The bf16 output must be a rounding of some value in [ref - e,
//              ref + e]. Where e is relative (1e-6, far below half a bf16 ulp, 2^-9) that is bf16(ref) or, only
//              where a rounding midpoint lies within e of ref, its neighbour: one bf16 ulp. The absolute terms
//              (1e-7 |dy| where gelu' underflows in fp32 near x = -13, FLT_MIN for tiny y) allow what the fp32
//              bound allows. A non-finite reference (gelu(-inf)
//              = -inf * 0, dy gelu'(+inf) = dy (1 + inf * 0): NaN in float64 too; +inf) must be matched in kind.
//   cases      n = 1, 7 (the CPU's scalar tail only), 33, 3000, 4097 (CPU: one 4096 block and a 1-element one),
//              9001 (emulated grid-stride: 8 blocks of 256, five turns); exact bf16 ties in y (x in [8, 16), where
//              Phi is 1.0f and y = x) and in dx (x >= 7, gelu' = 1.0f, dx = dy): truncation and ties-away differ;
//              NaN with payloads and both signs, +-inf, +-0, subnormals, past the clamp, NaN in dy.
// LayerNorm forward with bf16 y (d4j_layernorm_forward_bf16), both backends: see layernorm_bf16_case.
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

// ---- GELU with bf16 outputs.

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

double bf16_value(uint16_t b) { return float_of(static_cast<uint32_t>(b) << 16); }

// r rounded to bf16 by the definition (IEEE round to nearest, ties to even, 8-bit significand, fp32's exponent
// range with subnormals spaced 2^-133, overflow to infinity at the midpoint past the largest finite value), and
// how far r lies from the nearest rounding midpoint (for the one-ulp allowance). NaN -> quiet NaN with its sign.
uint16_t bf16_def(double r, double *midpoint_dist = nullptr) {
    if (midpoint_dist != nullptr) *midpoint_dist = INFINITY;
    if (std::isnan(r)) {
        const uint32_t u = bits_of(static_cast<float>(r));  // NaN's sign and upper payload survive the narrowing
        return static_cast<uint16_t>((u >> 16) | 0x0040u);
    }
    const uint16_t sign = std::signbit(r) ? 0x8000 : 0;
    const double a = std::fabs(r);
    if (std::isinf(a)) return sign | 0x7f80;
    if (a == 0.0) {
        if (midpoint_dist != nullptr) *midpoint_dist = std::ldexp(1.0, -134);
        return sign;
    }
    const int e = std::max(std::ilogb(a), -126);
    const double q = std::ldexp(1.0, e - 7), k = a / q;  // exact: q is a power of 2
    double f = std::floor(k);
    const double rem = k - f;
    if (rem > 0.5 || (rem == 0.5 && std::fmod(f, 2.0) == 1.0)) f += 1.0;
    if (midpoint_dist != nullptr) {
        double d = std::fabs(rem - 0.5) * q;
        if (e > -126) d = std::min(d, (k - 128.0) * q + 0.25 * q);  // the midpoint just below the binade
        *midpoint_dist = d;
    }
    const double v = f * q;
    if (v >= std::ldexp(1.0, 128)) return sign | 0x7f80;
    return static_cast<uint16_t>(sign | (bits_of(static_cast<float>(v)) >> 16));
}

// One output element against its fp32 twin and its float64 reference; why it failed, or nullptr. The fp32 value
// lies within e of the reference, so its rounding lies between the roundings of ref - e and ref + e (rounding is
// monotone): with e below half a bf16 ulp that is the reference's rounding or, where a midpoint lies within e of
// the reference, its neighbour across that midpoint (one ulp).
const char *bf16_verdict(uint16_t got, float fp32, double ref, double e) {
    if (got != bf16_def(fp32)) return "not bf16(fp32 value)";
    if (std::isnan(ref)) return std::isnan(bf16_value(got)) ? nullptr : "reference NaN";
    if (std::isinf(ref)) return got == bf16_def(ref) ? nullptr : "reference infinite";
    const double g = bf16_value(got);
    if (!(g >= bf16_value(bf16_def(ref - e)) && g <= bf16_value(bf16_def(ref + e)))) return "off the reference";
    return nullptr;
}

void gelu_bf16_case(d4j_backend *be, const char *name, int64_t n, std::mt19937_64 &rng) {
    buffer x(n), dy(n), y32(n), dx32(n);
    x.random(rng), dy.random(rng);
    for (int64_t i = 0; i < n; ++i) x.p[i] = i < 14 * 128 + 1 ? -14.0f + i / 64.0f : 4.0f * x.p[i];
    if (n >= 3000)
        for (int k = 0; k < 128; ++k) {
            x.p[1800 + k] = 8.0f + (2 * k + 1) * 0x1p-5f;           // a tie of [8, 16): y = x
            x.p[1928 + k] = 7.0f + k / 16.0f;                        // gelu' = 1.0f: dx = dy
            dy.p[1928 + k] = (k % 2 ? -1.0f : 1.0f) * (1.0f + (2 * (k / 2) + 1) * 0x1p-8f);  // a tie of [1, 2)
        }
    const float specials[] = {NAN, -NAN, float_of(0x7f800001u), float_of(0xffc12345u), INFINITY, -INFINITY, 0.0f,
                              -0.0f, 0x1p-140f, -0x1p-140f, 1e-39f, -1e-39f, 3e38f, -3e38f, 25.0f, -25.0f, 1e20f};
    const int64_t nspec = sizeof specials / sizeof specials[0];
    for (int64_t k = 0; k < std::min<int64_t>(nspec, n / 2); ++k) x.p[n - 1 - k] = specials[k];
    // dy not finite where gelu'(x) is a normal float (x = 0.5, -1.5): NaN and -inf times it.
    if (n >= 33) dy.p[n / 3] = NAN, dy.p[n / 3 + 1] = -INFINITY, x.p[n / 3] = 0.5f, x.p[n / 3 + 1] = -1.5f;
    std::vector<uint16_t> y(n, 0xffff), dx(n, 0xffff);
    const int rc = d4j_gelu_forward(be, nullptr, x.p, n, y32.p) | d4j_gelu_backward(be, nullptr, x.p, dy.p, n, dx32.p) |
                   d4j_gelu_forward_bf16(be, nullptr, x.p, n, y.data()) |
                   d4j_gelu_backward_bf16(be, nullptr, x.p, dy.p, n, dx.data());
    if (rc != 0) std::printf("  failed: %s\n", d4j_backend_last_error(be));
    bool ok = rc == 0;
    int shown = 0;
    int64_t off_by_one = 0;  // outputs not equal to bf16(reference): allowed, counted
    for (int64_t i = 0; i < n; ++i) {
        const double v = x.p[i], cdf = phi_cdf(v), pdf = std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
        const double ry = v * cdf, rdx = dy.p[i] * (cdf + v * pdf);
        // Below FLT_MIN the fp32 bound is absolute: |y| < FLT_MIN (the CPU's exp flushes under e^-87).
        const double ey = std::fabs(ry) < 0x1p-126 ? 0x1p-126 : 1e-6 * std::fabs(ry);
        const char *why_y = bf16_verdict(y[i], y32.p[i], ry, ey);
        const char *why_dx = bf16_verdict(dx[i], dx32.p[i], rdx, 1e-6 * std::fabs(rdx) + 1e-7 * std::fabs(dy.p[i]));
        // The fp32 value itself NaN where the reference is finite would pass the contract check only.
        if (std::isfinite(ry) && std::isnan(y32.p[i])) why_y = "fp32 NaN";
        if (std::isfinite(rdx) && std::isnan(dx32.p[i])) why_dx = "fp32 NaN";
        // x NaN: its own bits come through, quieted (the fp32 kernels write x).
        if (std::isnan(v) && (y[i] != bf16_def(v) || dx[i] != bf16_def(v))) why_y = "NaN's bits";
        off_by_one += (why_y == nullptr && bf16_value(y[i]) != bf16_value(bf16_def(ry))) +
                      (why_dx == nullptr && bf16_value(dx[i]) != bf16_value(bf16_def(rdx)));
        if ((why_y != nullptr || why_dx != nullptr) && shown++ < 5)
            std::printf("  %s n=%lld i=%lld x=%a dy=%a: y %04x (%s) dx %04x (%s)\n", name, static_cast<long long>(n),
                        static_cast<long long>(i), x.p[i], dy.p[i], y[i], why_y ? why_y : "ok", dx[i],
                        why_dx ? why_dx : "ok");
        ok = ok && why_y == nullptr && why_dx == nullptr;
    }
    char what[96];
    std::snprintf(what, sizeof what, "gelu bf16 %s n=%lld (%lld not bf16(ref))", name, static_cast<long long>(n),
                  static_cast<long long>(off_by_one));
    report(ok, what, 0.0);
}

// LayerNorm forward with bf16 y: mean and rstd the fp32 forward's bits, each y bf16_def of the fp32 y, and within
// the roundings of [ref - e, ref + e], e = 1e-5 (|w| (|xhat| + rstd |mean|) + |b|): the existing 1e-5 relative
// bound taken element by element over the magnitudes that enter y (x - mean cancels: the mean's error scales with
// |mean| rstd), checked on the fp32 y first, so that a wrong e fails there and not as a bf16 error.
void layernorm_bf16_case(d4j_backend *be, const char *name, int64_t M, int64_t C, bool with_nan, std::mt19937_64 &rng) {
    const float eps = 1e-6f;
    buffer x(M * C), w(C), b(C), y32(M * C), mean32(M), rstd32(M), mean(M), rstd(M);
    x.random(rng), w.random(rng), b.random(rng);
    for (size_t i = 0; i < x.n; ++i) x.p[i] = 2.0f * x.p[i] + 3.0f;
    if (with_nan) x.p[C / 2] = NAN;  // row 0: all NaN
    mean.fill(NAN), rstd.fill(NAN);
    std::vector<uint16_t> y(M * C, 0xffff);
    const int rc = d4j_layernorm_forward(be, nullptr, x.p, w.p, b.p, M, C, eps, y32.p, mean32.p, rstd32.p) |
                   d4j_layernorm_forward_bf16(be, nullptr, x.p, w.p, b.p, M, C, eps, y.data(), mean.p, rstd.p);
    if (rc != 0) std::printf("  failed: %s\n", d4j_backend_last_error(be));
    bool ok = rc == 0 && std::memcmp(mean.p, mean32.p, M * 4) == 0 && std::memcmp(rstd.p, rstd32.p, M * 4) == 0;
    int shown = 0;
    int64_t not_ref = 0;
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x.p + m * C;
        double s = 0.0, sq = 0.0;
        for (int64_t c = 0; c < C; ++c) s += xr[c];
        const double mu = s / C;
        for (int64_t c = 0; c < C; ++c) sq += (xr[c] - mu) * (xr[c] - mu);
        const double r = 1.0 / std::sqrt(sq / C + eps);
        for (int64_t c = 0; c < C; ++c) {
            const double xhat = (xr[c] - mu) * r, ref = xhat * w.p[c] + b.p[c];
            const double e = 1e-5 * (std::fabs(w.p[c]) * (std::fabs(xhat) + r * std::fabs(mu)) + std::fabs(b.p[c]));
            const float f = y32.p[m * C + c];
            const uint16_t got = y[m * C + c];
            const char *why = std::isnan(ref) ? (std::isnan(f) ? nullptr : "fp32 not NaN")
                                              : (std::fabs(f - ref) <= e ? nullptr : "fp32 y outside e");
            if (why == nullptr) why = bf16_verdict(got, f, ref, e);
            not_ref += why == nullptr && !std::isnan(ref) && bf16_value(got) != bf16_value(bf16_def(ref));
            if (why != nullptr && shown++ < 5)
                std::printf("  %s M=%lld C=%lld row %lld col %lld: y %04x, fp32 %a, ref %a (%s)\n", name,
                            static_cast<long long>(M), static_cast<long long>(C), static_cast<long long>(m),
                            static_cast<long long>(c), got, f, ref, why);
            ok = ok && why == nullptr;
        }
    }
    char what[112];
    std::snprintf(what, sizeof what, "layernorm bf16 %s M=%lld C=%lld%s (%lld not bf16(ref))", name,
                  static_cast<long long>(M), static_cast<long long>(C), with_nan ? " NaN" : "",
                  static_cast<long long>(not_ref));
    report(ok, what, 0.0);
}

// The rounding definition above against known bits, so that a wrong reference cannot pass a wrong kernel.
bool bf16_def_selfcheck() {
    return bf16_def(1.0) == 0x3f80 && bf16_def(1.0 + 0x1p-8) == 0x3f80 && bf16_def(1.0 + 3 * 0x1p-8) == 0x3f82 &&
           bf16_def(1.0 + 0x1p-8 + 0x1p-30) == 0x3f81 && bf16_def(-2.0) == 0xc000 && bf16_def(0x1p-133) == 0x0001 &&
           bf16_def(0x1p-134) == 0x0000 && bf16_def(3 * 0x1p-134) == 0x0002 && bf16_def(3.4e38) == 0x7f80 &&
           bf16_def(3.38e38) == 0x7f7e && bf16_def(-1e300) == 0xff80 && bf16_def(float_of(0xffc12345u)) == 0xffc1 &&
           bf16_def(float_of(0x7f800001u)) == 0x7fc0 && bf16_def(-0.0) == 0x8000;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: norm_act_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *cpu = d4j_test::open_backend(argv[1]), *emu = d4j_test::open_backend(argv[2]);
    if (cpu == nullptr || emu == nullptr) return 1;
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
    report(bf16_def_selfcheck(), "bf16 rounding definition (known bits)", 0.0);
    for (int64_t n : {1, 7, 33, 3000, 4097, 9001}) {
        gelu_bf16_case(cpu, "cpu", n, rng);
        gelu_bf16_case(emu, "cuda-emu", n, rng);
    }
    // Rows: one, a partial block of 8 warps (9), several blocks (70); C: below, at and past the CPU's vector of 8
    // and the warp's 32 lanes (the tails of both), and many per lane.
    for (int64_t M : {1, 9, 70})
        for (int64_t C : {1, 7, 8, 31, 33, 100, 300})
            for (d4j_backend *be : {cpu, emu})
                layernorm_bf16_case(be, be == cpu ? "cpu" : "cuda-emu", M, C, false, rng);
    for (d4j_backend *be : {cpu, emu}) layernorm_bf16_case(be, be == cpu ? "cpu" : "cuda-emu", 9, 33, true, rng);
    buffer a(64), ws(64);
    auto expect_failure = [&](const char *what, bool failed, d4j_backend *be = nullptr) {
        ++cases;
        if (!failed) ++failures;
        std::printf("rejects %-36s | %s | %s\n", what, failed ? d4j_backend_last_error(be ? be : emu) : "(accepted)",
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
    uint16_t h[8];
    for (d4j_backend *be : {cpu, emu}) {
        expect_failure("gelu_forward_bf16 n = 0", d4j_gelu_forward_bf16(be, nullptr, a.p, 0, h) != 0, be);
        expect_failure("gelu_forward_bf16 n < 0", d4j_gelu_forward_bf16(be, nullptr, a.p, -1, h) != 0, be);
        expect_failure("gelu_forward_bf16 null y", d4j_gelu_forward_bf16(be, nullptr, a.p, 8, nullptr) != 0, be);
        expect_failure("gelu_forward_bf16 null x", d4j_gelu_forward_bf16(be, nullptr, nullptr, 8, h) != 0, be);
        expect_failure("gelu_backward_bf16 null dy", d4j_gelu_backward_bf16(be, nullptr, a.p, nullptr, 8, h) != 0, be);
        expect_failure("gelu_backward_bf16 null dx",
                       d4j_gelu_backward_bf16(be, nullptr, a.p, a.p, 8, nullptr) != 0, be);
        expect_failure("gelu_backward_bf16 n = 0", d4j_gelu_backward_bf16(be, nullptr, a.p, a.p, 0, h) != 0, be);
        expect_failure("layernorm_forward_bf16 M = 0",
                       d4j_layernorm_forward_bf16(be, nullptr, a.p, a.p, a.p, 0, 4, 1e-6f, h, a.p, a.p) != 0, be);
        expect_failure("layernorm_forward_bf16 C = 0",
                       d4j_layernorm_forward_bf16(be, nullptr, a.p, a.p, a.p, 2, 0, 1e-6f, h, a.p, a.p) != 0, be);
        expect_failure("layernorm_forward_bf16 eps < 0",
                       d4j_layernorm_forward_bf16(be, nullptr, a.p, a.p, a.p, 2, 4, -1.0f, h, a.p, a.p) != 0, be);
        expect_failure("layernorm_forward_bf16 null y",
                       d4j_layernorm_forward_bf16(be, nullptr, a.p, a.p, a.p, 2, 4, 1e-6f, nullptr, a.p, a.p) != 0, be);
        expect_failure("layernorm_forward_bf16 null rstd",
                       d4j_layernorm_forward_bf16(be, nullptr, a.p, a.p, a.p, 2, 4, 1e-6f, h, a.p, nullptr) != 0, be);
    }
    std::printf("%d of %d checks passed (seed %llu)\n", cases - failures, cases, static_cast<unsigned long long>(seed));
    d4j_backend_close(emu);
    d4j_backend_close(cpu);
    return failures == 0 ? 0 : 1;
}
