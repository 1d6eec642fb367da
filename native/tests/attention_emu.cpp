// The CUDA attention kernels (native/cuda/attention.cu), run on the CPU by the emulator (libdistill4j_cudaemu),
// against a float64 reference written here from the definition in distill4j_impl.h, through the dispatch API as
// Java calls them.
//
//   attention_emu <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (the seed is printed; D4J_SEED=<seed> repeats a run). Each case checks, by
// ||x - ref|| / ||ref|| <= 1e-5 (dqkv with scores near 80: 5e-5, see kTolLargeScores): out and lse (pre-filled with NaN, so an element left unwritten fails), and dqkv
// from a backward fed with the forward's own out and lse (pre-filled with NaN: it is written, not accumulated); a
// second backward must give the same bits (no atomics). Shapes cross every tile edge (N = 1, 7, 32, 33, 50, 64,
// 65, 67 against 32-key and 64-query tiles), Dh = 32 and 64, H = 1 and 3, B = 1 and 2, and inputs scaled so
// that the largest |score| is 80 (softmax close to one-hot). Then the argument checks. Exit 1 if anything fails.
//
// Branches and thresholds, and the cases that reach them:
//   attn_fwd       64-query blocks, 32-key tiles: N = 1, 7 (one partial tile), 32, 64 (exact), 33, 50, 65, 67, 198
//                  (ragged last key tile: masked keys, zero-staged rows; several key tiles: online rescale)
//   attn_bwd       32-key blocks x 32-query tiles: the same N; rows past N get lse = +inf (P = 0)
//   attn_bwd_dq    sum over ceil(N/32) partials: 1 (N <= 32) to 7 (N = 198)
//   attn_bwd_delta one thread per (b, n, h): B = 2, H = 3 (the (b, n, h) -> (b, h, n) layout)
//   DH             32 and 64 (8 / 16 threads per staged row); scale default and 0.3; max |S| = 80
#include "distill4j.h"
#include "harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr double kTol = 1e-5;
// dqkv when max |S| > 20: P = exp(S - lse) is only as accurate as S and lse are, and an fp32 score near 80 carries
// a rounding error of a few 1e-6 (half an ulp of 80 is 3.8e-6; the Dh-term dot product adds more) in any fp32
// implementation, PyTorch's included; with N = 7 the norm averages few terms. Measured: 4e-6 .. 2.3e-5.
constexpr double kTolLargeScores = 5e-5;

using d4j_test::buffer;
using d4j_test::open_backend;
using d4j_test::test_seed;

struct att_case {
    int64_t B, N, H, Dh;
    float sigma;  // > 0: qkv ~ N(0, sigma^2); < 0: qkv scaled so that max |scaled score| = -sigma exactly
    float scale;  // 0: the default 1/sqrt(Dh)
};

double rel_err(const float *x, const std::vector<double> &ref) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double diff = static_cast<double>(x[i]) - ref[i];
        d += diff * diff;
        r += ref[i] * ref[i];
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

struct reference {
    std::vector<double> out, lse, dqkv;
    double max_abs_score = 0.0;
};

// From the definition, per (b, h): S = scale Q K^T, P = softmax_rows(S), O = P V, lse = log sum_m exp S[n, m];
// dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(P o dP)), dQ = scale dS K, dK = scale dS^T Q.
reference make_reference(const att_case &c, float scale, const float *qkv, const float *dout) {
    const int64_t B = c.B, N = c.N, H = c.H, Dh = c.Dh;
    auto at = [&](int64_t b, int64_t n, int64_t which, int64_t h) { return ((b * N + n) * 3 + which) * H * Dh + h * Dh; };
    reference r;
    r.out.assign(B * N * H * Dh, 0.0);
    r.lse.assign(B * H * N, 0.0);
    r.dqkv.assign(B * N * 3 * H * Dh, 0.0);
    std::vector<double> P(N * N), dP(N * N);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t n = 0; n < N; ++n) {
                double mx = -INFINITY;
                for (int64_t m = 0; m < N; ++m) {
                    double s = 0.0;
                    for (int64_t d = 0; d < Dh; ++d)
                        s += static_cast<double>(qkv[at(b, n, 0, h) + d]) * qkv[at(b, m, 1, h) + d];
                    P[n * N + m] = s * scale;
                    mx = std::max(mx, s * scale);
                    r.max_abs_score = std::max(r.max_abs_score, std::fabs(s * scale));
                }
                double sum = 0.0;
                for (int64_t m = 0; m < N; ++m) sum += std::exp(P[n * N + m] - mx);
                for (int64_t m = 0; m < N; ++m) P[n * N + m] = std::exp(P[n * N + m] - mx) / sum;
                r.lse[(b * H + h) * N + n] = mx + std::log(sum);
                for (int64_t d = 0; d < Dh; ++d) {
                    double o = 0.0;
                    for (int64_t m = 0; m < N; ++m) o += P[n * N + m] * qkv[at(b, m, 2, h) + d];
                    r.out[((b * N + n) * H + h) * Dh + d] = o;
                }
            }
            if (dout == nullptr) continue;  // scores only
            const float *dO = dout + h * Dh;  // row n of head h at dO + (b * N + n) * H * Dh
            auto dorow = [&](int64_t n) { return dO + (b * N + n) * H * Dh; };
            for (int64_t n = 0; n < N; ++n) {
                double rowsum = 0.0;
                for (int64_t m = 0; m < N; ++m) {
                    double s = 0.0;
                    for (int64_t d = 0; d < Dh; ++d) s += static_cast<double>(dorow(n)[d]) * qkv[at(b, m, 2, h) + d];
                    dP[n * N + m] = s;
                    rowsum += s * P[n * N + m];
                }
                for (int64_t m = 0; m < N; ++m) dP[n * N + m] = P[n * N + m] * (dP[n * N + m] - rowsum);  // dS
            }
            for (int64_t n = 0; n < N; ++n)
                for (int64_t d = 0; d < Dh; ++d) {
                    double dq = 0.0, dk = 0.0, dv = 0.0;
                    for (int64_t m = 0; m < N; ++m) {
                        dq += dP[n * N + m] * qkv[at(b, m, 1, h) + d];
                        dk += dP[m * N + n] * qkv[at(b, m, 0, h) + d];
                        dv += P[m * N + n] * dorow(m)[d];
                    }
                    r.dqkv[at(b, n, 0, h) + d] = scale * dq;
                    r.dqkv[at(b, n, 1, h) + d] = scale * dk;
                    r.dqkv[at(b, n, 2, h) + d] = dv;
                }
        }
    return r;
}

