// The CUDA kl_div kernel, run on the CPU by the emulator (libdistill4j_cudaemu), against the CPU kernel
// (libdistill4j_cpu) and a float64 reference, all through the dispatch API as Java calls them.
//
//   kl_div_emu_vs_cpu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (the seed is printed; D4J_SEED=<seed> repeats a run). Each case compares the
// reduced loss, row_loss and grad by ||x - ref|| / ||ref||: emu and cpu against float64, and emu against cpu.
// Tolerances: 1e-5 for losses, 1e-4 for gradients. Exit 1 if any case fails.
//
// Branches and thresholds, and the cases that reach them:
//   group per row       warp (C <= 2048: C = 1 .. 2048), a 512-thread block holding the row (2048 < C <= 32768),
//                       or a 512-thread block sweeping twice (C > 32768: 32769, 32772)
//   held instantiation  <RV,SV> = <2,0> (C <= 4096), <4,0> (<= 8192), <8,0> (<= 16384), <8,8> (<= 32768, eight
//                       slots in shared memory): each reached just above the previous capacity and at (or just
//                       below) its own, float4 and scalar, log_target 0 and 1 (all 16 template instances); C = 32000
//   rows past B         the warp-per-row grid is whole blocks of 8 rows: B = 3, 5, 9
//   float4 / scalar     C % 4 == 0 and 16-byte aligned (1000, 2048, 4096, 8196, ...) or not (37, 2049, 4099, ...;
//                       grad+1 at C = 100, 8196 and 32000)
//   LOG_TARGET          log q taken as given; odd rows unnormalised (sum q = e^u), so p sum(q) - q matters
//   online max          logits 1e5 +- a few and +-1e4, -inf teacher entries (0 log 0), T = 1, 2, 4
//   NaN / +inf          a NaN student logit in the row's last element (the last held slot), a NaN teacher entry,
//                       a +inf student logit: that row's loss and gradient NaN, the others unharmed, for every path
//   one-block reduce    loss over B rows by 256 threads: B = 300 (several rows per thread)
//   reductions          none (per-row grad_out), batchmean, sum, mean (scalar grad_out or none)
#include "distill4j.h"
#include "harness.h"
#include "distill4j_impl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr double kLossTol = 1e-5, kGradTol = 1e-4;

const char *reduction_name(int r) {
    switch (r) {
        case D4J_REDUCTION_NONE: return "none";
        case D4J_REDUCTION_BATCHMEAN: return "batchmean";
        case D4J_REDUCTION_SUM: return "sum";
        default: return "mean";
    }
}


using d4j_test::buffer;
using d4j_test::open_backend;
using d4j_test::test_seed;

struct kl_case {
    int64_t B, C;
    int reduction, log_target;
    float T;
    bool extreme;      // logits of +-1e4 in the student, -inf entries in the teacher
    bool upstream;     // a grad_out buffer instead of NULL
    float far = 0.0f;  // added to every logit (student, and teacher unless log-targets): 1e5 +- a few
    bool grad_offset = false;  // grad one float into its buffer: not 16-byte aligned, so the scalar path
};

struct reference {
    std::vector<double> row_loss, grad;
    double loss;
};

