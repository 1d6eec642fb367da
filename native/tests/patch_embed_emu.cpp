// The CUDA patch_embed kernels (native/cuda/patch_embed.cu), run on the CPU by the emulator
// (libdistill4j_cudaemu), against a float64 reference written here from the definition in distill4j_impl.h, all
// through the dispatch API as Java calls them.
//
//   patch_embed_emu <libdistill4j_cudaemu.so>
//
// Fresh random inputs every run (the seed is printed; D4J_SEED=<seed> repeats a run). Each case checks, by
// ||x - ref|| / ||ref|| <= 1e-5: the tokens (buffer pre-filled with NaN, so a row left unwritten fails), and after
// each of two backward calls into gradients that start from random values: dweight, dbias, dpos, dcls, ddist
// (x - start = 1x then 2x the reference: they accumulate) and dimages (pre-filled with NaN; equal to the reference
// after both calls: it is written, not accumulated). Then the argument checks. Exit 1 if anything fails.
//
// Branches and thresholds, and the cases that reach them:
//   gemm_tiles        64 x 64 tiles, 16-wide slices: M = 4 .. 576 (1 to 9 row tiles), K = 16 .. 768 (partial slices
//                     at K = 49, 147), D = 16 .. 192 (1 to 3 column tiles)
//   col/row cursors   P = 4, 7, 8 < 16 (several carries per step), P = 16, one patch per image (8x8, P = 8)
//   fwd epilogue      float4 (D % 4 == 0, aligned) or scalar (D = 33; D = 36 with pos off 16-byte alignment);
//                     prefix 0, 1, 2 (class, distillation rows)
//   dweight split     S = 1 (M < 128) up to 5 chunks with a short last one (M = 576)
//   dimages           asked for or not (the buffer stays untouched)
#include "distill4j.h"
#include "harness.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr double kTol = 1e-5;


using d4j_test::buffer;
using d4j_test::open_backend;
using d4j_test::test_seed;

struct pe_case {
    int64_t B, Cin, H, W, P, D;
    int prefix;    // 0, 1 (class token), 2 (class and distillation tokens)
    bool dimages;  // ask for the image gradient
    bool pos_offset = false;  // pos one float into its buffer: not 16-byte aligned, so the scalar epilogue
};

// ||x - base - scale * ref|| / ||scale * ref|| (base may be null); NaN anywhere gives NaN.
double rel_err(const float *x, const float *base, const std::vector<double> &ref, double scale) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double want = scale * ref[i], got = static_cast<double>(x[i]) - (base ? base[i] : 0.0);
        d += (got - want) * (got - want);
        r += want * want;
    }
    return r > 0.0 ? std::sqrt(d / r) : std::sqrt(d);
}

struct reference {
    std::vector<double> tokens, dweight, dbias, dpos, dpre[2], dimages;
};

