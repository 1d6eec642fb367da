// Shared by the native test programs: an exact-size host buffer.
#ifndef D4J_TESTS_BUFFER_H
#define D4J_TESTS_BUFFER_H

#include <cstddef>
#include <cstdlib>
#include <random>

namespace d4j_test {

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
