// The CUDA cross-entropy and argmax kernels (native/cuda/cross_entropy.cu), run on the CPU by the emulator
// (libdistill4j_cudaemu), against a float64 reference written here from the definition in distill4j_impl.h, through
// the dispatch API as Java calls them. The CPU kernels' int32 contract (bad labels refused, argmax ties and NaN) is
// checked beside them, so that both run under the sanitizers; the CPU kernels' values are CrossEntropyTest's.
//
//   cross_entropy_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (D4J_SEED=<seed> repeats one). Each case checks row losses, the loss and the
// gradient (all pre-filled with NaN, so an element left unwritten fails) by ||x - ref|| / ||ref|| <= 1e-5, with and
// without label smoothing, for warp-per-row and block-per-row launches, float4 and scalar paths, logits of +-1e4;
// a second call must give the same loss bits. argmax: ties (first index wins) and NaN (the first NaN wins). Then a
// NaN row, invalid labels (a NaN row on the emulator, the call refused on the CPU, never a read out of bounds) and
// the argument checks. Exit 1 if anything fails.
//
// Branches and thresholds, and the cases that reach them:
//   group per row     warp (C <= 2048: C = 1 .. 2048) or 512-thread block (C = 2049, 4099, 4100, 8192)
//   rows past B       whole blocks of 8 rows: B = 3, 9, 300
//   float4 / scalar   C % 4 == 0 and aligned (1000, 2048, 4100), else scalar (37, 2049, 4099; offset logits at 1000,
//                     8192); labels 0..3 rows at C-1..C-4: the class test in each float4 component
//   smoothing         eps = 0 (term skipped) and 0.1, 0.2; logits +-1e4 and 1e5 +- 3 (sum of x - max per term)
//   label validity    int32 labels C, C + 1, -1, INT32_MAX, INT32_MIN at the first and the last row: a NaN row
//                     without a read out of bounds (emulated CUDA), the call refused naming row and label (CPU)
//   large C           C = 70000 (labels at C - 1, C - 2)
//   one-block reduce  loss = mean of B rows by 256 threads: B = 300
//   argmax            int32 out; ties (lower index), NaN (first NaN), lanes without elements (C = 1, 7 < 32); both
//                     backends
//   soft targets      the same groupings; distributions, Mixup pairs, rows summing to 0.7 / 1.5 (sum t' in the
//                     gradient), one-hot rows against the hard kernel; NaN logit/target, 0 * -inf, +inf under smoothing
#include "distill4j.h"
#include "harness.h"

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using d4j_test::buffer;

int failures = 0, cases = 0;

double rel_err(const float *x, const std::vector<double> &ref) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double diff = static_cast<double>(x[i]) - ref[i];
        d += diff * diff;
        r += ref[i] * ref[i];
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

void expect(bool ok, const char *what) {
    ++cases;
    if (!ok) ++failures;
    std::printf("%-60s | %s\n", what, ok ? "ok" : "FAILED");
}