// Straight from the header's formulas, in float64: p = softmax(z_s/T); q = softmax(z_t/T) or exp(teacher);
// row = sum q (log q - log p) with 0 log 0 = 0; d row / d z_s = (p sum(q) - q) / T (autograd through
// log_softmax; sum q = 1 unless log-targets are unnormalised).
reference kl_reference(const kl_case &k, const float *s, const float *t, const float *go) {
    reference r{std::vector<double>(k.B), std::vector<double>(k.B * k.C), 0.0};
    const double T = k.T, scale = static_cast<double>(k.T) * k.T;
    const double norm = k.reduction == D4J_REDUCTION_BATCHMEAN ? 1.0 / k.B
                        : k.reduction == D4J_REDUCTION_MEAN    ? 1.0 / (static_cast<double>(k.B) * k.C)
                                                               : 1.0;
    std::vector<double> lp(k.C), lq(k.C);
    auto log_softmax = [&](const float *z, double inv_t, std::vector<double> &out) {
        double m = -INFINITY, sum = 0.0;
        for (int64_t c = 0; c < k.C; ++c) m = std::fmax(m, z[c] * inv_t);
        for (int64_t c = 0; c < k.C; ++c) sum += std::exp(z[c] * inv_t - m);
        for (int64_t c = 0; c < k.C; ++c) out[c] = z[c] * inv_t - m - std::log(sum);
    };
    double total = 0.0;
    for (int64_t b = 0; b < k.B; ++b) {
        const float *sr = s + b * k.C, *tr = t + b * k.C;
        log_softmax(sr, 1.0 / T, lp);
        if (k.log_target) {
            for (int64_t c = 0; c < k.C; ++c) lq[c] = tr[c];
        } else {
            log_softmax(tr, 1.0 / T, lq);
        }
        double row = 0.0, q_sum = 0.0;
        for (int64_t c = 0; c < k.C; ++c) {
            const double q = std::exp(lq[c]);
            if (q > 0.0) row += q * (lq[c] - lp[c]);
            q_sum += q;
        }
        r.row_loss[b] = scale * row;
        total += scale * row;
        const double up = go == nullptr ? 1.0 : go[k.reduction == D4J_REDUCTION_NONE ? b : 0];
        const double g = scale / T * norm * up;
        for (int64_t c = 0; c < k.C; ++c) r.grad[b * k.C + c] = g * (std::exp(lp[c]) * q_sum - std::exp(lq[c]));
    }
    r.loss = total * norm;
    return r;
}