int failures = 0, cases = 0;

void run_case(d4j_backend *emu, const att_case &c, std::mt19937_64 &rng) {
    const int64_t B = c.B, N = c.N, H = c.H, Dh = c.Dh;
    const float scale = c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(Dh));
    buffer qkv(B * N * 3 * H * Dh), out(B * N * H * Dh), lse(B * H * N), dout(B * N * H * Dh);
    buffer dqkv(qkv.n), dqkv2(qkv.n);
    qkv.random(rng);
    float sigma = c.sigma;
    if (sigma < 0.0f) {  // S scales with sigma^2
        const double s1 = make_reference(c, scale, qkv.p, nullptr).max_abs_score;
        sigma = static_cast<float>(std::sqrt(-c.sigma / s1));
    }
    for (size_t i = 0; i < qkv.n; ++i) qkv.p[i] *= sigma;
    dout.random(rng);
    out.fill(NAN), lse.fill(NAN), dqkv.fill(NAN), dqkv2.fill(NAN);

    const int64_t ws_bytes = d4j_attention_workspace(emu, B, N, H, Dh);
    bool ok = ws_bytes >= 0;
    buffer ws(ws_bytes > 0 ? static_cast<size_t>(ws_bytes) / sizeof(float) : 0);
    ws.fill(NAN);  // the kernels must not read what they did not write

    const auto t0 = std::chrono::steady_clock::now();
    const int rc_f = d4j_attention_forward(emu, nullptr, qkv.p, B, N, H, Dh, scale, out.p, lse.p, ws.p);
    const auto t1 = std::chrono::steady_clock::now();
    const int rc_b = d4j_attention_backward(emu, nullptr, qkv.p, out.p, lse.p, dout.p, B, N, H, Dh, scale, dqkv.p, ws.p);
    const auto t2 = std::chrono::steady_clock::now();
    const int rc_b2 =
        d4j_attention_backward(emu, nullptr, qkv.p, out.p, lse.p, dout.p, B, N, H, Dh, scale, dqkv2.p, ws.p);
    if (rc_f != 0) std::printf("  forward returned %d: %s\n", rc_f, d4j_backend_last_error(emu));
    if (rc_b != 0 || rc_b2 != 0) std::printf("  backward returned %d: %s\n", rc_b, d4j_backend_last_error(emu));

    const reference r = make_reference(c, scale, qkv.p, dout.p);
    const double e_out = rel_err(out.p, r.out), e_lse = rel_err(lse.p, r.lse), e_dqkv = rel_err(dqkv.p, r.dqkv);
    const bool same_bits = std::memcmp(dqkv.p, dqkv2.p, qkv.n * sizeof(float)) == 0;
    const double tol_dqkv = r.max_abs_score > 20.0 ? kTolLargeScores : kTol;
    ok = ok && rc_f == 0 && rc_b == 0 && rc_b2 == 0 && e_out <= kTol && e_lse <= kTol && e_dqkv <= tol_dqkv &&
         same_bits;
    ++cases;
    if (!ok) ++failures;
    std::printf("B=%lld N=%-3lld H=%lld Dh=%lld scale=%.3f max|S|=%5.1f | ws=%8lld B | err out %.1e lse %.1e dqkv "
                "%.1e%s | emu fwd %6.1f ms bwd %6.1f ms | %s\n",
                static_cast<long long>(B), static_cast<long long>(N), static_cast<long long>(H),
                static_cast<long long>(Dh), scale, r.max_abs_score, static_cast<long long>(ws_bytes), e_out, e_lse,
                e_dqkv, same_bits ? "" : " (2nd backward differs)",
                std::chrono::duration<double, std::milli>(t1 - t0).count(),
                std::chrono::duration<double, std::milli>(t2 - t1).count(), ok ? "ok" : "FAILED");
}