// Logits uniform in center +- spread. Labels: rows 0..3 take the last four classes (every float4 lane and the
// tail), the others random.
void ce_case(d4j_backend *emu, int64_t B, int64_t C, float eps, float scale, float spread, bool misalign,
             std::mt19937_64 &rng, float center = 0.0f) {
    ++cases;
    // misalign: logits one float into the buffer, so the kernel must take its scalar path.
    buffer xbuf(B * C + 1), rows(B), loss(1), grad(B * C + 1);
    std::vector<int32_t> y(B);
    std::uniform_real_distribution<float> u(-spread, spread);
    for (size_t i = 0; i < xbuf.n; ++i) xbuf.p[i] = center + u(rng);
    for (int64_t b = 0; b < B; ++b) y[b] = static_cast<int32_t>(b < 4 && b < C ? C - 1 - b : rng() % C);
    rows.fill(NAN), loss.fill(NAN), grad.fill(NAN);
    const float *x = xbuf.p + (misalign ? 1 : 0);
    float *g = grad.p + (misalign ? 1 : 0);
    std::vector<double> rref(B), gref(B * C);
    double lref = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        const float *r = x + b * C;
        double mx = -INFINITY, s = 0.0, smooth = 0.0;
        for (int64_t c = 0; c < C; ++c) mx = std::max(mx, static_cast<double>(r[c]));
        for (int64_t c = 0; c < C; ++c) s += std::exp(r[c] - mx);
        const double lse = mx + std::log(s);
        const int64_t yy = y[b];
        for (int64_t c = 0; c < C; ++c) {
            smooth += lse - r[c];
            const double target = (c == yy ? 1.0 - eps : 0.0) + eps / C;
            gref[b * C + c] = scale / B * (std::exp(r[c] - lse) - target);
        }
        rref[b] = scale * ((1.0 - eps) * (lse - r[yy]) + eps * smooth / C);
        lref += rref[b] / B;
    }
    const int rc = d4j_cross_entropy(emu, nullptr, x, y.data(), B, C, eps, scale, rows.p, loss.p, g);
    const float first = loss.p[0];
    const int rc2 = d4j_cross_entropy(emu, nullptr, x, y.data(), B, C, eps, scale, rows.p, loss.p, g);
    const double er = rel_err(rows.p, rref), el = rel_err(loss.p, {lref}), eg = rel_err(g, gref);
    const bool ok = rc == 0 && rc2 == 0 && er <= 1e-5 && el <= 1e-5 && eg <= 1e-5 &&
                    std::memcmp(&first, loss.p, sizeof first) == 0;
    if (!ok) ++failures;
    std::printf("CE B=%-4lld C=%-5lld eps=%.1f scale=%.2f x=%-5g+-%-6g %s | err rows %.1e loss %.1e grad %.1e | %s\n",
                static_cast<long long>(B), static_cast<long long>(C), eps, scale, center, spread,
                misalign ? "offset " : "aligned",
                er, el, eg, ok ? "ok" : "FAILED");
    if (rc != 0) std::printf("  returned %d: %s\n", rc, d4j_backend_last_error(emu));
}

