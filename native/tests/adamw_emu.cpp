// The CUDA gradient-norm (sum of squares, clip coefficient) and AdamW kernels (native/cuda/adamw.cu), run on the
// CPU by the emulator (libdistill4j_cudaemu), against float64 references written here from the definitions in
// distill4j_impl.h, through the dispatch API as Java calls them.
//
//   adamw_emu <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (D4J_SEED=<seed> repeats one). sum_squares: several tensors accumulated in order,
// aligned and misaligned (float4 and scalar paths), n = 0, 1, 3, 4099, 70001; the same bits on a second run.
// clip_scale: clipping and no clipping. AdamW: several steps with weight decay and a device-side gradient scale,
// param, m and v against float64 with ||x - ref|| / ||ref|| <= 1e-5 (m against the norm of its terms' magnitudes:
// at n = 1 random steps can nearly cancel m, which no fp32 sum then holds to 1e-5 of itself); n not a multiple of
// the block. Then the argument checks. Exit 1 if anything fails.
//
// Branches and thresholds, and the cases that reach them:
//   sum_squares_block  one block of 1024: float4 loop (aligned x) + scalar tail (n % 4 = 1, 3), scalar only
//                      (misaligned x: n = 3, 70001), n = 0, n < 1024 (idle threads), accumulate 0 / 1
//   clip_scale_one     coef > 1 (no clipping) and < 1
//   adamw_step         n = 1, 255 (partial block), 4099 (grid-stride: 8 blocks of 256 emulated); grad_scale null
//                      or device-side
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

void expect(bool ok, const char *what) {
    ++cases;
    if (!ok) ++failures;
    std::printf("%-72s | %s\n", what, ok ? "ok" : "FAILED");
}

// ||x - ref|| / ||scale||, scale = ref unless given.
double rel_err(const float *x, const std::vector<double> &ref, const std::vector<double> *scale = nullptr) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double diff = static_cast<double>(x[i]) - ref[i], si = scale != nullptr ? (*scale)[i] : ref[i];
        d += diff * diff;
        r += si * si;
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

void grad_norm(d4j_backend *emu, std::mt19937_64 &rng) {
    const int64_t sizes[] = {1, 3, 0, 4099, 70001};
    std::vector<buffer *> gs;
    double ref = 0.0;
    for (int64_t n : sizes) {
        gs.push_back(new buffer(n + 1));
        gs.back()->random(rng);
    }
    auto run = [&](float *out) {
        int rc = 0, k = 0;
        for (buffer *g : gs) {
            const int64_t n = static_cast<int64_t>(g->n) - 1;
            // odd tensors start one float in: the kernel's scalar path
            rc |= d4j_sum_squares(emu, nullptr, g->p + (k % 2), n, k == 0 ? 0 : 1, out);
            ++k;
        }
        return rc;
    };
    int k = 0;
    for (buffer *g : gs) {
        for (size_t i = 0; i + 1 < g->n; ++i) ref += static_cast<double>(g->p[i + (k % 2)]) * g->p[i + (k % 2)];
        ++k;
    }
    buffer out(1), out2(1), norm(1), scale(1);
    out.fill(NAN), out2.fill(12345.0f);
    const int rc = run(out.p), rc2 = run(out2.p);
    char what[128];
    std::snprintf(what, sizeof what, "sum_squares over 5 tensors: %.6g vs %.6g (rel err %.1e)", out.p[0], ref,
                  std::fabs(out.p[0] - ref) / ref);
    expect(rc == 0 && rc2 == 0 && std::fabs(out.p[0] - ref) <= 1e-6 * ref, what);
    expect(std::memcmp(out.p, out2.p, sizeof(float)) == 0, "sum_squares: the same bits on a second run");
    const double n_ref = std::sqrt(ref);
    for (double max_norm : {n_ref / 3.0, n_ref * 2.0}) {
        norm.fill(NAN), scale.fill(NAN);
        const int rc3 = d4j_clip_scale(emu, nullptr, out.p, static_cast<float>(max_norm), norm.p, scale.p);
        const double s_ref = std::min(1.0, max_norm / (n_ref + 1e-6));
        std::snprintf(what, sizeof what, "clip_scale max_norm=%.4g: norm %.6g scale %.6g (ref %.6g)", max_norm,
                      norm.p[0], scale.p[0], s_ref);
        expect(rc3 == 0 && std::fabs(norm.p[0] - n_ref) <= 1e-6 * n_ref && std::fabs(scale.p[0] - s_ref) <= 1e-6 * s_ref,
               what);
    }
    for (buffer *g : gs) delete g;
}

