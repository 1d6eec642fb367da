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
//   group per row       warp (C <= 2048: C = 1 .. 2048) or 512-thread block (C > 2048: 2049, 4099, 4100, 32001)
//   rows past B         the warp-per-row grid is whole blocks of 8 rows: B = 3, 5, 9
//   float4 / scalar     C % 4 == 0 and 16-byte aligned (1000, 2048, 4100) or not (37, 2049, 4099; grad+1 at C = 100)
//   LOG_TARGET          log q taken as given; odd rows unnormalised (sum q = e^u), so p sum(q) - q matters
//   online max          logits 1e5 +- a few and +-1e4, -inf teacher entries (0 log 0), T = 1, 2, 4
//   one-block reduce    loss over B rows by 256 threads: B = 300 (several rows per thread)
//   reductions          none (per-row grad_out), batchmean, sum, mean
#include "distill4j.h"
#include "harness.h"
#include "distill4j_impl.h"

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
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%d of %d cases passed (%.1f s, seed %llu)\n", cases - failures, cases, s,
                static_cast<unsigned long long>(seed));
    d4j_backend_close(cpu);
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