// ||x - ref|| / ||ref||; the absolute error where ref is exactly zero (C = 1: every KL term is 0). NaN stays NaN.
template <typename X, typename R>
double rel_err(const X *x, const R *ref, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double diff = static_cast<double>(x[i]) - static_cast<double>(ref[i]);
        d += diff * diff;
        r += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

struct outputs {
    buffer row_loss, loss, grad;
    float *g;
    explicit outputs(const kl_case &k)
        : row_loss(k.B), loss(1), grad(k.B * k.C + 1), g(grad.p + (k.grad_offset ? 1 : 0)) {
        row_loss.fill(NAN);  // anything left unwritten shows
        loss.fill(NAN);
        grad.fill(NAN);
    }
};

int run(d4j_backend *backend, const kl_case &k, const buffer &s, const buffer &t, const float *go, outputs &o) {
    return d4j_kl_div(backend, nullptr, s.p, t.p, k.B, k.C, k.T, k.reduction, k.log_target, k.T * k.T, go,
                      o.row_loss.p, k.reduction == D4J_REDUCTION_NONE ? nullptr : o.loss.p, o.g);
}

int failures = 0, cases = 0;

void run_case(d4j_backend *cpu, d4j_backend *emu, const kl_case &k, std::mt19937_64 &rng) {
    buffer s(k.B * k.C), t(k.B * k.C), go(k.reduction == D4J_REDUCTION_NONE ? k.B : 1);
    std::normal_distribution<float> logit(0.0f, 3.0f);
    std::uniform_real_distribution<float> up(0.5f, 2.0f);
    for (size_t i = 0; i < s.n; ++i) s.p[i] = k.far + logit(rng), t.p[i] = (k.log_target ? 0.0f : k.far) + logit(rng);
    for (size_t i = 0; i < go.n; ++i) go.p[i] = up(rng);
    if (k.extreme) {
        // A few student logits at +-1e4 per row, and -inf in the teacher (never the whole row, nor entry 0).
        for (int64_t b = 0; b < k.B; ++b) {
            for (int64_t j = 0; j < 1 + k.C / 8; ++j) {
                const int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(k.C));
                s.p[b * k.C + c] = rng() % 2 ? 1e4f : -1e4f;
                if (c != 0) t.p[b * k.C + c] = -INFINITY;
            }
        }
    }
    if (k.log_target) {
        // Log-probabilities: log_softmax of the teacher logits (rows keep their -inf entries), every odd row then
        // scaled by e^u, u in [-1, 1]: sum q != 1, which autograd's p sum(q) - q must carry.
        std::uniform_real_distribution<double> u(-1.0, 1.0);
        for (int64_t b = 0; b < k.B; ++b) {
            float *row = t.p + b * k.C;
            double m = -INFINITY, sum = 0.0;
            for (int64_t c = 0; c < k.C; ++c) m = std::fmax(m, row[c]);
            for (int64_t c = 0; c < k.C; ++c) sum += std::exp(row[c] - m);
            const double shift = b % 2 == 1 ? u(rng) : 0.0;
            for (int64_t c = 0; c < k.C; ++c) row[c] = static_cast<float>(row[c] - m - std::log(sum) + shift);
        }
    }
    const float *go_p = k.upstream ? go.p : nullptr;
    outputs oc(k), oe(k);
    const int rc_cpu = run(cpu, k, s, t, go_p, oc);
    const auto t0 = std::chrono::steady_clock::now();
    const int rc_emu = run(emu, k, s, t, go_p, oe);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const reference r = kl_reference(k, s.p, t.p, go_p);

    const size_t nb = static_cast<size_t>(k.B), ng = static_cast<size_t>(k.B * k.C);
    const bool reduced = k.reduction != D4J_REDUCTION_NONE;
    // Worst loss error over row_loss and (when reduced) the scalar loss; the grad error.
    auto loss_err = [&](const outputs &o) {
        double e = rel_err(o.row_loss.p, r.row_loss.data(), nb);
        if (reduced) e = d4j_test::worst(e, rel_err(o.loss.p, &r.loss, 1));
        return e;
    };
    const double le_cpu = loss_err(oc), le_emu = loss_err(oe);
    double le_ec = rel_err(oe.row_loss.p, oc.row_loss.p, nb);
    if (reduced) le_ec = d4j_test::worst(le_ec, rel_err(oe.loss.p, oc.loss.p, 1));
    const double ge_cpu = rel_err(oc.g, r.grad.data(), ng), ge_emu = rel_err(oe.g, r.grad.data(), ng);
    const double ge_ec = rel_err(oe.g, oc.g, ng);
    const double le = d4j_test::worst({le_cpu, le_emu, le_ec}), ge = d4j_test::worst({ge_cpu, ge_emu, ge_ec});
    const bool ok = rc_cpu == 0 && rc_emu == 0 && d4j_test::within(le, kLossTol) && d4j_test::within(ge, kGradTol);
    ++cases;
    if (!ok) ++failures;
    std::printf("%-9s log_target=%d T=%g B=%-3lld C=%-5lld %-7s %-8s%s%s | loss err: cpu %.1e emu %.1e emu-cpu %.1e "
                "(max %.1e) | grad err: cpu %.1e emu %.1e emu-cpu %.1e (max %.1e) | emu %6.1f ms | %s\n",
                reduction_name(k.reduction), k.log_target, static_cast<double>(k.T), static_cast<long long>(k.B),
                static_cast<long long>(k.C), k.extreme ? "extreme" : "random", k.upstream ? "grad_out" : "no_gout",
                k.far != 0.0f ? " +1e5" : "", k.grad_offset ? " grad+1" : "",
                le_cpu, le_emu, le_ec, le, ge_cpu, ge_emu, ge_ec, ge, ms, ok ? "ok" : "FAILED");
    if (rc_cpu != 0) std::printf("  cpu returned %d: %s\n", rc_cpu, d4j_backend_last_error(cpu));
    if (rc_emu != 0) std::printf("  cuda-emu returned %d: %s\n", rc_emu, d4j_backend_last_error(emu));
    if (!ok && reduced) {
        std::printf("  loss: ref %.9g cpu %.9g emu %.9g\n", r.loss, static_cast<double>(oc.loss.p[0]),
                    static_cast<double>(oe.loss.p[0]));
    }
}