// Probability targets. kind 0: random distributions; 1: Mixup of two one-hot rows (lambda, 1 - lambda); 2: rows
// that do not sum to 1 (0.7 and 1.5 times a distribution: sum t' enters the gradient); 3: one-hot rows, which must
// give the hard-label kernel's answer.
void soft_case(d4j_backend *emu, int64_t B, int64_t C, float eps, float scale, float spread, int kind,
               std::mt19937_64 &rng, float center = 0.0f) {
    ++cases;
    buffer x(B * C), t(B * C), rows(B), loss(1), grad(B * C);
    std::vector<int32_t> y(B);
    std::uniform_real_distribution<float> u(-spread, spread), p(0.0f, 1.0f);
    for (size_t i = 0; i < x.n; ++i) x.p[i] = center + u(rng);
    t.fill(0.0f);
    for (int64_t b = 0; b < B; ++b) {
        float *tr = t.p + b * C;
        y[b] = static_cast<int32_t>(rng() % C);
        if (kind == 0 || kind == 2) {
            double s = 0.0;
            for (int64_t c = 0; c < C; ++c) s += tr[c] = p(rng);
            const double want = kind == 2 ? (b % 2 == 0 ? 0.7 : 1.5) : 1.0;
            for (int64_t c = 0; c < C; ++c) tr[c] = static_cast<float>(tr[c] * want / s);
        } else if (kind == 1) {
            const float lam = p(rng);
            tr[y[b]] += lam;
            tr[rng() % C] += 1.0f - lam;
        } else {
            tr[y[b]] = 1.0f;
        }
    }
    rows.fill(NAN), loss.fill(NAN), grad.fill(NAN);
    std::vector<double> rref(B), gref(B * C);
    double lref = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        const float *r = x.p + b * C, *tr = t.p + b * C;
        double mx = -INFINITY, s = 0.0, total = 0.0, l = 0.0;
        for (int64_t c = 0; c < C; ++c) mx = std::max(mx, static_cast<double>(r[c]));
        for (int64_t c = 0; c < C; ++c) s += std::exp(r[c] - mx);
        const double lse = mx + std::log(s);
        for (int64_t c = 0; c < C; ++c) total += (1.0 - eps) * tr[c] + static_cast<double>(eps) / C;
        for (int64_t c = 0; c < C; ++c) {
            const double tp = (1.0 - eps) * tr[c] + static_cast<double>(eps) / C;
            l += tp * (lse - r[c]);
            gref[b * C + c] = scale / B * (std::exp(r[c] - lse) * total - tp);
        }
        rref[b] = scale * l;
        lref += rref[b] / B;
    }
    const int rc = d4j_cross_entropy_soft(emu, nullptr, x.p, t.p, B, C, eps, scale, rows.p, loss.p, grad.p);
    const float first = loss.p[0];
    const int rc2 = d4j_cross_entropy_soft(emu, nullptr, x.p, t.p, B, C, eps, scale, rows.p, loss.p, grad.p);
    const double er = rel_err(rows.p, rref), el = rel_err(loss.p, {lref}), eg = rel_err(grad.p, gref);
    bool ok = rc == 0 && rc2 == 0 && er <= 1e-5 && el <= 1e-5 && eg <= 1e-5 &&
              std::memcmp(&first, loss.p, sizeof first) == 0;
    double eh = 0.0;
    if (kind == 3) {  // one-hot targets: the hard-label kernel's rows and gradient
        buffer hrows(B), hgrad(B * C);
        d4j_cross_entropy(emu, nullptr, x.p, y.data(), B, C, eps, scale, hrows.p, nullptr, hgrad.p);
        std::vector<double> hr(hrows.p, hrows.p + B), hg(hgrad.p, hgrad.p + B * C);
        eh = std::max(rel_err(rows.p, hr), rel_err(grad.p, hg));
        ok = ok && eh <= 1e-5;
    }
    if (!ok) ++failures;
    static const char *kinds[] = {"distributions", "mixup pairs", "sums 0.7/1.5", "one-hot = hard"};
    char vs_hard[32] = "";
    if (kind == 3) std::snprintf(vs_hard, sizeof vs_hard, " vs hard %.1e", eh);
    std::printf("CE soft B=%-4lld C=%-5lld eps=%.1f x=%-5g+-%-4g %-14s | err rows %.1e loss %.1e grad %.1e%s | %s\n",
                static_cast<long long>(B), static_cast<long long>(C), eps, center, spread, kinds[kind], er, el, eg,
                vs_hard, ok ? "ok" : "FAILED");
    if (rc != 0) std::printf("  returned %d: %s\n", rc, d4j_backend_last_error(emu));
}