void adamw_case(d4j_backend *emu, int64_t n, double lr_d, double wd_d, bool scaled, std::mt19937_64 &rng) {
    const float lr = static_cast<float>(lr_d), wd = static_cast<float>(wd_d);
    // The reference uses the decimals a PyTorch user writes (0.999, not 0.999f widened: 1 - b2 differs by 1.3e-5).
    const double B1 = 0.9, B2 = 0.999, EPS = 1e-8;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    buffer p(n), g(n), m(n), v(n), s(1);
    p.random(rng);
    m.fill(0.0f), v.fill(0.0f);
    std::vector<double> pr(p.p, p.p + n), mr(n, 0.0), vr(n, 0.0), m_mag(n, 0.0);
    int rc = 0;
    for (int64_t step = 1; step <= 4; ++step) {
        g.random(rng);
        s.p[0] = scaled ? 0.25f + 0.25f * static_cast<float>(step) : 1.0f;
        rc |= d4j_adamw(emu, nullptr, p.p, g.p, m.p, v.p, n, lr, b1, b2, eps, wd, step, scaled ? s.p : nullptr);
        const double bc1 = 1.0 - std::pow(B1, double(step)), bc2 = 1.0 - std::pow(B2, double(step));
        for (int64_t i = 0; i < n; ++i) {
            const double gi = static_cast<double>(g.p[i]) * s.p[0];
            pr[i] *= 1.0 - lr_d * wd_d;
            mr[i] = B1 * mr[i] + (1.0 - B1) * gi;
            m_mag[i] = B1 * m_mag[i] + (1.0 - B1) * std::fabs(gi);
            vr[i] = B2 * vr[i] + (1.0 - B2) * gi * gi;
            pr[i] -= lr_d / bc1 * mr[i] / (std::sqrt(vr[i]) / std::sqrt(bc2) + EPS);
        }
    }
    const double ep = rel_err(p.p, pr), em = rel_err(m.p, mr, &m_mag), ev = rel_err(v.p, vr);
    char what[128];
    std::snprintf(what, sizeof what, "adamw n=%lld lr=%g wd=%g %s: err p %.1e m %.1e v %.1e",
                  static_cast<long long>(n), lr, wd, scaled ? "scaled" : "      ", ep, em, ev);
    expect(rc == 0 && ep <= 1e-5 && em <= 1e-5 && ev <= 1e-5, what);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: adamw_emu <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *emu = d4j_test::open_backend(argv[1]);
    if (emu == nullptr) return 1;
    std::mt19937_64 rng(d4j_test::test_seed("adamw_emu"));
    grad_norm(emu, rng);
    for (int64_t n : {1, 255, 4099}) {
        adamw_case(emu, n, 1e-3, 0.01, false, rng);
        adamw_case(emu, n, 1e-2, 0.1, true, rng);
    }
    buffer a(4);
    expect(d4j_adamw(emu, nullptr, a.p, a.p, a.p, nullptr, 4, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, nullptr) != 0,
           "adamw rejects a null v");
    expect(d4j_adamw(emu, nullptr, a.p, a.p, a.p, a.p, 4, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, nullptr) != 0,
           "adamw rejects step 0");
    expect(d4j_sum_squares(emu, nullptr, nullptr, 4, 0, a.p) != 0, "sum_squares rejects a null x");
    expect(d4j_clip_scale(emu, nullptr, a.p, 1.0f, nullptr, a.p) != 0, "clip_scale rejects a null norm");
    std::printf("%d of %d checks passed\n", cases - failures, cases);
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