// Straight from the definition: A[m = (b, py, px), k = (c, ky, kx)] = images[b, c, py P + ky, px P + kx];
// tokens[b, prefix + n] = W A[m]ᵀ + bias + pos[prefix + n], tokens[b, p < prefix] = token_p + pos[p].
reference make_reference(const pe_case &c, const float *images, const float *weight, const float *bias,
                         const float *pos, const float *pre[2], const float *dtokens) {
    const int64_t Hp = c.H / c.P, Wp = c.W / c.P, N = Hp * Wp, K = c.Cin * c.P * c.P, M = c.B * N, T = c.prefix + N;
    const int64_t D = c.D;
    std::vector<double> A(M * K);
    auto pixel = [&](int64_t m, int64_t k) {
        const int64_t b = m / N, n = m % N, py = n / Wp, px = n % Wp;
        const int64_t ch = k / (c.P * c.P), ky = k / c.P % c.P, kx = k % c.P;
        return ((b * c.Cin + ch) * c.H + py * c.P + ky) * c.W + px * c.P + kx;
    };
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) A[m * K + k] = images[pixel(m, k)];
    auto token_row = [&](int64_t m) { return (m / N) * T + c.prefix + m % N; };

    reference r;
    r.tokens.assign(c.B * T * D, 0.0);
    for (int64_t b = 0; b < c.B; ++b)
        for (int p = 0; p < c.prefix; ++p)
            for (int64_t d = 0; d < D; ++d)
                r.tokens[(b * T + p) * D + d] = static_cast<double>(pre[p][d]) + pos[p * D + d];
    for (int64_t m = 0; m < M; ++m)
        for (int64_t d = 0; d < D; ++d) {
            double s = static_cast<double>(bias[d]) + pos[(c.prefix + m % N) * D + d];
            for (int64_t k = 0; k < K; ++k) s += static_cast<double>(weight[d * K + k]) * A[m * K + k];
            r.tokens[token_row(m) * D + d] = s;
        }

    r.dweight.assign(D * K, 0.0);
    r.dbias.assign(D, 0.0);
    r.dpos.assign(T * D, 0.0);
    r.dimages.assign(c.B * c.Cin * c.H * c.W, 0.0);
    for (int64_t m = 0; m < M; ++m) {
        const float *g = dtokens + token_row(m) * D;
        for (int64_t d = 0; d < D; ++d) {
            r.dbias[d] += g[d];
            for (int64_t k = 0; k < K; ++k) r.dweight[d * K + k] += static_cast<double>(g[d]) * A[m * K + k];
        }
        for (int64_t k = 0; k < K; ++k) {
            double s = 0.0;
            for (int64_t d = 0; d < D; ++d) s += static_cast<double>(g[d]) * weight[d * K + k];
            r.dimages[pixel(m, k)] = s;
        }
    }
    for (int64_t b = 0; b < c.B; ++b)
        for (int64_t i = 0; i < T * D; ++i) r.dpos[i] += dtokens[b * T * D + i];
    for (int p = 0; p < c.prefix; ++p) r.dpre[p].assign(r.dpos.begin() + p * D, r.dpos.begin() + (p + 1) * D);
    return r;
}

int failures = 0, cases = 0;