// Soft targets' special values, as PyTorch gives them: a NaN logit or target makes its row NaN (a NaN target makes
// the whole gradient row NaN through sum t'); a -inf logit with a zero target makes the row loss NaN (0 * inf) and
// leaves the gradient finite; with smoothing, its t' > 0 makes the loss +inf; a +inf logit makes the whole row NaN
// (log_softmax is NaN there), gradient included.
void soft_special_rows(d4j_backend *emu, std::mt19937_64 &rng) {
    const int64_t B = 5, C = 37;
    buffer x(B * C), t(B * C), rows(B), loss(1), grad(B * C);
    x.random(rng);
    for (size_t i = 0; i < t.n; ++i) t.p[i] = 1.0f / C;
    x.p[C + 5] = NAN;                         // row 1
    t.p[2 * C + 7] = NAN;                     // row 2
    x.p[3 * C + 9] = -INFINITY;               // row 3, target 0 there
    t.p[3 * C + 9] = 0.0f;
    x.p[4 * C + 2] = INFINITY;                // row 4
    d4j_cross_entropy_soft(emu, nullptr, x.p, t.p, B, C, 0.0f, 1.0f, rows.p, loss.p, grad.p);
    bool grad3_finite = true, grad4_nan = true;
    for (int64_t c = 0; c < C; ++c) grad3_finite = grad3_finite && std::isfinite(grad.p[3 * C + c]);
    for (int64_t c = 0; c < C; ++c) grad4_nan = grad4_nan && std::isnan(grad.p[4 * C + c]);
    expect(!std::isnan(rows.p[0]) && std::isnan(rows.p[1]) && std::isnan(rows.p[2]) && std::isnan(rows.p[3]) &&
               std::isnan(grad.p[C]) && std::isnan(grad.p[2 * C]) && !std::isnan(grad.p[0]) && grad3_finite &&
               std::isnan(rows.p[4]) && grad4_nan && std::isnan(loss.p[0]),
           "soft: NaN logit/target, 0 * -inf and +inf give NaN rows, as PyTorch");
    d4j_cross_entropy_soft(emu, nullptr, x.p, t.p, B, C, 0.1f, 1.0f, rows.p, loss.p, grad.p);
    expect(std::isinf(rows.p[3]) && rows.p[3] > 0.0f, "soft: -inf logit under smoothing: +inf row loss");
    expect(d4j_cross_entropy_soft(emu, nullptr, x.p, nullptr, B, C, 0.0f, 1.0f, rows.p, loss.p, grad.p) != 0,
           "soft: rejects null targets");
    expect(d4j_cross_entropy_soft(emu, nullptr, x.p, t.p, B, C, -0.5f, 1.0f, rows.p, loss.p, grad.p) != 0,
           "soft: rejects label smoothing -0.5");
}

// torch.argmax's answer from its definition: the first NaN if the row has one, else the first of equal maxima.
void argmax_case(d4j_backend *be, const char *name, int64_t B, int64_t C, bool with_nan, std::mt19937_64 &rng) {
    buffer x(B * C);
    std::vector<int32_t> idx(B, -7);  // -7: a row left unwritten fails
    for (size_t i = 0; i < x.n; ++i) x.p[i] = static_cast<float>(rng() % 4);  // many ties
    if (with_nan) {
        for (int64_t b = 0; b < B; b += 2) x.p[b * C + (rng() % C)] = NAN;
        if (C > 1) x.p[(B - 1) * C + C - 1] = NAN;  // a NaN in the last column: past every lane's first element
        if (C > 37) x.p[5] = x.p[37] = NAN;         // two NaNs in one lane (5 and 37 mod 32): the first must win
    }
    const int rc = d4j_argmax(be, nullptr, x.p, B, C, idx.data());
    bool ok = rc == 0;
    for (int64_t b = 0; b < B && ok; ++b) {
        int64_t want = 0;
        for (int64_t c = 0; c < C; ++c) {
            const float v = x.p[b * C + c];
            if (std::isnan(v)) {
                want = c;
                break;
            }
            if (v > x.p[b * C + want]) want = c;
        }
        ok = idx[b] == want;
    }
    char what[96];
    std::snprintf(what, sizeof what, "argmax %s B=%lld C=%lld%s", name, static_cast<long long>(B),
                  static_cast<long long>(C), with_nan ? " with NaN" : "");
    expect(ok, what);
}

