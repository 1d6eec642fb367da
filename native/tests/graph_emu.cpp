// CUDA graphs through the dispatch API, as Java's CudaGraph uses them, on the emulator (cuda_emu.h, "Streams and
// CUDA graphs"): a captured sequence of the kinds of work a training step queues (zeroing, a device copy, kernels,
// the cuBLASLt GEMMs with their BIAS and BGRADB epilogues and the kernel that adds BGRADB's sum into dbias, cuBLAS
// in tf32) must
//   - run nothing while it is captured (every output keeps its sentinel until the first replay);
//   - replay exactly what the same calls do uncaptured, bit for bit, on the inputs present at each replay (new
//     inputs written in place between replays), and the same again when replayed twice;
//   - be refused where CUDA refuses it: capture on the null stream, a wait for the device or an allocation during
//     the capture (graph_end then fails and the stream works as before), graph entries on the cpu backend; and a
//     stream's first GEMM inside a capture (cuBLASLt's workspace would be allocated) refused by us, with the reason.
// The uncaptured results are themselves checked against float64 (y = x Wᵀ + b, dbias = Σ dy), so that two runs
// doing nothing alike cannot pass.
//
//   graph_emu <libdistill4j_cudaemu.so> <libdistill4j_cpu.so> <libopenblas.so.0 | "">
// OpenBLAS as for linear_emu (the emulated GEMMs are the host's); without it: exit 77, CTest's skip.
#include "distill4j.h"
#include "harness.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char *what) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++failures;
}

// Sizes past one emulated block of every kernel used (gelu 256 threads, the bias-add 256) and uneven.
constexpr int64_t M = 37, K = 24, N = 300;

struct buffers {
    d4j_backend *b;
    std::vector<float *> all;
    float *alloc(int64_t n) {
        float *p = static_cast<float *>(d4j_backend_alloc(b, static_cast<size_t>(n) * sizeof(float)));
        if (p == nullptr) {
            std::fprintf(stderr, "d4j_backend_alloc failed\n");
            std::exit(1);
        }
        all.push_back(p);
        return p;
    }
    ~buffers() {
        for (float *p : all) d4j_backend_free(b, p);
    }
};

// The outputs of one run of the sequence.
struct outputs {
    float *y, *act, *copy, *dx, *dw, *db, *tf32_y, *sumsq;
};

outputs make_outputs(buffers &mem) {
    return {mem.alloc(M * N), mem.alloc(M * N), mem.alloc(M * N), mem.alloc(M * K), mem.alloc(N * K), mem.alloc(N),
            mem.alloc(M * N), mem.alloc(1)};
}

// The sequence: what a step does, in miniature. 0 when every call was accepted.
int sequence(d4j_backend *b, void *s, const float *x, const float *w, const float *bias, const float *dy,
             const outputs &o) {
    int rc = 0;
    rc |= d4j_zero_async(b, s, o.dw, sizeof(float) * N * K);  // gradients accumulate: zeroed first, as zeroGrad
    rc |= d4j_zero_async(b, s, o.db, sizeof(float) * N);
    rc |= d4j_linear_forward(b, s, x, w, bias, nullptr, M, K, N, o.y, 0);  // cuBLASLt, BIAS epilogue
    rc |= d4j_gelu_forward(b, s, o.y, M * N, o.act);
    rc |= d4j_copy_async(b, s, o.copy, o.act, sizeof(float) * M * N);
    rc |= d4j_linear_backward(b, s, x, w, dy, M, K, N, o.dx, o.dw, o.db, 0);  // BGRADB, then dbias +=
    rc |= d4j_linear_forward(b, s, x, w, bias, nullptr, M, K, N, o.tf32_y, 1);  // cuBLAS GemmEx, tf32
    rc |= d4j_sum_squares(b, s, o.dw, N * K, 0, o.sumsq);
    return rc;
}

bool same_bits(const float *a, const float *b, int64_t n) { return std::memcmp(a, b, sizeof(float) * n) == 0; }

bool same_outputs(const outputs &a, const outputs &b) {
    return same_bits(a.y, b.y, M * N) && same_bits(a.act, b.act, M * N) && same_bits(a.copy, b.copy, M * N) &&
           same_bits(a.dx, b.dx, M * K) && same_bits(a.dw, b.dw, N * K) && same_bits(a.db, b.db, N) &&
           same_bits(a.tf32_y, b.tf32_y, M * N) && same_bits(a.sumsq, b.sumsq, 1);
}