void run_case(d4j_backend *emu, const pe_case &c, std::mt19937_64 &rng) {
    const int64_t N = (c.H / c.P) * (c.W / c.P), K = c.Cin * c.P * c.P, T = c.prefix + N, D = c.D;
    buffer images(c.B * c.Cin * c.H * c.W), weight(D * K), bias(D), posbuf(T * D + 1), cls(D), dist(D);
    struct {
        float *p;
        size_t n;
    } pos{posbuf.p + (c.pos_offset ? 1 : 0), static_cast<size_t>(T * D)};
    buffer tokens(c.B * T * D), dtokens(c.B * T * D);
    for (buffer *b : {&images, &weight, &bias, &posbuf, &cls, &dist, &dtokens}) b->random(rng);
    tokens.fill(NAN);
    const float *pre[2] = {cls.p, dist.p};
    const float *cls_p = c.prefix >= 1 ? cls.p : nullptr, *dist_p = c.prefix >= 2 ? dist.p : nullptr;

    const int64_t ws_bytes = d4j_patch_embed_workspace(emu, c.B, c.Cin, c.H, c.W, c.P, c.D);
    bool ok = ws_bytes >= 0;
    buffer ws(ws_bytes > 0 ? static_cast<size_t>(ws_bytes) / sizeof(float) : 0);

    const auto t0 = std::chrono::steady_clock::now();
    const int rc_f = d4j_patch_embed_forward(emu, nullptr, images.p, c.B, c.Cin, c.H, c.W, c.P, c.D, weight.p, bias.p,
                                             pos.p, cls_p, dist_p, tokens.p, ws.p);
    const auto t1 = std::chrono::steady_clock::now();

    // Gradients start from random values (they accumulate); dimages from NaN (it is written).
    buffer dweight(D * K), dbias(D), dpos(T * D), dcls(D), ddist(D), dimages(images.n);
    buffer w0(D * K), b0(D), p0(T * D), c0(D), d0(D);
    for (buffer *b : {&w0, &b0, &p0, &c0, &d0}) b->random(rng);
    auto copy = [](buffer &dst, const buffer &src) {
        for (size_t i = 0; i < src.n; ++i) dst.p[i] = src.p[i];
    };
    copy(dweight, w0), copy(dbias, b0), copy(dpos, p0), copy(dcls, c0), copy(ddist, d0);
    dimages.fill(NAN);
    float *dcls_p = c.prefix >= 1 ? dcls.p : nullptr, *ddist_p = c.prefix >= 2 ? ddist.p : nullptr;
    float *dimages_p = c.dimages ? dimages.p : nullptr;
    auto backward = [&] {
        return d4j_patch_embed_backward(emu, nullptr, images.p, c.B, c.Cin, c.H, c.W, c.P, c.D, weight.p, dtokens.p,
                                        dweight.p, dbias.p, dpos.p, dcls_p, ddist_p, dimages_p, ws.p);
    };

    const reference r = make_reference(c, images.p, weight.p, bias.p, pos.p, pre, dtokens.p);
    double worst_fwd = rel_err(tokens.p, nullptr, r.tokens, 1.0), worst_bwd = 0.0;
    ok = ok && rc_f == 0 && worst_fwd <= kTol;
    double bwd_ms = 0.0;
    for (int call = 1; call <= 2; ++call) {
        const auto b0t = std::chrono::steady_clock::now();
        const int rc_b = backward();
        bwd_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - b0t).count();
        if (rc_b != 0) std::printf("  backward returned %d: %s\n", rc_b, d4j_backend_last_error(emu));
        ok = ok && rc_b == 0;
        struct named {
            const char *name;
            double err;
        };
        std::vector<named> errs = {{"dweight", rel_err(dweight.p, w0.p, r.dweight, call)},
                                   {"dbias", rel_err(dbias.p, b0.p, r.dbias, call)},
                                   {"dpos", rel_err(dpos.p, p0.p, r.dpos, call)}};
        if (c.prefix >= 1) errs.push_back({"dcls", rel_err(dcls.p, c0.p, r.dpre[0], call)});
        if (c.prefix >= 2) errs.push_back({"ddist", rel_err(ddist.p, d0.p, r.dpre[1], call)});
        if (c.dimages) errs.push_back({"dimages", rel_err(dimages.p, nullptr, r.dimages, 1.0)});
        for (const named &e : errs) {
            if (!(e.err <= kTol)) {  // NaN fails
                ok = false;
                std::printf("  call %d: %s rel err %.2e\n", call, e.name, e.err);
            }
            worst_bwd = d4j_test::worst(worst_bwd, e.err);
        }
    }
    // Untouched: the prefix gradients that were not asked for, and dimages when not asked for.
    if (c.prefix < 2 && rel_err(ddist.p, d0.p, std::vector<double>(D, 0.0), 1.0) != 0.0) ok = false;
    if (!c.dimages && !std::isnan(dimages.p[0])) ok = false;

    ++cases;
    if (!ok) ++failures;
    std::printf("B=%lld Cin=%lld %2lldx%-2lld P=%lld D=%-3lld prefix=%d dimages=%d | M=%-4lld K=%-3lld ws=%7lld B | "
                "fwd err %.1e bwd err (max, 2 calls) %.1e | emu fwd %6.1f ms bwd %6.1f ms/call | %s\n",
                static_cast<long long>(c.B), static_cast<long long>(c.Cin), static_cast<long long>(c.H),
                static_cast<long long>(c.W), static_cast<long long>(c.P), static_cast<long long>(c.D), c.prefix,
                c.dimages ? 1 : 0, static_cast<long long>(c.B * N), static_cast<long long>(K),
                static_cast<long long>(ws_bytes), worst_fwd, worst_bwd,
                std::chrono::duration<double, std::milli>(t1 - t0).count(), bwd_ms / 2, ok ? "ok" : "FAILED");
    if (rc_f != 0) std::printf("  forward returned %d: %s\n", rc_f, d4j_backend_last_error(emu));
}