// Non-finite inputs in some rows: PyTorch gives those rows (and so any reduced loss) NaN, in the loss and the whole
// gradient row; the clean rows must come out as if the others were not there. Row 0 clean, row 1 NaN in the
// student's last element, row 2 NaN in the teacher's first, row 3 +inf in the student's middle.
void run_nan_case(d4j_backend *cpu, d4j_backend *emu, int64_t C, int log_target, std::mt19937_64 &rng) {
    const kl_case k{4, C, D4J_REDUCTION_NONE, log_target, 2.0f, false, true};
    buffer s(k.B * k.C), t(k.B * k.C), go(k.B);
    std::normal_distribution<float> logit(0.0f, 3.0f);
    for (size_t i = 0; i < s.n; ++i) s.p[i] = logit(rng), t.p[i] = logit(rng) - (log_target ? 12.0f : 0.0f);
    for (size_t i = 0; i < go.n; ++i) go.p[i] = 1.0f + 0.25f * static_cast<float>(i);
    s.p[1 * C + C - 1] = NAN;
    t.p[2 * C + 0] = NAN;
    s.p[3 * C + C / 2] = INFINITY;
    const reference r = kl_reference(k, s.p, t.p, go.p);
    bool ok = true;
    for (d4j_backend *be : {cpu, emu}) {
        for (int reduction : {D4J_REDUCTION_NONE, D4J_REDUCTION_BATCHMEAN}) {
            kl_case kr = k;
            kr.reduction = reduction;
            outputs o(kr);
            const int rc = run(be, kr, s, t, reduction == D4J_REDUCTION_NONE ? go.p : nullptr, o);
            bool good = rc == 0;
            if (reduction == D4J_REDUCTION_NONE) {
                // Row 0 against float64 (its reference is finite); rows 1-3 NaN throughout.
                good &= d4j_test::within(rel_err(o.row_loss.p, r.row_loss.data(), 1), kLossTol);
                good &= d4j_test::within(rel_err(o.g, r.grad.data(), static_cast<size_t>(C)), kGradTol);
                for (int64_t b = 1; b < k.B; ++b) {
                    good &= std::isnan(o.row_loss.p[b]);
                    for (int64_t c = 0; c < C; ++c) good &= std::isnan(o.g[b * C + c]);
                }
            } else {
                good &= std::isnan(o.loss.p[0]);
            }
            if (!good) std::printf("  nan case C=%lld log_target=%d %s on %s: wrong\n", static_cast<long long>(C),
                                   log_target, reduction_name(reduction), be == cpu ? "cpu" : "cuda-emu");
            ok &= good;
        }
    }
    ++cases;
    if (!ok) ++failures;
    std::printf("nan/inf   log_target=%d B=4   C=%-5lld rows 1-3 NaN, row 0 as float64 | %s\n", log_target,
                static_cast<long long>(C), ok ? "ok" : "FAILED");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: kl_div_emu_vs_cpu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *cpu = open_backend(argv[1]), *emu = open_backend(argv[2]);
    if (cpu == nullptr || emu == nullptr) return 1;
    const uint64_t seed = test_seed("kl_div_emu_vs_cpu");
    std::mt19937_64 rng(seed);

    // Warp-per-row and block-per-row kernels, C = 1, C not a multiple of 4 or 32, C a multiple of 4 (float4).
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 10}, {5, 37}, {4, 1000}, {2, 4099}, {2, 32001}};
    const std::vector<std::pair<int64_t, int64_t>> extreme_shapes = {{3, 37}, {2, 1000}, {2, 4100}};
#ifdef D4J_TEST_SANITIZED
    // ThreadSanitizer's cost grows with the square of the threads in a block (seconds for a 512-thread block):
    // each (reduction, log_target, T) gets one shape of each kind, in rotation, and C = 32001 is left out.
    const bool every_shape = false;
    const size_t n_shapes = shapes.size() - 1;
#else
    const bool every_shape = true;
    const size_t n_shapes = shapes.size();
