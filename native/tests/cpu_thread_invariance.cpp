// The CPU kernels give the same bits whatever team of threads runs them: exact checkpoint resume relies on it, and
// the team shrinks and grows with the machine's load (native/cpu/threads.h) while dynamic schedules hand the work
// to whichever thread is free. This program runs itself with OMP_NUM_THREADS = 1, 2, 3 and 4 and, for each, every
// team size from 1 to that count (d4j_impl_force_team), on the same inputs: every op forward and backward at ViT
// shapes (the GEMM splits, attention, the LayerNorm and bias reductions, AdamW, the losses). The hash of every
// output must not depend on the team. (The GEMM blocks follow OMP_NUM_THREADS, as the kernels always did, so bits
// may differ between thread counts; the output says whether they did.)
//
//   cpu_thread_invariance <libdistill4j_cpu.so> <libopenblas.so.0 | "">
#include "distill4j.h"
#include "harness.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using d4j_test::buffer;

// FNV-1a over the bytes of every output, in a fixed order.
struct hasher {
    uint64_t h = 1469598103934665603ull;
    void add(const buffer &b) {
        const auto *p = reinterpret_cast<const unsigned char *>(b.p);
        for (size_t i = 0; i < b.n * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
    }
};

bool ok(d4j_backend *be, int status, const char *what) {
    if (status != 0) std::fprintf(stderr, "%s failed: %s\n", what, d4j_backend_last_error(be));
    return status == 0;
}

// Runs every op once on a team of `team` threads, on inputs drawn from `seed`; prints "hash <hex> threads <n>".
int child(const char *cpu_library, uint64_t seed, int team) {
    d4j_backend *be = d4j_test::open_backend(cpu_library);
    if (be == nullptr) return 2;
    void *lib = dlopen(cpu_library, RTLD_NOW | RTLD_NOLOAD);
    auto force_team = lib != nullptr ? reinterpret_cast<void (*)(int)>(dlsym(lib, "d4j_impl_force_team")) : nullptr;
    auto threads = lib != nullptr ? reinterpret_cast<int (*)()>(dlsym(lib, "d4j_impl_threads")) : nullptr;
    if (force_team == nullptr || threads == nullptr) {
        std::fprintf(stderr, "%s does not export d4j_impl_force_team and d4j_impl_threads\n", cpu_library);
        return 2;
    }
    force_team(team);
    std::mt19937_64 rng(seed);
    hasher hash;
    bool good = true;
    {  // linear: the DeiT-Ti qkv shape (row blocks), fc2 (dW over 768 rows) and a head (M = 8: column blocks)
        const int64_t shapes[][3] = {{1584, 192, 576}, {1584, 768, 192}, {8, 192, 1000}};
        for (const auto &s : shapes) {
            const int64_t M = s[0], K = s[1], N = s[2];
            buffer x(M * K), w(N * K), b(N), res(M * N), y(M * N), dy(M * N), dx(M * K), dw(N * K), db(N);
            x.random(rng), w.random(rng), b.random(rng), res.random(rng), dy.random(rng), dw.random(rng),
                db.random(rng), y.fill(0), dx.fill(0);
            good = good && ok(be, d4j_linear_forward(be, nullptr, x.p, w.p, b.p, res.p, M, K, N, y.p, 0), "linear fwd");
            good = good && ok(be, d4j_linear_backward(be, nullptr, x.p, w.p, dy.p, M, K, N, dx.p, dw.p, db.p, 0),
                              "linear bwd");
            hash.add(y), hash.add(dx), hash.add(dw), hash.add(db);
        }
    }
    {  // patch embedding, DeiT geometry at B = 4 with class and distillation tokens
        const int64_t B = 4, Cin = 3, H = 224, W = 224, P = 16, D = 192, N = (H / P) * (W / P), T = N + 2;
        buffer img(B * Cin * H * W), w(D * Cin * P * P), bias(D), pos(T * D), cls(D), dist(D), tok(B * T * D);
        buffer dtok(B * T * D), dw(D * Cin * P * P), db(D), dpos(T * D), dcls(D), ddist(D), dimg(B * Cin * H * W);
        img.random(rng), w.random(rng), bias.random(rng), pos.random(rng), cls.random(rng), dist.random(rng);
        dtok.random(rng), dw.fill(0), db.fill(0), dpos.fill(0), dcls.fill(0), ddist.fill(0), dimg.random(rng);
        buffer ws(static_cast<size_t>(d4j_patch_embed_workspace(be, B, Cin, H, W, P, D)) / sizeof(float) + 1);
        good = good && ok(be, d4j_patch_embed_forward(be, nullptr, img.p, B, Cin, H, W, P, D, w.p, bias.p, pos.p,
                                                      cls.p, dist.p, tok.p, ws.p), "patch_embed fwd");
        good = good && ok(be, d4j_patch_embed_backward(be, nullptr, img.p, B, Cin, H, W, P, D, w.p, dtok.p, dw.p,
                                                       db.p, dpos.p, dcls.p, ddist.p, dimg.p, ws.p), "patch_embed bwd");
        hash.add(tok), hash.add(dw), hash.add(db), hash.add(dpos), hash.add(dcls), hash.add(ddist), hash.add(dimg);
    }
    {  // attention, DeiT-Ti heads at B = 4
        const int64_t B = 4, N = 198, H = 3, Dh = 64;
        buffer qkv(B * N * 3 * H * Dh), out(B * N * H * Dh), lse(B * H * N), dout(B * N * H * Dh);
        buffer dqkv(B * N * 3 * H * Dh);
        qkv.random(rng), dout.random(rng), dqkv.random(rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
        good = good && ok(be, d4j_attention_forward(be, nullptr, qkv.p, B, N, H, Dh, scale, out.p, lse.p, nullptr),
                          "attention fwd");
        good = good && ok(be, d4j_attention_backward(be, nullptr, qkv.p, out.p, lse.p, dout.p, B, N, H, Dh, scale,
                                                     dqkv.p, nullptr), "attention bwd");
        hash.add(out), hash.add(lse), hash.add(dqkv);
    }
    {  // LayerNorm (chunked weight/bias reductions) and GELU over the MLP activations
        const int64_t M = 1584, C = 192, n = 1584 * 768;
        buffer x(M * C), w(C), b(C), y(M * C), mean(M), rstd(M), dy(M * C), dx(M * C), dw(C), db(C);
        x.random(rng), w.random(rng), b.random(rng), dy.random(rng), dx.random(rng), dw.fill(0), db.fill(0);
        buffer ws(static_cast<size_t>(d4j_layernorm_workspace(be, M, C)) / sizeof(float) + 1);
        good = good && ok(be, d4j_layernorm_forward(be, nullptr, x.p, w.p, b.p, M, C, 1e-6f, y.p, mean.p, rstd.p),
                          "layernorm fwd");
        good = good && ok(be, d4j_layernorm_backward(be, nullptr, x.p, w.p, mean.p, rstd.p, dy.p, M, C, dx.p, dw.p,
                                                     db.p, ws.p), "layernorm bwd");
        hash.add(y), hash.add(mean), hash.add(rstd), hash.add(dx), hash.add(dw), hash.add(db);
        buffer g(n), gy(n), gdy(n), gdx(n);
        g.random(rng), gdy.random(rng), gdx.random(rng);
        good = good && ok(be, d4j_gelu_forward(be, nullptr, g.p, n, gy.p), "gelu fwd");
        good = good && ok(be, d4j_gelu_backward(be, nullptr, g.p, gdy.p, n, gdx.p), "gelu bwd");
        hash.add(gy), hash.add(gdx);
    }
    {  // AdamW and the gradient norm over 150,000 parameters; the losses at B = 256, C = 1000 (soft targets too)
        const int64_t n = 150000, B = 256, C = 1000;
        buffer p(n), grad(n), m(n), v(n), sumsq(1), logits(B * C), teacher(B * C), rows(B), loss(1),
            g(B * C), krows(B), kloss(1), kg(B * C);
        p.random(rng), grad.random(rng), m.random(rng), v.random(rng), logits.random(rng), teacher.random(rng);
        for (size_t i = 0; i < v.n; ++i) v.p[i] = std::fabs(v.p[i]);
        std::vector<int32_t> labels(B);
        for (int64_t i = 0; i < B; ++i) labels[i] = static_cast<int32_t>(rng() % C);
        good = good && ok(be, d4j_sum_squares(be, nullptr, grad.p, n, 0, sumsq.p), "sum_squares");
        good = good && ok(be, d4j_adamw(be, nullptr, p.p, grad.p, m.p, v.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 3,
                                        nullptr), "adamw");
        good = good && ok(be, d4j_cross_entropy(be, nullptr, logits.p, labels.data(), B, C, 0.1f, 1.0f, rows.p, loss.p,
                                                g.p), "cross_entropy");
        good = good && ok(be, d4j_kl_div(be, nullptr, logits.p, teacher.p, B, C, 4.0f, 1, 0, 1.0f, nullptr, krows.p,
                                         kloss.p, kg.p), "kl_div");
        hash.add(sumsq), hash.add(p), hash.add(m), hash.add(v), hash.add(rows), hash.add(loss), hash.add(g);
        hash.add(krows), hash.add(kloss), hash.add(kg);
        // Probability targets: the teacher's logits, taken as unnormalised targets, are as good a row as any here.
        good = good && ok(be, d4j_cross_entropy_soft(be, nullptr, logits.p, teacher.p, B, C, 0.1f, 1.0f, krows.p,
                                                     kloss.p, kg.p), "cross_entropy_soft");
        hash.add(krows), hash.add(kloss), hash.add(kg);
    }
    d4j_backend_close(be);
    if (!good) return 1;
    std::printf("hash %016llx threads %d\n", static_cast<unsigned long long>(hash.h), threads());
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 6 && std::strcmp(argv[3], "--child") == 0) {
        // The GEMMs are split over our threads only when OpenBLAS itself runs single-threaded, as in CpuBackend.
        if (argv[2][0] == '\0' || dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL) == nullptr) return 2;
        if (auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
        return child(argv[1], std::strtoull(argv[4], nullptr, 10), std::atoi(argv[5]));
    }
    // CMake drops an empty last argument (no OpenBLAS found at configure time): argc 2 means the same as "".
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: cpu_thread_invariance <libdistill4j_cpu.so> [libopenblas.so.0]\n");
        return 2;
    }
    const char *openblas = argc == 3 ? argv[2] : "";
    if (openblas[0] == '\0') {
        std::printf("cpu_thread_invariance: SKIPPED: no OpenBLAS (org.bytedeco:openblas linux-x86_64 jar not found in "
                    "~/.m2 at configure time)\n");
        return 77;
    }
    const uint64_t seed = d4j_test::test_seed("cpu_thread_invariance");
    int failures = 0;
    std::string previous;
    bool differ = false;
    for (int threads = 1; threads <= 4; ++threads) {
        std::string first;
        for (int team = threads; team >= 1; --team) {
            const std::string command = "OMP_NUM_THREADS=" + std::to_string(threads) + " '/proc/" +
                                        std::to_string(getpid()) + "/exe' '" + argv[1] + "' '" + openblas +
                                        "' --child " + std::to_string(seed) + " " + std::to_string(team);
            FILE *out = popen(command.c_str(), "r");
            char line[256] = "";
            const bool read = out != nullptr && std::fgets(line, sizeof line, out) != nullptr;
            const int status = out != nullptr ? pclose(out) : -1;
            line[std::strcspn(line, "\n")] = '\0';
            const std::string want = " threads " + std::to_string(threads);
            const bool ran = read && status == 0 && std::strncmp(line, "hash ", 5) == 0 &&
                             std::string(line).find(want) != std::string::npos;
            if (team == threads) first = ran ? std::string(line, 21) : "";
            const bool same = ran && !first.empty() && std::string(line, 21) == first;
            std::printf("  %-4s OMP_NUM_THREADS=%d, team of %d: %s%s\n", same ? "ok" : "FAIL", threads, team,
                        read ? line : "the child failed", read && !ran ? " (not the thread count asked for)" : "");
            failures += !same;
        }
        differ = differ || (!previous.empty() && first != previous);
        previous = first;
    }
    std::printf("  (between thread counts the bits %s)\n", differ ? "differ: the GEMM blocks follow the count"
                                                               : "are the same");
    std::printf("cpu_thread_invariance: %s\n", failures == 0 ? "every team gives the same bits" : "FAILED");
    return failures == 0 ? 0 : 1;
}