// Bad arguments fail with a message.
void check_errors(d4j_backend *emu) {
    buffer x(4 * 8 * 8), w(16 * 16), v(64 * 16), t(64 * 16), ws(1 << 12);
    auto expect_failure = [&](const char *what, bool failed) {
        ++cases;
        if (!failed) ++failures;
        std::printf("rejects %-40s | %s | %s\n", what, failed ? d4j_backend_last_error(emu) : "(accepted)",
                    failed ? "ok" : "FAILED");
    };
    expect_failure("H not a multiple of P", d4j_patch_embed_forward(emu, nullptr, x.p, 1, 1, 9, 8, 4, 16, w.p, v.p, v.p,
                                                                    v.p, nullptr, t.p, ws.p) != 0);
    expect_failure("null weight", d4j_patch_embed_forward(emu, nullptr, x.p, 1, 1, 8, 8, 4, 16, nullptr, v.p, v.p, v.p,
                                                          nullptr, t.p, ws.p) != 0);
    expect_failure("dist without cls", d4j_patch_embed_forward(emu, nullptr, x.p, 1, 1, 8, 8, 4, 16, w.p, v.p, v.p,
                                                               nullptr, v.p, t.p, ws.p) != 0);
    expect_failure("zero D", d4j_patch_embed_forward(emu, nullptr, x.p, 1, 1, 8, 8, 4, 0, w.p, v.p, v.p, v.p, nullptr,
                                                     t.p, ws.p) != 0);
    expect_failure("backward without workspace",
                   d4j_patch_embed_backward(emu, nullptr, x.p, 1, 1, 8, 8, 4, 16, w.p, t.p, w.p, v.p, v.p, v.p,
                                            nullptr, nullptr, nullptr) != 0);
    expect_failure("backward ddist without dcls",
                   d4j_patch_embed_backward(emu, nullptr, x.p, 1, 1, 8, 8, 4, 16, w.p, t.p, w.p, v.p, v.p, nullptr,
                                            v.p, nullptr, ws.p) != 0);
    expect_failure("workspace query, images over 2^31 elements",
                   d4j_patch_embed_workspace(emu, 1 << 20, 3, 224, 224, 16, 192) < 0);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: patch_embed_emu <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *emu = open_backend(argv[1]);
    if (emu == nullptr) return 1;
    const uint64_t seed = test_seed("patch_embed_emu");
    std::mt19937_64 rng(seed);

    // Small images with every (B, Cin, prefix, dimages) combination in rotation, then the shapes that cross tile
    // edges: several 64-row tiles and a split of the dweight reduction (M = 288: S = 3 chunks), D over one 64-column
    // tile and not a multiple of 4 (scalar epilogue), K = 147 and 192 (partial and several 16- and 64-column
    // slices), one patch per image.
    std::vector<pe_case> list;
    const int64_t hwp[3][3] = {{8, 8, 4}, {14, 14, 7}, {16, 24, 8}};
    int rot = 0;
    for (const auto &s : hwp)
        for (int64_t D : {32, 40})
            for (int64_t Cin : {1, 3}) {
                const int prefix = rot % 3;
                list.push_back({1 + rot % 2, Cin, s[0], s[1], s[2], D, prefix, (rot / 3) % 2 == 0});
                ++rot;
            }
    list.push_back({2, 1, 48, 48, 4, 40, 2, true});
    list.push_back({2, 3, 16, 24, 8, 72, 1, true});
    list.push_back({1, 3, 14, 28, 7, 33, 2, true});
    list.push_back({3, 2, 8, 8, 8, 16, 0, true});
    list.push_back({4, 1, 48, 48, 4, 32, 1, false});   // M = 576: S = 5 chunks of 128, the last one 64 rows
    list.push_back({2, 3, 32, 32, 4, 96, 2, true});    // M = 128: two full row tiles, two column tiles of D
    list.push_back({1, 1, 16, 16, 4, 36, 1, false, true});  // D % 4 == 0 but pos misaligned: scalar epilogue
    list.push_back({1, 3, 32, 32, 16, 192, 2, true});  // the bench's K = 768 and D = 192 (12 x 3 weight tiles)
#ifdef D4J_TEST_SANITIZED
    // ThreadSanitizer costs grow with the square of the threads in a block: every other small case, and all the
    // tile-crossing ones.
    std::vector<pe_case> sub;
    for (size_t i = 0; i < list.size(); ++i)
        if (i % 2 == 0 || i >= 12) sub.push_back(list[i]);
    list.swap(sub);
#endif
    const auto start = std::chrono::steady_clock::now();
    for (const pe_case &c : list) run_case(emu, c, rng);
    check_errors(emu);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%d of %d checks passed (%.1f s, seed %llu)\n", cases - failures, cases, secs,
                static_cast<unsigned long long>(seed));
    d4j_backend_close(emu);
    return failures == 0 ? 0 : 1;
}