// Bad arguments fail with a message.
void check_errors(d4j_backend *emu) {
    buffer qkv(3 * 8 * 64), out(8 * 64), lse(8), ws(1 << 14), dq(3 * 8 * 64);
    auto expect_failure = [&](const char *what, bool failed, const char *must_contain = nullptr) {
        const char *msg = failed ? d4j_backend_last_error(emu) : "(accepted)";
        const bool good = failed && (must_contain == nullptr || std::strstr(msg, must_contain) != nullptr);
        ++cases;
        if (!good) ++failures;
        std::printf("rejects %-36s | %s | %s\n", what, msg, good ? "ok" : "FAILED");
    };
    expect_failure("head dim 48", d4j_attention_forward(emu, nullptr, qkv.p, 1, 8, 1, 48, 0.1f, out.p, lse.p,
                                                        nullptr) != 0,
                   "head dim 48 is not supported: 32 or 64");
    expect_failure("workspace query, head dim 48", d4j_attention_workspace(emu, 1, 8, 1, 48) < 0,
                   "head dim 48 is not supported: 32 or 64");
    expect_failure("null qkv",
                   d4j_attention_forward(emu, nullptr, nullptr, 1, 8, 1, 64, 0.1f, out.p, lse.p, nullptr) != 0);
    expect_failure("N = 0", d4j_attention_forward(emu, nullptr, qkv.p, 1, 0, 1, 64, 0.1f, out.p, lse.p, nullptr) != 0);
    expect_failure("backward without workspace", d4j_attention_backward(emu, nullptr, qkv.p, out.p, lse.p, out.p, 1,
                                                                        8, 1, 64, 0.1f, dq.p, nullptr) != 0);
    expect_failure("backward null dout", d4j_attention_backward(emu, nullptr, qkv.p, out.p, lse.p, nullptr, 1, 8, 1,
                                                                64, 0.1f, dq.p, ws.p) != 0);
    expect_failure("misaligned qkv", d4j_attention_forward(emu, nullptr, qkv.p + 1, 1, 8, 1, 64, 0.1f, out.p, lse.p,
                                                           nullptr) != 0);
    expect_failure("workspace query, huge shape", d4j_attention_workspace(emu, 60000, 1 << 30, 60000, 64) < 0);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: attention_emu <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *emu = open_backend(argv[1]);
    if (emu == nullptr) return 1;
    const uint64_t seed = test_seed("attention_emu");
    std::mt19937_64 rng(seed);

    // Every N against both head dims, (B, H) in rotation; then the largest shapes with both B and H > 1, large
    // scores (max |S| = 80), a custom scale,
    // and one N = 198 (DeiT's token count: 7 key tiles, 4 query tiles).
    std::vector<att_case> list;
    const int64_t bh[4][2] = {{1, 1}, {2, 3}, {1, 3}, {2, 1}};
    int rot = 0;
    for (int64_t N : {1, 7, 32, 33, 50, 64, 65, 67})
        for (int64_t Dh : {32, 64}) {
            list.push_back({bh[rot % 4][0], N, bh[rot % 4][1], Dh, 1.0f, 0.0f});
            ++rot;
        }
    list.push_back({2, 67, 3, 64, 1.0f, 0.0f});
    list.push_back({2, 67, 3, 32, 1.0f, 0.0f});
    list.push_back({2, 67, 3, 64, -80.0f, 0.0f});
    list.push_back({1, 50, 3, 32, -80.0f, 0.0f});
    list.push_back({1, 7, 1, 64, -80.0f, 0.0f});
    list.push_back({2, 50, 1, 64, 1.0f, 0.3f});
    list.push_back({1, 198, 1, 64, 1.0f, 0.0f});
#ifdef D4J_TEST_SANITIZED
    // ThreadSanitizer costs grow with the square of the threads in a block: every other rotated case, and all the
    // later ones but N = 198.
    std::vector<att_case> sub;
    for (size_t i = 0; i < list.size(); ++i)
        if ((i < 16 && i % 2 == 1) || (i >= 16 && list[i].N != 198)) sub.push_back(list[i]);
    list.swap(sub);
#endif
    const auto start = std::chrono::steady_clock::now();
    for (const att_case &c : list) run_case(emu, c, rng);
    check_errors(emu);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%d of %d checks passed (%.1f s, seed %llu)\n", cases - failures, cases, secs,
                static_cast<unsigned long long>(seed));
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