void fill(float *p, int64_t n, std::mt19937_64 &rng) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (int64_t i = 0; i < n; ++i) p[i] = d(rng);
}

void poison(const outputs &o) {
    for (auto [p, n] : {std::pair{o.y, M * N}, {o.act, M * N}, {o.copy, M * N}, {o.dx, M * K}, {o.dw, N * K},
                        {o.db, N}, {o.tf32_y, M * N}, {o.sumsq, int64_t{1}}})
        for (int64_t i = 0; i < n; ++i) p[i] = -12345.0f;
}

bool untouched(const outputs &o) {
    for (auto [p, n] : {std::pair{o.y, M * N}, {o.act, M * N}, {o.copy, M * N}, {o.dx, M * K}, {o.dw, N * K},
                        {o.db, N}, {o.tf32_y, M * N}, {o.sumsq, int64_t{1}}})
        for (int64_t i = 0; i < n; ++i)
            if (p[i] != -12345.0f) return false;
    return true;
}

// Worst relative error of the uncaptured y and dbias against float64.
double reference_error(const float *x, const float *w, const float *bias, const float *dy, const outputs &o) {
    double err = 0.0;
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double r = bias[n];
            for (int64_t k = 0; k < K; ++k) r += static_cast<double>(x[m * K + k]) * w[n * K + k];
            err = d4j_test::worst(err, std::fabs(o.y[m * N + n] - r) / (std::fabs(r) + 1.0));
        }
    for (int64_t n = 0; n < N; ++n) {
        double r = 0.0;
        for (int64_t m = 0; m < M; ++m) r += dy[m * N + n];
        err = d4j_test::worst(err, std::fabs(o.db[n] - r) / (std::fabs(r) + 1.0));
    }
    return err;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: graph_emu <libdistill4j_cudaemu.so> <libdistill4j_cpu.so> [libopenblas.so.0]\n");
        return 2;
    }
    const char *openblas = argc == 4 ? argv[3] : "";
    if (openblas[0] == '\0' || dlopen(openblas, RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        std::printf("graph_emu: SKIPPED: no OpenBLAS (org.bytedeco:openblas linux-x86_64 jar not found in ~/.m2 at "
                    "configure time, or not loadable)\n");
        return 77;
    }
    std::mt19937_64 rng(d4j_test::test_seed("graph_emu"));
    d4j_backend *emu = d4j_test::open_backend(argv[1]);
    d4j_backend *cpu = d4j_test::open_backend(argv[2]);
    if (emu == nullptr || cpu == nullptr) return 1;

    expect(d4j_backend_has_streams(emu) == 1 && d4j_backend_has_streams(cpu) == 0,
           "cuda-emu has streams and graphs, cpu has none");
    expect(d4j_graph_begin(cpu, nullptr) != 0 &&
               std::strstr(d4j_backend_last_error(cpu), "no streams or CUDA graphs") != nullptr,
           "graph_begin on cpu fails, saying why");
    expect(d4j_graph_begin(emu, nullptr) != 0, "no capture of the null (legacy) stream");

    void *stream = nullptr;
    if (d4j_stream_create(emu, &stream) != 0 || stream == nullptr) {
        std::fprintf(stderr, "stream_create: %s\n", d4j_backend_last_error(emu));
        return 1;
    }
    {
        buffers mem{emu, {}};
        float *x = mem.alloc(M * K), *w = mem.alloc(N * K), *bias = mem.alloc(N), *dy = mem.alloc(M * N);
        const outputs eager = make_outputs(mem), graphed = make_outputs(mem);
        fill(x, M * K, rng);
        fill(w, N * K, rng);
        fill(bias, N, rng);
        fill(dy, M * N, rng);
        // The first, uncaptured run also makes what a capture may not: cuBLASLt's workspace and BGRADB's scratch.
        expect(sequence(emu, stream, x, w, bias, dy, eager) == 0, "the sequence runs uncaptured");
        const double ref = reference_error(x, w, bias, dy, eager);
        std::printf("      uncaptured y and dbias vs float64: %.3g (bound 1e-5)\n", ref);
        expect(d4j_test::within(ref, 1e-5), "uncaptured results agree with float64");

        poison(graphed);
        void *graph = nullptr;
        expect(d4j_graph_begin(emu, stream) == 0, "capture begins");
        expect(sequence(emu, stream, x, w, bias, dy, graphed) == 0, "every call of the sequence accepted in capture");
        expect(untouched(graphed), "nothing ran while capturing");
        expect(d4j_graph_end(emu, stream, &graph) == 0 && graph != nullptr, "capture ends with a graph");
        expect(untouched(graphed), "nothing ran when the capture ended");

        for (int round = 0; round < 3; ++round) {
            if (round > 0) {  // new inputs in place, as a trainer uploads the next batch
                fill(x, M * K, rng);
                fill(dy, M * N, rng);
                if (round == 2) fill(bias, N, rng);
                expect(sequence(emu, stream, x, w, bias, dy, eager) == 0, "uncaptured run on the new inputs");
            }
            expect(d4j_graph_launch(emu, stream, graph) == 0, "replay accepted");
            char what[96];
            std::snprintf(what, sizeof what, "replay %d equals the uncaptured run bit for bit", round + 1);
            expect(same_outputs(eager, graphed), what);
        }
        expect(d4j_graph_launch(emu, stream, graph) == 0 && same_outputs(eager, graphed),
               "a second replay on the same inputs: the same bits (the graph zeroes the gradients it accumulates)");
        expect(d4j_graph_destroy(emu, graph) == 0, "graph destroyed");

        // What CUDA refuses during a capture: a wait for the device, an allocation. Each breaks that capture only.
        expect(d4j_graph_begin(emu, stream) == 0, "second capture begins");
        expect(d4j_gelu_forward(emu, stream, eager.y, M * N, graphed.act) == 0, "a launch in the second capture");
        expect(d4j_synchronize(emu, stream) != 0, "synchronize refused during the capture");
        graph = reinterpret_cast<void *>(1);
        expect(d4j_graph_end(emu, stream, &graph) != 0 && graph == nullptr &&
                   std::strstr(d4j_backend_last_error(emu), "cannot be a graph") != nullptr,
               "graph_end fails after a synchronize, with no graph and the reason");
        expect(d4j_graph_begin(emu, stream) == 0, "third capture begins");
        expect(d4j_backend_alloc(emu, 64) == nullptr, "allocation refused during the capture");
        expect(d4j_graph_end(emu, stream, &graph) != 0 && graph == nullptr, "graph_end fails after an allocation");
        poison(graphed);
        expect(d4j_gelu_forward(emu, stream, eager.y, M * N, graphed.act) == 0 &&
                   same_bits(graphed.act, eager.act, M * N) && d4j_synchronize(emu, stream) == 0,
               "the stream runs work at once again after the broken captures");
    }
    // A stream whose first GEMM would fall in a capture: cuBLASLt's workspace cannot be allocated there. Refused
    // with the reason, before any allocation could break the capture. Created while `stream` still exists: the GEMM
    // state is kept per stream address, and a new stream at a destroyed one's address (the allocator reuses it)
    // would find that stream's workspace.
    void *fresh = nullptr;
    if (d4j_stream_create(emu, &fresh) != 0) return 1;
    {
        buffers mem{emu, {}};
        float *x = mem.alloc(M * K), *w = mem.alloc(N * K), *y = mem.alloc(M * N);
        fill(x, M * K, rng);
        fill(w, N * K, rng);
        void *graph = nullptr;
        expect(d4j_graph_begin(emu, fresh) == 0, "capture of a fresh stream begins");
        expect(d4j_linear_forward(emu, fresh, x, w, nullptr, nullptr, M, K, N, y, 0) != 0 &&
                   std::strstr(d4j_backend_last_error(emu), "run the step once uncaptured") != nullptr,
               "a first GEMM under capture is refused, saying why");
        expect(d4j_graph_end(emu, fresh, &graph) == 0 && graph != nullptr && d4j_graph_destroy(emu, graph) == 0,
               "the capture itself was not broken by the refusal");
        expect(d4j_linear_forward(emu, fresh, x, w, nullptr, nullptr, M, K, N, y, 0) == 0,
               "the same GEMM uncaptured allocates and runs");
    }
    expect(d4j_stream_destroy(emu, fresh) == 0, "fresh stream destroyed");
    expect(d4j_stream_destroy(emu, stream) == 0, "stream destroyed");
    d4j_backend_close(emu);
    d4j_backend_close(cpu);
    std::printf("graph_emu: %s\n", failures == 0 ? "PASS" : "FAIL");
    return failures == 0 ? 0 : 1;
}