void special_rows(d4j_backend *cpu, d4j_backend *emu, std::mt19937_64 &rng) {
    const int64_t B = 3, C = 17;
    buffer x(B * C), rows(B), loss(1), grad(B * C);
    std::vector<int32_t> y(B);
    x.random(rng);
    for (int64_t b = 0; b < B; ++b) y[b] = static_cast<int32_t>(b);
    x.p[C + 3] = NAN;  // row 1
    d4j_cross_entropy(emu, nullptr, x.p, y.data(), B, C, 0.1f, 1.0f, rows.p, loss.p, grad.p);
    expect(std::isnan(rows.p[1]) && std::isnan(grad.p[C]) && std::isnan(loss.p[0]) && !std::isnan(rows.p[0]) &&
               !std::isnan(rows.p[2]) && !std::isnan(grad.p[0]),
           "NaN logit: NaN row, other rows finite");
    x.p[C + 3] = 0.5f;
    // Bad labels at the first row (a negative index would read before the logits) and the last (C would read one
    // past them): the buffers are exact, so AddressSanitizer sees either read.
    for (int32_t bad : {17, 18, -1, INT32_MAX, INT32_MIN}) {
        for (int64_t at : {int64_t{0}, B - 1}) {
            for (int64_t b = 0; b < B; ++b) y[b] = static_cast<int32_t>(b);
            y[at] = bad;
            const int64_t other = at == 0 ? 1 : 0;
            rows.fill(0.0f), grad.fill(0.0f);
            const int rc = d4j_cross_entropy(emu, nullptr, x.p, y.data(), B, C, 0.1f, 1.0f, rows.p, loss.p, grad.p);
            bool grad_nan = true;
            for (int64_t c = 0; c < C; ++c) grad_nan = grad_nan && std::isnan(grad.p[at * C + c]);
            char what[112];
            std::snprintf(what, sizeof what, "emu: label %d at row %lld: NaN row and loss, read in bounds",
                          static_cast<int>(bad), static_cast<long long>(at));
            expect(rc == 0 && std::isnan(rows.p[at]) && grad_nan && std::isnan(loss.p[0]) &&
                       std::isfinite(rows.p[other]) && std::isfinite(grad.p[other * C]),
                   what);
            // The CPU kernel refuses the call before writing anything, and says which row and label.
            rows.fill(-3.0f);
            const int rc_cpu =
                d4j_cross_entropy(cpu, nullptr, x.p, y.data(), B, C, 0.1f, 1.0f, rows.p, loss.p, grad.p);
            char want[96];
            std::snprintf(want, sizeof want, "label %d at row %lld is not a class index in [0, 17)",
                          static_cast<int>(bad), static_cast<long long>(at));
            std::snprintf(what, sizeof what, "cpu: label %d at row %lld: refused, named, nothing written",
                          static_cast<int>(bad), static_cast<long long>(at));
            expect(rc_cpu != 0 && std::strstr(d4j_backend_last_error(cpu), want) != nullptr && rows.p[0] == -3.0f &&
                       rows.p[B - 1] == -3.0f,
                   what);
        }
    }
    for (int64_t b = 0; b < B; ++b) y[b] = static_cast<int32_t>(b);
    rows.fill(NAN);
    expect(d4j_cross_entropy(emu, nullptr, x.p, y.data(), B, C, 0.0f, 1.0f, rows.p, nullptr, nullptr) == 0 &&
               !std::isnan(rows.p[0]) && !std::isnan(rows.p[2]),
           "loss and grad may be NULL");
    expect(d4j_cross_entropy(emu, nullptr, nullptr, y.data(), B, C, 0.0f, 1.0f, rows.p, loss.p, grad.p) != 0,
           "rejects null logits");
    expect(d4j_cross_entropy(emu, nullptr, x.p, y.data(), 0, C, 0.0f, 1.0f, rows.p, loss.p, grad.p) != 0,
           "rejects B = 0");
    expect(d4j_cross_entropy(emu, nullptr, x.p, y.data(), B, C, 1.5f, 1.0f, rows.p, loss.p, grad.p) != 0,
           "rejects label smoothing 1.5");
    expect(d4j_argmax(emu, nullptr, x.p, B, 0, y.data()) != 0, "argmax rejects C = 0");
    expect(d4j_argmax(cpu, nullptr, x.p, B, 0, y.data()) != 0, "cpu argmax rejects C = 0");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cross_entropy_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *cpu = d4j_test::open_backend(argv[1]), *emu = d4j_test::open_backend(argv[2]);
    if (cpu == nullptr || emu == nullptr) return 1;
    std::mt19937_64 rng(d4j_test::test_seed("cross_entropy_emu"));
    struct shape {
        int64_t B, C;
    };
    // Warp-per-row (C <= 2048): partial last block (B = 9, 300); block-per-row: C = 4099 (scalar), 4100 (float4).
#ifdef D4J_TEST_SANITIZED
    // ThreadSanitizer's cost grows with the square of a block's threads: two 512-thread rows per shape there.
    const int64_t wide_rows = 2;
#else
    const int64_t wide_rows = 4;
#endif
    for (shape s : {shape{1, 1}, shape{9, 10}, shape{3, 37}, shape{7, 1000}, shape{300, 3}, shape{3, 2048},
                    shape{2, 2049}, shape{2, 4099}, shape{wide_rows, 4100}}) {
        for (float eps : {0.0f, 0.1f}) ce_case(emu, s.B, s.C, eps, 0.7f, 4.0f, false, rng);
    }
    ce_case(emu, 5, 1000, 0.1f, 1.0f, 3.0f, true, rng);
    ce_case(emu, 2, 8192, 0.1f, 1.0f, 3.0f, true, rng);
    ce_case(emu, 9, 333, 0.1f, 2.0f, 1e4f, false, rng);
    ce_case(emu, 2, 4100, 0.0f, 1.0f, 1e4f, false, rng);
    // Logits far from 0 (1e5 +- 3): the smoothing sum must take the max off each term, not off the total.
    ce_case(emu, 9, 333, 0.1f, 1.0f, 3.0f, false, rng, 1e5f);
    ce_case(emu, 4, 1000, 0.2f, 1.0f, 3.0f, false, rng, -1e5f);
#ifndef D4J_TEST_SANITIZED
    ce_case(emu, 2, 4100, 0.1f, 1.0f, 3.0f, false, rng, 1e5f);
#endif
    // Past 2^16 classes, labels at the top (C - 1, C - 2): the int32 label reaches the last columns of a wide row.
    ce_case(emu, 2, 70000, 0.1f, 1.0f, 3.0f, false, rng);
    for (shape s : {shape{1, 1}, shape{9, 7}, shape{17, 100}, shape{3, 4099}}) {
        for (bool with_nan : {false, true}) {
            argmax_case(cpu, "cpu", s.B, s.C, with_nan, rng);
            argmax_case(emu, "emu", s.B, s.C, with_nan, rng);
        }
    }
    special_rows(cpu, emu, rng);
    // Soft targets: warp-per-row (C <= 2048, partial blocks at B = 3, 9, 300) and block-per-row (2049, 4100).
    for (shape s : {shape{1, 1}, shape{9, 10}, shape{3, 37}, shape{300, 3}, shape{5, 1000}, shape{3, 2048},
                    shape{2, 2049}, shape{wide_rows, 4100}}) {
        for (int kind = 0; kind < 4; ++kind) {
            for (float eps : {0.0f, 0.1f}) {
                if (s.C > 2048 && (kind % 2 == 0) != (eps == 0.0f)) continue;  // wide rows: one eps per kind
                soft_case(emu, s.B, s.C, eps, 0.7f, 4.0f, kind, rng);
            }
        }
    }
    soft_case(emu, 7, 333, 0.2f, 1.0f, 3.0f, 0, rng, 1e5f);  // far from 0: x - max per term
    soft_case(emu, 9, 333, 0.1f, 2.0f, 1e4f, 3, rng);
    soft_special_rows(emu, rng);
    std::printf("%d of %d checks passed\n", cases - failures, cases);
    d4j_backend_close(emu);
    d4j_backend_close(cpu);
    return failures == 0 ? 0 : 1;
}