#endif
    const auto start = std::chrono::steady_clock::now();
    size_t combo = 0;
    for (int reduction = 0; reduction < 4; ++reduction) {
        for (int log_target = 0; log_target < 2; ++log_target) {
            for (float T : {1.0f, 4.0f}) {
                for (size_t i = 0; i < n_shapes; ++i) {
                    if (!every_shape && i != combo % n_shapes) continue;
                    run_case(cpu, emu, {shapes[i].first, shapes[i].second, reduction, log_target, T, false, T > 1.0f},
                             rng);
                }
                for (size_t i = 0; i < extreme_shapes.size(); ++i) {
                    if (!every_shape && i != combo % extreme_shapes.size()) continue;
                    const auto [B, C] = extreme_shapes[i];
                    run_case(cpu, emu, {B, C, reduction, log_target, T, true, T == 1.0f}, rng);
                }
                ++combo;
            }
        }
    }
    // Thresholds the rotation above does not reach: C = 2048 (the last warp-per-row C, float4) and 2049 (the first
    // block-per-row C); B = 300 (> 256 rows: the one-block loss reduction's threads take several rows); logits
    // 1e5 +- a few (the online max must carry the offset); a gradient buffer off 16-byte alignment with C % 4 == 0
    // (scalar path). Under a sanitizer, the warp-per-row ones only (512-thread blocks cost seconds there).
    for (int log_target = 0; log_target < 2; ++log_target) {
        run_case(cpu, emu, {2, 2048, D4J_REDUCTION_SUM, log_target, 1.0f, false, false}, rng);
        run_case(cpu, emu, {300, 12, D4J_REDUCTION_BATCHMEAN, log_target, 2.0f, false, false}, rng);
        run_case(cpu, emu, {9, 40, D4J_REDUCTION_BATCHMEAN, log_target, 1.0f, false, false, 1e5f}, rng);
        run_case(cpu, emu, {5, 100, D4J_REDUCTION_NONE, log_target, 1.0f, false, true, 0.0f, true}, rng);
        if (!every_shape) continue;
        run_case(cpu, emu, {2, 2049, D4J_REDUCTION_MEAN, log_target, 4.0f, false, true}, rng);
        run_case(cpu, emu, {3, 4100, D4J_REDUCTION_SUM, log_target, 4.0f, false, true, -1e5f}, rng);
    }
    // The row held on chip: every instantiation <RV,SV> just above the previous one's capacity (scalar, and float4
    // with C % 4 == 0) and at or just below its own; each shape with log_target 0 (reduction none, per-row
    // grad_out) and 1 (a reduction with a scalar or no grad_out): all 16 template instances. Then the two-sweep
    // block path past the last capacity (32768), the target's C = 32000, and unaligned gradients (scalar path).
    struct held_shape {
        int64_t B, C;
        bool grad_offset;
    };
    const std::vector<held_shape> held = {
        {3, 2049, false},  {1, 4096, false},  {2, 4097, false},  {2, 4100, false},  {1, 8191, false},
        {1, 8192, false},  {2, 8193, false},  {2, 8196, false},  {1, 16383, false}, {1, 16384, false},
        {2, 16385, false}, {2, 16388, false}, {1, 32767, false}, {1, 32768, false}, {2, 32000, false},
        {1, 32769, false}, {1, 32772, false}, {1, 8196, true},   {1, 32000, true},
    };
    // Under a sanitizer (seconds per 512-thread block): one row each of a scalar <2,0>, a float4 <8,0> and both
    // kinds of <8,8> (its shared-memory slots are what AddressSanitizer should see the bounds of).
    const std::vector<int64_t> sanitized_held = {2049, 8196, 32767, 32768};
    for (size_t i = 0; i < held.size(); ++i) {
        const held_shape h = held[i];
        if (!every_shape && std::find(sanitized_held.begin(), sanitized_held.end(), h.C) == sanitized_held.end())
            continue;
        const int64_t B = every_shape ? h.B : 1;
        const int other = D4J_REDUCTION_BATCHMEAN + static_cast<int>(i % 3);  // batchmean, sum, mean in turn
        run_case(cpu, emu, {B, h.C, D4J_REDUCTION_NONE, 0, 4.0f, false, true, 0.0f, h.grad_offset}, rng);
        run_case(cpu, emu, {B, h.C, other, 1, i % 2 ? 1.0f : 2.0f, false, i % 2 == 0, 0.0f, h.grad_offset}, rng);
    }
    if (every_shape) {
        // The online max across held registers and shared memory: +-1e4 logits and -inf teacher entries, and the
        // 1e5 offset, in the shared-memory instantiation.
        run_case(cpu, emu, {2, 20000, D4J_REDUCTION_BATCHMEAN, 0, 4.0f, true, true}, rng);
        run_case(cpu, emu, {2, 20001, D4J_REDUCTION_SUM, 1, 1.0f, true, false}, rng);
        run_case(cpu, emu, {2, 24000, D4J_REDUCTION_MEAN, 0, 1.0f, false, false, 1e5f}, rng);
    }
    // NaN and +inf rows on every path: warp, each held instantiation (float4 and scalar), two sweeps.
    const std::vector<int64_t> nan_shapes = every_shape
                                                ? std::vector<int64_t>{40, 37, 4096, 4099, 8192, 16383, 32768,
                                                                       32767, 32772}
                                                : std::vector<int64_t>{40, 32767};
    for (size_t i = 0; i < nan_shapes.size(); ++i) run_nan_case(cpu, emu, nan_shapes[i], static_cast<int>(i % 2), rng);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%d of %d cases passed (%.1f s, seed %llu)\n", cases - failures, cases, s,
                static_cast<unsigned long long>(seed));
    d4j_backend_close(cpu);
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
