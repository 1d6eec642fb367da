// The fp32 <-> bf16 casts (d4j_cast_bf16 / d4j_cast_f32): the CUDA kernels of native/cuda/cast.cu run by the
// emulator, and the CPU twin (native/cpu/cast.cpp), through the dispatch API, against the definition.
//
//   cast_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>
//
// Reference for fp32 -> bf16, from IEEE 754's definition in float64 (not from bit tricks): for finite x, the two bf16
// neighbours are x with its low 16 bits cleared (towards zero) and the next bf16 away from zero, that neighbour taken
// as 2^128 past the largest finite value; the nearer one wins, a tie goes to the one with an even last bit, and 2^128
// becomes infinity (IEEE's overflow rule for round to nearest). Infinities stay. NaN: the contract's bits (x's upper
// half with the quiet bit 0x0040). Where CMake found NVIDIA's cuda_bf16.h, every non-NaN result is also compared bit
// for bit with NVIDIA's host __float2bfloat16_rn. bf16 -> fp32: all 65536 patterns, the bits moved up by 16 (the
// definition of the format), NaN payloads included. The Java CastTest compares the same with libtorch.
//
// Cases: fresh random bit patterns (every exponent, NaNs), normal values, and the edges (ties both ways, normal and
// subnormal; the largest subnormal; the largest finite bf16 and the tie past it; Float.MAX; +-0, +-inf, NaNs of both
// signs, signalling ones). Sizes 1..9 (the vector kernel's scalar tail), 4099, 8193 and 20011 (the emulator's grid is
// 8 blocks x 256 threads x 4 elements: the grid-stride loop's later turns), 16385 (the CPU kernel's blocks). Every
// alignment: offsets 0..3 elements on each side (the vector path only where the fp32 side is 16-byte and the bf16
// side 8-byte aligned), between guard elements that must stay untouched, into outputs pre-filled with a sentinel
// (every element must be written). Then the argument checks.
#include "distill4j.h"
#include "harness.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#if defined(D4J_HAVE_NVIDIA_BF16)
uint16_t nvidia_float2bfloat16_rn(float f);  // bf16_nvidia_ref.cpp: NVIDIA's host implementation
#endif

namespace {

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// The value of bf16 pattern h (sign-less part), with 0x7F80 read as 2^128 (the overflow threshold's neighbour).
double magnitude(uint32_t h) {
    if ((h & 0x7fffu) == 0x7f80u) return std::ldexp(1.0, 128);
    return std::fabs(static_cast<double>(from_bits((h & 0x7fffu) << 16)));
}

uint16_t ref_bf16(float x) {
    const uint32_t u = bits(x);
    if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040u);
    if (std::isinf(x)) return static_cast<uint16_t>(u >> 16);
    const uint32_t sign = u >> 16 & 0x8000u, low = (u >> 16) & 0x7fffu, high = low + 1;  // |x| in [low, high)
    const double a = std::fabs(static_cast<double>(x)), dl = a - magnitude(low), dh = magnitude(high) - a;
    const uint32_t pick = dl < dh ? low : dh < dl ? high : ((low & 1u) == 0 ? low : high);
    return static_cast<uint16_t>(sign | pick);  // high = 0x7F80 is infinity
}

const uint32_t kEdges[] = {
    0x3f808000, 0xbf808000, 0x3f818000, 0xbf818000, 0x3f808001, 0x3f807fff, 0x00008000, 0x00018000, 0x00000001,
    0x80000001, 0x00007fff, 0x00008001, 0x007fffff, 0x807fffff, 0x7f7f0000, 0xff7f0000, 0x7f7f7fff, 0x7f7f8000,
    0xff7f8000, 0x7f7fffff, 0xff7fffff, 0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
    0x7f800001, 0xff812345, 0x7fffffff, 0xffffffff, 0x7fa00000,
};

std::vector<float> values(std::mt19937_64 &rng, size_t n) {
    std::vector<float> x(n);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto &v : x) {
        switch (rng() % 3) {
            case 0: v = from_bits(static_cast<uint32_t>(rng())); break;
            case 1: v = std::ldexp(normal(rng), static_cast<int>(rng() % 40) - 20); break;
            default: v = from_bits(kEdges[rng() % (sizeof kEdges / sizeof kEdges[0])]);
        }
    }
    return x;
}

