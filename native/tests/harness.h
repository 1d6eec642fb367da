// Shared by the native test programs: opening a kernel library, the run's seed, an exact-size host buffer, and the
// error comparisons (every one fails on NaN).
#ifndef D4J_TESTS_HARNESS_H
#define D4J_TESTS_HARNESS_H

#include "distill4j.h"

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <random>

namespace d4j_test {

// Opens the kernel library at `path` through the dispatch API, as Java does; nullptr (reason on stderr) on failure.
inline d4j_backend *open_backend(const char *path) {
    char err[1024] = "";
    d4j_backend *b = d4j_backend_open(path, 0, err, sizeof err);
    if (b == nullptr) std::fprintf(stderr, "cannot open %s: %s\n", path, err);
    return b;
}

// The larger of two errors, NaN if either is: std::max and std::fmax drop a NaN unless it comes first, and an
// output that is all NaN would then pass.
inline double worst(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : (a > b ? a : b); }
inline double worst(std::initializer_list<double> errs) {
    double w = 0.0;
    for (double e : errs) w = worst(w, e);
    return w;
}

// Whether an error is within its tolerance: never for NaN.
inline bool within(double err, double tol) { return err <= tol; }

// The comparisons above, checked by every program (test_seed runs it) before they judge a kernel.
inline void check_comparisons() {
    if (!std::isnan(worst(NAN, 0.0)) || !std::isnan(worst(0.0, NAN)) || !std::isnan(worst({0.0, 1.0, NAN, 2.0})) ||
        within(NAN, 1.0) || !within(1.0, 1.0) || worst({1e-7, 3e-7}) != 3e-7) {
        std::fprintf(stderr, "harness.h: worst()/within() let a NaN through\n");
        std::abort();
    }
}

// A fresh seed every run, or D4J_SEED's; printed, so that a failing run can be repeated.
inline uint64_t test_seed(const char *program) {
    check_comparisons();
    uint64_t seed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    if (const char *s = std::getenv("D4J_SEED")) seed = std::strtoull(s, nullptr, 10);
    std::printf("%s seed %llu (D4J_SEED=%llu repeats this run)\n", program, static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(seed));
    return seed;
}

// Exact-size host buffer (64-byte aligned like d4j_host_alloc, but not rounded up, so AddressSanitizer sees a read
// one past the end).
struct buffer {
    float *p = nullptr;
    size_t n = 0;
    explicit buffer(size_t count) : n(count) {
        if (count != 0 && posix_memalign(reinterpret_cast<void **>(&p), 64, count * sizeof(float)) != 0) std::abort();
    }
    ~buffer() { std::free(p); }
    buffer(const buffer &) = delete;
    buffer &operator=(const buffer &) = delete;
    void fill(float v) {
        for (size_t i = 0; i < n; ++i) p[i] = v;
    }
    void random(std::mt19937_64 &rng) {
        std::normal_distribution<float> dist(0.0f, 1.0f);
        for (size_t i = 0; i < n; ++i) p[i] = dist(rng);
    }
};

}  // namespace d4j_test
#endif