// 64-byte aligned host memory of exact size (AddressSanitizer sees one past the end).
template <typename T>
struct host {
    T *p = nullptr;
    explicit host(size_t n) {
        if (posix_memalign(reinterpret_cast<void **>(&p), 64, n * sizeof(T)) != 0) std::abort();
    }
    ~host() { std::free(p); }
    host(const host &) = delete;
    host &operator=(const host &) = delete;
};

constexpr uint16_t kSentinel16 = 0x4321;  // not bf16(kSentinel32): an overrun writing one shows
constexpr uint32_t kSentinel32 = 0x12345678;

// One size at fp32 offset fo and bf16 offset bo (elements), both directions; returns the number of wrong elements.
long run_case(d4j_backend *be, const char *name, const std::vector<float> &x, int fo, int bo, long &bad_nvidia) {
    const size_t n = x.size(), pad = n + 8;
    host<float> f(pad);
    host<uint16_t> h(pad);
    for (size_t i = 0; i < pad; ++i) f.p[i] = from_bits(kSentinel32), h.p[i] = kSentinel16;
    std::memcpy(f.p + fo, x.data(), n * sizeof(float));
    long bad = 0;
    const int rc = d4j_cast_bf16(be, nullptr, f.p + fo, static_cast<int64_t>(n), h.p + bo);
    if (rc != 0) {
        std::printf("FAIL %s cast_bf16 n=%zu: error %s\n", name, n, d4j_backend_last_error(be));
        return static_cast<long>(n);
    }
    for (size_t i = 0; i < pad; ++i) {
        const bool inside = i >= static_cast<size_t>(bo) && i < bo + n;
        const uint16_t got = h.p[i], want = inside ? ref_bf16(x[i - bo]) : kSentinel16;
        if (got != want && bad++ < 4)
            std::printf("  %s n=%zu fo=%d bo=%d: bf16 element %zu%s: got 0x%04x, want 0x%04x (x = 0x%08x)\n", name, n,
                        fo, bo, i, inside ? "" : " (guard)", got, want, inside ? bits(x[i - bo]) : 0u);
#if defined(D4J_HAVE_NVIDIA_BF16)
        if (inside && !std::isnan(x[i - bo]) && got != nvidia_float2bfloat16_rn(x[i - bo]) && bad_nvidia++ < 4)
            std::printf("  %s: 0x%08x -> 0x%04x, NVIDIA's host conversion 0x%04x\n", name, bits(x[i - bo]), got,
                        nvidia_float2bfloat16_rn(x[i - bo]));
#else
        (void)bad_nvidia;
#endif
    }
    // Back: the bf16 just written, widened into a sentinel-filled fp32 buffer.
    for (size_t i = 0; i < pad; ++i) f.p[i] = from_bits(kSentinel32);
    if (d4j_cast_f32(be, nullptr, h.p + bo, static_cast<int64_t>(n), f.p + fo) != 0) {
        std::printf("FAIL %s cast_f32 n=%zu: error %s\n", name, n, d4j_backend_last_error(be));
        return bad + static_cast<long>(n);
    }
    for (size_t i = 0; i < pad; ++i) {
        const bool inside = i >= static_cast<size_t>(fo) && i < fo + n;
        const uint32_t got = bits(f.p[i]), want = inside ? static_cast<uint32_t>(h.p[i - fo + bo]) << 16 : kSentinel32;
        if (got != want && bad++ < 8)
            std::printf("  %s n=%zu fo=%d bo=%d: fp32 element %zu%s: got 0x%08x, want 0x%08x\n", name, n, fo, bo, i,
                        inside ? "" : " (guard)", got, want);
    }
    return bad;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cast_emu <libdistill4j_cpu.so> <libdistill4j_cudaemu.so>\n");
        return 2;
    }
    d4j_backend *backends[2] = {d4j_test::open_backend(argv[1]), d4j_test::open_backend(argv[2])};
    const char *names[2] = {"cpu", "cuda-emu"};
    if (backends[0] == nullptr || backends[1] == nullptr) return 1;
    std::mt19937_64 rng(d4j_test::test_seed("cast_emu"));
    int failures = 0;

    // The reference itself on the edges whose answers the header's definition fixes (a self-check of the rule).
    const struct {
        uint32_t x;
        uint16_t want;
    } fixed[] = {{0x3f808000, 0x3f80}, {0x3f818000, 0x3f82}, {0x00008000, 0x0000}, {0x00018000, 0x0002},
                 {0x007fffff, 0x0080}, {0x7f7f7fff, 0x7f7f}, {0x7f7f8000, 0x7f80}, {0xff7fffff, 0xff80},
                 {0x7f800001, 0x7fc0}, {0xff812345, 0xffc1}, {0x80000001, 0x8000}};
    for (const auto &c : fixed) {
        if (ref_bf16(from_bits(c.x)) != c.want) {
            std::printf("FAIL reference: 0x%08x -> 0x%04x, want 0x%04x\n", c.x, ref_bf16(from_bits(c.x)), c.want);
            ++failures;
        }
    }

    for (int b = 0; b < 2; ++b) {
        long bad = 0, bad_nvidia = 0, cases = 0;
        for (size_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 4099, 8193, 16385, 20011}) {
            const std::vector<float> x = values(rng, n);
            const bool every_offset = n <= 9 || n == 8193;
            for (int fo = 0; fo < 4; ++fo) {
                for (int bo = 0; bo < 4; ++bo) {
                    if (!every_offset && (fo != bo || fo > 1)) continue;  // aligned, and one unaligned
                    bad += run_case(backends[b], names[b], x, fo, bo, bad_nvidia);
                    ++cases;
                }
            }
        }
        std::vector<float> edges;
        for (uint32_t e : kEdges) edges.push_back(from_bits(e));
        bad += run_case(backends[b], names[b], edges, 0, 0, bad_nvidia);
        // bf16 -> fp32 on all 65536 patterns (through the round trip above only the patterns the rounding yields).
        {
            host<uint16_t> h(65536);
            host<float> f(65536);
            for (uint32_t i = 0; i < 65536; ++i) h.p[i] = static_cast<uint16_t>(i), f.p[i] = from_bits(kSentinel32);
            if (d4j_cast_f32(backends[b], nullptr, h.p, 65536, f.p) != 0) ++bad;
            for (uint32_t i = 0; i < 65536; ++i) {
                if (bits(f.p[i]) != i << 16 && bad++ < 8)
                    std::printf("  %s: widen 0x%04x -> 0x%08x\n", names[b], i, bits(f.p[i]));
            }
        }
        const bool ok = bad == 0 && bad_nvidia == 0;
        failures += !ok;
        std::printf("%s %s: %ld size x offset cases, edges, all 65536 widenings: %ld wrong, %ld differ from NVIDIA's "
                    "host conversion%s\n", ok ? "ok  " : "FAIL", names[b], cases, bad, bad_nvidia,
#if defined(D4J_HAVE_NVIDIA_BF16)
                    ""
#else
                    " (cuda_bf16.h not found at configure time: not compared)"
#endif
        );
    }

    // Argument checks: one call at a time, so the message read right after is that call's own.
    for (int b = 0; b < 2; ++b) {
        host<float> f(4);
        host<uint16_t> h(4);
        auto expect_failure = [&](const char *what, int rc) {
            const bool ok = rc != 0;
            failures += !ok;
            std::printf("%s %s rejects %s: %s\n", ok ? "ok  " : "FAIL", names[b], what,
                        ok ? d4j_backend_last_error(backends[b]) : "(accepted)");
        };
        expect_failure("n = 0", d4j_cast_bf16(backends[b], nullptr, f.p, 0, h.p));
        expect_failure("n < 0", d4j_cast_f32(backends[b], nullptr, h.p, -3, f.p));
        expect_failure("null x", d4j_cast_bf16(backends[b], nullptr, nullptr, 4, h.p));
        expect_failure("null y", d4j_cast_f32(backends[b], nullptr, h.p, 4, nullptr));
    }
    d4j_backend_close(backends[0]);
    d4j_backend_close(backends[1]);
    std::printf("%s\n", failures == 0 ? "cast_emu: all passed" : "cast_emu: FAILED");
    return failures == 0 ? 0 : 1;
}
