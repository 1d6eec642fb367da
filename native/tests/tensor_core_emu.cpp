// The tensor-core building blocks of native/cuda/tensor_core.cuh (bf16, mma.sync m16n8k16, ldmatrix, cp.async),
// emulated, against references written here from the PTX ISA's text, not from the emulator's code:
//
//   tensor_core_emu bf16            cvt.rn.bf16.f32 in a kernel on every bf16 grid point (all signs, exponents,
//                                   mantissas, +-0, subnormals, inf, NaN) times low halves {0, 1, 0x7fff (below a
//                                   tie), 0x8000 (tie: even and odd kept parts), 0x8001, 0xffff (the largest finite
//                                   value carries to inf)} and 4 random ones, plus 2^20 random bit patterns: against
//                                   rounding to nearest-even done by the FPU in double (nearbyint on the bf16
//                                   quantum), overflow to inf at 2^128 (the IEEE rule); NaN must give a quiet NaN.
//                                   With NVIDIA's host cuda_bf16.h found at configure time, also bit for bit
//                                   against its __float2bfloat16_rn (NaN -> 0x7FFF). The .bf16x2 pair (pack_bf16x2,
//                                   low half first) and bf16 -> float on all 65536 patterns against the fields
//                                   decoded in double, and the round trip.
//   tensor_core_emu ldmatrix        x1, x2, x4, each with and without .trans: rows of distinct 16-bit values at
//                                   randomly permuted 16-byte slots of a static shared array (the unused lanes'
//                                   addresses misaligned, as they may be); every register of every lane checked
//                                   against the ISA's description of the m8n8 fragment.
//   tensor_core_emu mma_layout      each lane builds its A, B, C fragments from global memory with the ISA's
//                                   formulas for a_i, b_i, c_i (groupID, threadID_in_group) and stores D the same
//                                   way; D against a float64 matmul of the same bf16 values.
//   tensor_core_emu tile            A (16 x K) and B in global memory -> cp.async.cg into XOR-swizzled dynamic shared
//                                   memory -> wait -> __syncthreads -> ldmatrix.x4 (A), ldmatrix.x2 (B; .trans when
//                                   B is stored k-major, plain when stored n-major) -> mma, 2 warps (N = 16);
//                                   K = 16 (one step, wait_all) and K = 64 (4 chained mma, double-buffered with
//                                   wait_group 1): D = A B + C against float64.
//   tensor_core_emu cp_async        groups: after wait_group 1 the older groups landed (cp.async.ca 4 and 8 bytes)
//                                   and, emulated, the newest not yet (its destination still the poison); src-size
//                                   zero fill; wait_all commits the open copies; copies pending when a kernel
//                                   returns never land in a later launch.
//   Planted bugs, each must be caught (CTest checks the message): bug_read_before_wait (shared memory read after
//   cp.async without a wait: "result WRONG" in every build), bug_wait_no_sync (read of another thread's copy after
//   its wait without __syncthreads: a ThreadSanitizer race), bug_mma_lane_exited, bug_mma_diverged,
//   bug_ldmatrix_misaligned, bug_ldmatrix_global, bug_cp_async_global_dst (the emulator's abort messages),
//   bug_ldmatrix_no_sync (ldmatrix of rows another warp wrote, without __syncthreads: a ThreadSanitizer race).
//   Their correct twins read_after_wait_ok and ldmatrix_sync_ok run in every build.
//
// Tolerance of mma (derived, not fitted): products of two bf16 (8-bit significands) are exact in fp32. One
// m16n8k16 step sums 17 terms (c and 16 products); fp32 summation in any order errs by at most 16 u sum|terms|
// with u = 2^-24, twice that allowed for an accumulator that truncates; chained over K/16 steps the bounds add:
// |D - ref| <= 32 (K/16) u (|c| + sum_k |a_ik b_kj|). The emulator (products summed in double, one rounding per
// step) errs by at most (K/16) u of that sum; a layout error is off by O(1) of it. Inputs ~ N(0,1) rounded to
// bf16. Every comparison fails on NaN.
//
// The same file compiles under nvcc (-x cu) so that bench/gpu/check.sh can run the identical checks on a GPU;
// there the emulator-only expectations (poison, planted bugs) are not checked.
#include "common.cuh"
#include "harness.h"
#include "tensor_core.cuh"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#if defined(D4J_HAVE_NVIDIA_BF16)
uint16_t nvidia_float2bfloat16_rn(float f);  // bf16_nvidia_ref.cpp: NVIDIA's host implementation
#endif

namespace {

using d4j::tc::cp_async_ca;
using d4j::tc::cp_async_cg16;
using d4j::tc::cp_async_commit;
using d4j::tc::cp_async_wait;
using d4j::tc::cp_async_wait_all;
using d4j::tc::ldmatrix;
using d4j::tc::mma_m16n8k16_bf16;
using d4j::tc::pack_bf16x2;

// ---- References.

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest, ties to even, onto the bf16 grid (8 significant bits, exponents of fp32 down to the
// subnormal quantum 2^-133), by the FPU: nearbyint in double on x / quantum, both exact. Overflow to inf when the
// rounded value reaches 2^128 (as IEEE 754 rounds with an unbounded exponent first). NaN: returns 0xffff, only
// "some NaN" (the caller checks quietness).
uint16_t ref_bf16(float x) {
    if (std::isnan(x)) return 0xffff;
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    if (std::isinf(x)) return sign | 0x7f80;
    const double v = x;
    if (v == 0.0) return sign;
    const int e = std::ilogb(v);
    const double quantum = std::ldexp(1.0, std::max(e - 7, -133));
    const double r = std::nearbyint(v / quantum) * quantum;
    if (std::fabs(r) >= std::ldexp(1.0, 128)) return sign | 0x7f80;
    const uint32_t u = bits(static_cast<float>(r));  // exact: 8 significant bits, in range
    if ((u & 0xffffu) != 0) {
        std::fprintf(stderr, "ref_bf16: %a rounded to %a, not on the bf16 grid\n", v, r);
        std::abort();
    }
    return static_cast<uint16_t>((u >> 16) | sign);  // r == 0 after rounding keeps the sign: -0.0 * q == -0.0
}

// bf16 bits -> value, from the fields: (-1)^s 2^(e-127) (1 + m/128), subnormal 2^-126 (m/128).
double ref_bf16_value(uint16_t h) {
    const int s = h >> 15, e = (h >> 7) & 0xff, m = h & 0x7f;
    double v;
    if (e == 0xff)
        v = m == 0 ? INFINITY : NAN;
    else if (e == 0)
        v = std::ldexp(m, -126 - 7);
    else
        v = std::ldexp(128 + m, e - 127 - 7);
    return s ? -v : v;
}

bool is_quiet_nan_bf16(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x0040) != 0; }

// ---- Device memory helpers (host memory under the emulator).
template <typename T>
T *to_device(const std::vector<T> &h) {
    T *d = nullptr;
    if (cudaMalloc(&d, h.size() * sizeof(T)) != cudaSuccess) std::abort();
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
template <typename T>
T *device_filled(size_t n, T v) {
    return to_device(std::vector<T>(n, v));
}
template <typename T>
std::vector<T> to_host(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}
bool launched(const char *what) {
    cudaError_t e = D4J_CHECK_LAUNCH();
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) std::printf("%s: launch failed: %s\n", what, cudaGetErrorString(e));
    return e == cudaSuccess;
}

// ---- bf16 conversions.

__global__ void convert(const float *in, int n, uint16_t *one, uint32_t *pairs) {
    for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n;
         i += static_cast<int>(gridDim.x * blockDim.x)) {
        one[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
        if (i % 2 == 0 && i + 1 < n) pairs[i / 2] = pack_bf16x2(in[i], in[i + 1]);
    }
}

__global__ void widen(int n, float *value, uint16_t *back, float2 *pair) {
    for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n;
         i += static_cast<int>(gridDim.x * blockDim.x)) {
        const __nv_bfloat16 h = __ushort_as_bfloat16(static_cast<unsigned short>(i));
        value[i] = __bfloat162float(h);
        back[i] = __bfloat16_as_ushort(__float2bfloat16_rn(value[i]));
        if (i % 2 == 0) {
            const __nv_bfloat162 p = __halves2bfloat162(h, __ushort_as_bfloat16(static_cast<unsigned short>(i + 1)));
            pair[i / 2] = make_float2(__low2float(p), __high2float(p));
        }
    }
}

int test_bf16(std::mt19937_64 &rng) {
    std::vector<float> in;
    for (uint32_t hi = 0; hi < 65536; ++hi) {
        for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
            in.push_back(from_bits(hi << 16 | lo));
        for (int r = 0; r < 4; ++r) in.push_back(from_bits(hi << 16 | static_cast<uint32_t>(rng() & 0xffff)));
    }
    for (int r = 0; r < (1 << 20); ++r) in.push_back(from_bits(static_cast<uint32_t>(rng())));
    const int n = static_cast<int>(in.size());
    float *d_in = to_device(in);
    uint16_t *d_one = device_filled<uint16_t>(in.size(), 0);
    uint32_t *d_pairs = device_filled<uint32_t>(in.size() / 2, 0);
    D4J_LAUNCH(convert, 4, 256, 0, nullptr, d_in, n, d_one, d_pairs);
    if (!launched("convert")) return 1;
    const std::vector<uint16_t> one = to_host(d_one, in.size());
    const std::vector<uint32_t> pairs = to_host(d_pairs, in.size() / 2);
    long bad = 0, bad_nvidia = 0, nans = 0, ties = 0, to_inf = 0, subnormal = 0;
    const auto agrees = [](float x, uint16_t got) {
        const uint16_t want = ref_bf16(x);
        return std::isnan(x) ? is_quiet_nan_bf16(got) : got == want;
    };
    for (int i = 0; i < n; ++i) {
        const float x = in[static_cast<size_t>(i)];
        const uint16_t got = one[static_cast<size_t>(i)];
        nans += std::isnan(x);
        ties += !std::isnan(x) && (bits(x) & 0xffff) == 0x8000;
        to_inf += std::isfinite(x) && (got & 0x7fff) == 0x7f80;
        subnormal += (bits(x) & 0x7f800000u) == 0 && (bits(x) & 0x7fffffu) != 0;
        bool ok = agrees(x, got);
        if (i % 2 == 0 && i + 1 < n) {
            const uint32_t p = pairs[static_cast<size_t>(i / 2)];
            ok = ok && agrees(x, static_cast<uint16_t>(p & 0xffff)) &&
                 agrees(in[static_cast<size_t>(i) + 1], static_cast<uint16_t>(p >> 16));
        }
        if (!ok && bad++ < 8)
            std::printf("bf16: %a (0x%08x) -> 0x%04x (pair 0x%08x), want 0x%04x%s\n", x, bits(x), got,
                        i % 2 == 0 && i + 1 < n ? pairs[static_cast<size_t>(i / 2)] : 0u, ref_bf16(x),
                        std::isnan(x) ? " (any quiet NaN)" : "");
#if defined(D4J_HAVE_NVIDIA_BF16)
        if (got != nvidia_float2bfloat16_rn(x) && bad_nvidia++ < 8)
            std::printf("bf16: %a (0x%08x) -> 0x%04x, NVIDIA's host __float2bfloat16_rn gives 0x%04x\n", x, bits(x),
                        got, nvidia_float2bfloat16_rn(x));
#endif
    }
    cudaFree(d_in);
    cudaFree(d_one);
    cudaFree(d_pairs);
    std::printf("bf16: %d conversions (%ld NaN, %ld ties, %ld finite to inf, %ld subnormal inputs): %ld wrong\n", n,
                nans, ties, to_inf, subnormal, bad);
#if defined(D4J_HAVE_NVIDIA_BF16)
    std::printf("bf16: against NVIDIA's host cuda_bf16.h bit for bit: %ld differ\n", bad_nvidia);
#else
    std::printf("bf16: NVIDIA's host cuda_bf16.h was not found at configure time: no bitwise comparison with it\n");
#endif
    // The cases must have been reached, or the counts above prove nothing.
    if (nans < 1000 || ties < 60000 || to_inf < 4 || subnormal < 1000) {
        std::printf("bf16: the inputs missed a case\n");
        return 1;
    }

    // bf16 -> float, every pattern, and back.
    float *d_value = device_filled<float>(65536, 0.0f);
    uint16_t *d_back = device_filled<uint16_t>(65536, 0);
    float2 *d_pair = device_filled<float2>(32768, make_float2(0.0f, 0.0f));
    D4J_LAUNCH(widen, 2, 256, 0, nullptr, 65536, d_value, d_back, d_pair);
    if (!launched("widen")) return 1;
    const std::vector<float> value = to_host(d_value, 65536);
    const std::vector<uint16_t> back = to_host(d_back, 65536);
    const std::vector<float2> pair = to_host(d_pair, 32768);
    long bad_widen = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
        const double want = ref_bf16_value(static_cast<uint16_t>(h));
        const float got = value[h];
        const float got_pair = h % 2 == 0 ? pair[h / 2].x : pair[h / 2].y;
        const bool same = static_cast<double>(got) == want && std::signbit(got) == std::signbit(want);
        const bool ok = std::isnan(want) ? std::isnan(got) && std::isnan(got_pair) && is_quiet_nan_bf16(back[h])
                                         : same && bits(got_pair) == bits(got) && back[h] == h;
        if (!ok && bad_widen++ < 8)
            std::printf("bf16: 0x%04x -> %a (pair %a) -> 0x%04x, want %a and back\n", h, got, got_pair, back[h], want);
    }
    cudaFree(d_value);
    cudaFree(d_back);
    cudaFree(d_pair);
    std::printf("bf16: 65536 patterns to float and back: %ld wrong\n", bad_widen);
    return bad == 0 && bad_nvidia == 0 && bad_widen == 0 ? 0 : 1;
}

// ---- ldmatrix, checked against the ISA's fragment description.

struct __align__(16) smem_row {
    uint16_t v[8];
};

template <int N, bool TRANS>
__global__ void ldmatrix_layout(const uint16_t *rows, const int *slot, uint32_t *out) {
    D4J_STATIC_SMEM(smem_row, slots, [32]);
    const int lane = static_cast<int>(threadIdx.x);
    if (lane < 8 * N)
        for (int c = 0; c < 8; ++c) slots[slot[lane]].v[c] = rows[lane * 8 + c];
    __syncwarp();  // the rows are read by other lanes
    // Lanes >= 8N give an address the instruction does not use: misaligned on purpose.
    const void *row = lane < 8 * N ? static_cast<const void *>(&slots[slot[lane]])
                                   : static_cast<const void *>(reinterpret_cast<const char *>(slots) + 2);
    uint32_t r[N];
    ldmatrix<TRANS>(r, row);
    for (int m = 0; m < N; ++m) out[lane * N + m] = r[m];
}

template <int N, bool TRANS>
int check_ldmatrix(std::mt19937_64 &rng) {
    // Matrix m, row i, column j: rows[(8m + i) * 8 + j], all values distinct.
    std::vector<uint16_t> values(65536);
    std::iota(values.begin(), values.end(), uint16_t{0});
    std::shuffle(values.begin(), values.end(), rng);
    std::vector<uint16_t> rows(values.begin(), values.begin() + 8 * 8 * N);
    std::vector<int> slot(32);
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    uint16_t *d_rows = to_device(rows);
    int *d_slot = to_device(slot);
    uint32_t *d_out = device_filled<uint32_t>(32 * N, 0);
    D4J_LAUNCH((ldmatrix_layout<N, TRANS>), 1, 32, 0, nullptr, d_rows, d_slot, d_out);
    if (!launched("ldmatrix_layout")) return 1;
    const std::vector<uint32_t> out = to_host(d_out, 32 * N);
    cudaFree(d_rows);
    cudaFree(d_slot);
    cudaFree(d_out);
    // PTX ISA, ldmatrix: an m8n8 .b16 fragment gives thread `lane` two consecutive elements of row lane / 4,
    // columns 2 (lane % 4) and 2 (lane % 4) + 1, in register m for matrix m; .trans loads the matrix transposed,
    // so the two elements are those of column lane / 4, rows 2 (lane % 4) and 2 (lane % 4) + 1.
    int bad = 0;
    for (int lane = 0; lane < 32; ++lane) {
        for (int m = 0; m < N; ++m) {
            for (int half = 0; half < 2; ++half) {
                const int i = TRANS ? 2 * (lane % 4) + half : lane / 4;
                const int j = TRANS ? lane / 4 : 2 * (lane % 4) + half;
                const uint16_t want = rows[static_cast<size_t>((8 * m + i) * 8 + j)];
                const uint16_t got = static_cast<uint16_t>(out[static_cast<size_t>(lane * N + m)] >> (16 * half));
                if (got != want && bad++ < 8)
                    std::printf("ldmatrix.x%d%s: lane %d register %d half %d = 0x%04x, want matrix %d (%d, %d) "
                                "= 0x%04x\n",
                                N, TRANS ? ".trans" : "", lane, m, half, got, m, i, j, want);
            }
        }
    }
    std::printf("ldmatrix.x%d%s: %d of %d elements wrong\n", N, TRANS ? ".trans" : "", bad, 64 * N);
    return bad == 0 ? 0 : 1;
}

int test_ldmatrix(std::mt19937_64 &rng) {
    return check_ldmatrix<1, false>(rng) | check_ldmatrix<2, false>(rng) | check_ldmatrix<4, false>(rng) |
           check_ldmatrix<1, true>(rng) | check_ldmatrix<2, true>(rng) | check_ldmatrix<4, true>(rng);
}

// ---- mma, fragments from the ISA's formulas.

// A 16x16 row-major, B 16x8 row-major (B[k][n]), C and D 16x8 row-major.
__global__ void mma_layout(const uint16_t *A, const uint16_t *B, const float *C, float *D) {
    const int lane = static_cast<int>(threadIdx.x), groupID = lane >> 2, threadID_in_group = lane % 4;
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float c[4], d[4];
    // PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type", .bf16: a0..a7, two per .b32
    // register, the lower index in the lower half.
    for (int i = 0; i < 8; ++i) {
        const int row = (i < 2 || (i >= 4 && i < 6)) ? groupID : groupID + 8;
        const int col = i < 4 ? threadID_in_group * 2 + (i & 0x1) : threadID_in_group * 2 + (i & 0x1) + 8;
        a[i / 2] |= static_cast<uint32_t>(A[row * 16 + col]) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i) {
        const int row = i < 2 ? threadID_in_group * 2 + (i & 0x1) : threadID_in_group * 2 + (i & 0x1) + 8;
        const int col = groupID;
        b[i / 2] |= static_cast<uint32_t>(B[row * 8 + col]) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i) {
        const int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 0x1);
        c[i] = C[row * 8 + col];
    }
    mma_m16n8k16_bf16(d, a, b, c);
    for (int i = 0; i < 4; ++i) {
        const int row = i < 2 ? groupID : groupID + 8, col = threadID_in_group * 2 + (i & 0x1);
        D[row * 8 + col] = d[i];
    }
}

std::vector<uint16_t> random_bf16(size_t n, std::mt19937_64 &rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<uint16_t> v(n);
    for (uint16_t &h : v) h = ref_bf16(dist(rng));
    return v;
}
std::vector<float> random_float(size_t n, std::mt19937_64 &rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float &f : v) f = dist(rng);
    return v;
}

// D (M x N) against C + A B in float64; A(i, k) and B(k, j) give the bf16 bits. Returns the number of outputs
// outside |D - ref| <= 32 steps u (|c| + sum |a b|) (the header's derivation), NaN included.
template <typename GetA, typename GetB>
int compare_matmul(const char *what, int M, int N, int K, GetA a, GetB b, const std::vector<float> &C,
                   const std::vector<float> &D, double *worst_ratio) {
    const double u = std::ldexp(1.0, -24), steps = K / 16;
    int bad = 0;
    double worst_r = 0.0;
    for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
            double ref = C[static_cast<size_t>(i * N + j)], mag = std::fabs(ref);
            for (int k = 0; k < K; ++k) {
                const double p = ref_bf16_value(a(i, k)) * ref_bf16_value(b(k, j));
                ref += p;
                mag += std::fabs(p);
            }
            const double got = D[static_cast<size_t>(i * N + j)], err = std::fabs(got - ref);
            const double tol = 32.0 * steps * u * mag;
            worst_r = d4j_test::worst(worst_r, err / tol);
            if (!d4j_test::within(err, tol) && bad++ < 8)
                std::printf("%s: D[%d][%d] = %.9g, float64 %.9g, |err| %.3g > tol %.3g\n", what, i, j, got, ref, err,
                            tol);
        }
    }
    *worst_ratio = worst_r;
    return bad;
}

int test_mma_layout(std::mt19937_64 &rng) {
    int status = 0;
    for (int rep = 0; rep < 4; ++rep) {
        const std::vector<uint16_t> A = random_bf16(256, rng), B = random_bf16(128, rng);
        const std::vector<float> C = random_float(128, rng);
        uint16_t *dA = to_device(A), *dB = to_device(B);
        float *dC = to_device(C), *dD = device_filled<float>(128, 0.0f);
        D4J_LAUNCH(mma_layout, 1, 32, 0, nullptr, dA, dB, dC, dD);
        if (!launched("mma_layout")) return 1;
        const std::vector<float> D = to_host(dD, 128);
        double ratio = 0.0;
        const int bad = compare_matmul(
            "mma_layout", 16, 8, 16, [&](int i, int k) { return A[static_cast<size_t>(i * 16 + k)]; },
            [&](int k, int j) { return B[static_cast<size_t>(k * 8 + j)]; }, C, D, &ratio);
        std::printf("mma_layout: %d of 128 outside the tolerance, worst |err|/tol %.3g\n", bad, ratio);
        status |= bad != 0;
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dC);
        cudaFree(dD);
    }
    return status;
}

// ---- The tile kernel: cp.async -> swizzled shared memory -> ldmatrix -> mma, as a GEMM kernel does it.

constexpr int kTileThreads = 64;  // two warps: warp w computes columns 8w..8w+7 of D (16 x 16)
constexpr int kStageElems = 512;  // one stage: the A tile (16 x 16 bf16) then the B tile (16 x 16)

// The 16-byte chunk c (0 or 1) of tile row r sits at chunk c ^ ((r >> 2) & 1): a swizzle, so that consecutive
// rows' chunks do not share a column (and ldmatrix's row addresses follow no single stride).
__device__ __forceinline__ int tile_offset(int r, int c) { return r * 16 + ((c ^ ((r >> 2) & 1)) * 8); }

// K-tile kt of A (16 x K, row-major) and of B (k-major: K x 16 row-major; n-major: 16 x K row-major): thread t
// copies one 16-byte chunk, t < 32 of A, the others of B.
template <bool B_KMAJOR, int K>
__device__ void stage_tile(uint16_t *s, const uint16_t *A, const uint16_t *B, int kt, int tid) {
    const int r = (tid % 32) / 2, c = tid % 2;
    if (tid < 32)
        cp_async_cg16(s + tile_offset(r, c), A + r * K + kt * 16 + c * 8);
    else if (B_KMAJOR)
        cp_async_cg16(s + 256 + tile_offset(r, c), B + (kt * 16 + r) * 16 + c * 8);
    else
        cp_async_cg16(s + 256 + tile_offset(r, c), B + r * K + kt * 16 + c * 8);
}

template <bool B_KMAJOR, int K>
__global__ void tile_mma(const uint16_t *A, const uint16_t *B, const float *C, float *D) {
    D4J_DYNAMIC_SMEM(uint16_t, smem);  // two stages
    constexpr int KT = K / 16;
    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane % 4;
    float acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = C[(g + 8 * (i / 2)) * 16 + warp * 8 + 2 * t + i % 2];
    stage_tile<B_KMAJOR, K>(smem, A, B, 0, tid);
    cp_async_commit();
    for (int kt = 0; kt < KT; ++kt) {
        if (kt + 1 < KT) {
            stage_tile<B_KMAJOR, K>(smem + ((kt + 1) % 2) * kStageElems, A, B, kt + 1, tid);
            cp_async_commit();
            cp_async_wait<1>();  // stage kt has landed, kt + 1 may still be in flight
        } else {
            cp_async_wait_all();
        }
        __syncthreads();  // the other threads' copies
        const uint16_t *s = smem + (kt % 2) * kStageElems;
        uint32_t a[4], b[2];
        // Lanes 0-15 give rows 0-15 of the left 8 columns (matrices 0, 1 = a0a1, a2a3), lanes 16-31 of the right
        // 8 (a4a5, a6a7).
        ldmatrix(a, s + tile_offset(lane % 16, lane / 16));
        if (B_KMAJOR)  // rows k 0-15 of this warp's 8 columns; .trans gives each lane a column n = groupID
            ldmatrix<true>(b, s + 256 + tile_offset(lane % 16, warp));
        else  // rows n of this warp, k 0-7 (lanes 0-7) and 8-15 (lanes 8-15); lanes 16-31 unused
            ldmatrix(b, s + 256 + tile_offset(warp * 8 + lane % 8, (lane / 8) % 2));
        mma_m16n8k16_bf16(acc, a, b, acc);
        __syncthreads();  // everyone has read stage kt % 2 before it is refilled
    }
    for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 16 + warp * 8 + 2 * t + i % 2] = acc[i];
}

template <bool B_KMAJOR, int K>
int check_tile(std::mt19937_64 &rng) {
    const std::vector<uint16_t> A = random_bf16(16 * K, rng), B = random_bf16(K * 16, rng);
    const std::vector<float> C = random_float(256, rng);
    uint16_t *dA = to_device(A), *dB = to_device(B);
    float *dC = to_device(C), *dD = device_filled<float>(256, 0.0f);
    D4J_LAUNCH((tile_mma<B_KMAJOR, K>), 1, kTileThreads, 2 * kStageElems * sizeof(uint16_t), nullptr, dA, dB, dC,
               dD);
    if (!launched("tile_mma")) return 1;
    const std::vector<float> D = to_host(dD, 256);
    char what[64];
    std::snprintf(what, sizeof what, "tile K=%d B %s", K, B_KMAJOR ? "k-major (ldmatrix.trans)" : "n-major");
    double ratio = 0.0;
    const int bad = compare_matmul(
        what, 16, 16, K, [&](int i, int k) { return A[static_cast<size_t>(i * K + k)]; },
        [&](int k, int j) { return B_KMAJOR ? B[static_cast<size_t>(k * 16 + j)] : B[static_cast<size_t>(j * K + k)]; },
        C, D, &ratio);
    std::printf("%s: %d of 256 outside the tolerance, worst |err|/tol %.3g\n", what, bad, ratio);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dD);
    return bad == 0 ? 0 : 1;
}

int test_tile(std::mt19937_64 &rng) {
    int status = 0;
    for (int rep = 0; rep < 2; ++rep)
        status |= check_tile<true, 16>(rng) | check_tile<false, 16>(rng) | check_tile<true, 64>(rng) |
                  check_tile<false, 64>(rng);
    return status;
}

// ---- cp.async groups. Each lane copies into its own slots and reads only them (its own wait orders them).

// Per lane, 16 bytes in each of 4 regions of dynamic shared memory. out per lane: 4 words of region 0 (group 0,
// ca 4 bytes: word 0), region 1 (group 1, ca 8 bytes: words 0-1), region 2 (group 2, cg 16 bytes with src-size
// lane % 17: read once after wait_group 1, then after wait_all) and region 3 (ca 16, never committed).
__global__ void cp_async_groups(const uint32_t *src, uint32_t *out) {
    D4J_DYNAMIC_SMEM(uint32_t, smem);
    const int lane = static_cast<int>(threadIdx.x);
    uint32_t *r0 = smem + lane * 4, *r1 = smem + 128 + lane * 4, *r2 = smem + 256 + lane * 4,
             *r3 = smem + 384 + lane * 4;
    const uint32_t *s = src + lane * 16;
    cp_async_ca<4>(r0, s);
    cp_async_commit();
    cp_async_ca<8>(r1, s + 4);
    cp_async_commit();
    cp_async_cg16(r2, s + 8, static_cast<unsigned>(lane % 17));
    cp_async_commit();
    cp_async_wait<1>();
    uint32_t *o = out + lane * 20;
    o[0] = r0[0];
    o[1] = r1[0];
    o[2] = r1[1];
    for (int i = 0; i < 4; ++i) o[3 + i] = r2[i];  // the newest group: not waited for yet
    cp_async_ca<16>(r3, s + 12);
    cp_async_wait_all();
    for (int i = 0; i < 4; ++i) o[7 + i] = r2[i];
    for (int i = 0; i < 4; ++i) o[11 + i] = r3[i];
}

#if D4J_CUDA_EMU  // emulator-only expectations
// A copy issued and committed, never waited for, by a thread that then returns; the next launch waits (for
// nothing of its own) and reads the same static shared slot.
__device__ uint32_t *pending_slot() {
    D4J_STATIC_SMEM(smem_row, slot, [32]);
    return reinterpret_cast<uint32_t *>(&slot[threadIdx.x]);
}
__global__ void leave_pending(const uint32_t *src) {
    cp_async_cg16(pending_slot(), src + threadIdx.x * 4);
    cp_async_commit();
}
__global__ void wait_for_nothing(uint32_t *out) {
    cp_async_wait_all();
    for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = pending_slot()[i];
}
#endif

int test_cp_async(std::mt19937_64 &rng) {
    std::vector<uint32_t> src(32 * 16);
    for (uint32_t &w : src) w = static_cast<uint32_t>(rng()) & 0x7fffffffu;  // never the all-ones poison
    uint32_t *d_src = to_device(src), *d_out = device_filled<uint32_t>(32 * 20, 0);
    D4J_LAUNCH(cp_async_groups, 1, 32, 512 * sizeof(uint32_t), nullptr, d_src, d_out);
    if (!launched("cp_async_groups")) return 1;
    const std::vector<uint32_t> out = to_host(d_out, 32 * 20);
    int bad = 0;
    const auto expect = [&](bool ok, const char *what, int lane, int i) {
        if (!ok && bad++ < 8) std::printf("cp_async: lane %d: %s (word %d)\n", lane, what, i);
    };
    for (int lane = 0; lane < 32; ++lane) {
        const uint32_t *o = &out[static_cast<size_t>(lane * 20)], *s = &src[static_cast<size_t>(lane * 16)];
        expect(o[0] == s[0], "group 0 (ca, 4 bytes) not landed after wait_group 1", lane, 0);
        expect(o[1] == s[4] && o[2] == s[5], "group 1 (ca, 8 bytes) not landed after wait_group 1", lane, 1);
#if D4J_CUDA_EMU
        for (int i = 0; i < 4; ++i)
            expect(o[3 + i] == 0xffffffffu, "the newest group landed before its wait (emulated: must be deferred)",
                   lane, i);
#endif
        uint8_t want[16] = {};
        std::memcpy(want, s + 8, static_cast<size_t>(lane % 17));  // src-size bytes, zeros after
        expect(std::memcmp(o + 7, want, 16) == 0, "group 2 (cg 16, src-size lane % 17) wrong after wait_all", lane, 7);
        expect(std::memcmp(o + 11, s + 12, 16) == 0, "uncommitted copy not landed after wait_all", lane, 11);
    }
    int stale = 0;
#if D4J_CUDA_EMU
    uint32_t *d_after = device_filled<uint32_t>(32 * 4, 0);
    D4J_LAUNCH(leave_pending, 1, 32, 0, nullptr, d_src);
    D4J_LAUNCH(wait_for_nothing, 1, 32, 0, nullptr, d_after);
    if (!launched("leave_pending / wait_for_nothing")) return 1;
    for (uint32_t w : to_host(d_after, 32 * 4)) stale += w != 0xffffffffu;
    std::printf("cp_async: %d words of a previous launch's pending copies landed in the next launch\n", stale);
    cudaFree(d_after);
#endif
    std::printf("cp_async: %d wrong\n", bad);
    cudaFree(d_src);
    cudaFree(d_out);
    return bad == 0 && stale == 0 ? 0 : 1;
}

// ---- Planted bugs.

// Thread t copies floats 4t..4t+3 into shared memory, then reads float i + 4 (another thread's chunk). Correct:
// wait, then __syncthreads. Without the wait the copy has not landed (emulated: the poison, NaN); without the
// barrier the read races with the other thread's landing copy.
template <bool WAIT, bool SYNC>
__global__ void staged_shift(const float *in, float *out) {
    D4J_DYNAMIC_SMEM(float, buf);
    const int t = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x) * 4;
    cp_async_cg16(buf + 4 * t, in + 4 * t);
    cp_async_commit();
    if (WAIT) cp_async_wait<0>();
    if (SYNC) __syncthreads();
    for (int i = 4 * t; i < 4 * t + 4; ++i) out[i] = buf[(i + 4) % n];
}

template <bool WAIT, bool SYNC>
int run_staged_shift(const char *mode, bool buggy) {
    const int threads = 64, n = threads * 4;
    std::vector<float> in(n);
    for (int i = 0; i < n; ++i) in[static_cast<size_t>(i)] = static_cast<float>(i % 29);
    float *d_in = to_device(in), *d_out = device_filled<float>(n, 0.0f);
    D4J_LAUNCH((staged_shift<WAIT, SYNC>), 1, threads, n * sizeof(float), nullptr, d_in, d_out);
    bool ok = launched(mode);
    const std::vector<float> out = to_host(d_out, n);
    for (int i = 0; i < n; ++i) ok = ok && out[static_cast<size_t>(i)] == in[static_cast<size_t>((i + 4) % n)];
    cudaFree(d_in);
    cudaFree(d_out);
    std::printf("%s: result %s\n", mode, ok ? "correct" : "WRONG");
    return buggy || ok ? 0 : 1;
}

// Warp 1 writes the rows, warp 0 loads them with ldmatrix: without the __syncthreads between, a race (TSan sees
// ldmatrix's loads as warp 0's own).
template <bool SYNC>
__global__ void ldmatrix_other_warp(uint32_t *out) {
    D4J_STATIC_SMEM(smem_row, rows, [32]);
    const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
    if (tid >= 32)
        for (int c = 0; c < 8; ++c) rows[lane].v[c] = static_cast<uint16_t>(lane * 8 + c);
    if (SYNC) __syncthreads();
    if (tid < 32) {
        uint32_t r[4];
        ldmatrix(r, &rows[lane]);
        for (int m = 0; m < 4; ++m) out[lane * 4 + m] = r[m];
    }
}

template <bool SYNC>
int run_ldmatrix_other_warp(const char *mode) {
    uint32_t *d_out = device_filled<uint32_t>(128, 0);
    D4J_LAUNCH(ldmatrix_other_warp<SYNC>, 1, 64, 0, nullptr, d_out);
    bool ok = launched(mode);
    const std::vector<uint32_t> out = to_host(d_out, 128);
    // Row r of matrix m holds 8 (8m + r) + column: lane l's register m holds row l / 4, columns 2 (l % 4), +1.
    for (int lane = 0; lane < 32; ++lane)
        for (int m = 0; m < 4; ++m) {
            const uint32_t e = static_cast<uint32_t>(8 * (8 * m + lane / 4) + 2 * (lane % 4));
            ok = ok && out[static_cast<size_t>(lane * 4 + m)] == (e | (e + 1) << 16);
        }
    cudaFree(d_out);
    std::printf("%s: result %s\n", mode, ok ? "correct" : "WRONG");
    return !SYNC || ok ? 0 : 1;
}

#if D4J_CUDA_EMU  // the emulator's aborts
__global__ void mma_lane_exited(float *out) {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    if (lane == 5) return;
    const uint32_t a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}, b[2] = {0x3f803f80u, 0x3f803f80u};
    float c[4] = {0, 0, 0, 0}, d[4];
    mma_m16n8k16_bf16(d, a, b, c);
    out[threadIdx.x] = d[0];
}

__global__ void mma_diverged(float *out) {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const uint32_t a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}, b[2] = {0x3f803f80u, 0x3f803f80u};
    float c[4] = {0, 0, 0, 0}, d[4];
    if (lane < 16)
        mma_m16n8k16_bf16(d, a, b, c);
    else
        mma_m16n8k16_bf16(d, a, b, c);  // the same instruction at another call site
    out[threadIdx.x] = d[0];
}

template <bool GLOBAL>
__global__ void ldmatrix_bad_address(const uint16_t *global_rows, uint32_t *out) {
    D4J_STATIC_SMEM(smem_row, rows, [32]);
    const int lane = static_cast<int>(threadIdx.x);
    for (int c = 0; c < 8; ++c) rows[lane].v[c] = static_cast<uint16_t>(lane * 8 + c);
    __syncwarp();
    // Misaligned: a row that starts 8 bytes into a 16-byte slot (lane 3 only: the others are right).
    const char *mine = reinterpret_cast<const char *>(&rows[lane]) + (lane == 3 ? 8 : 0);
    const void *row = GLOBAL ? static_cast<const void *>(global_rows + lane * 8) : static_cast<const void *>(mine);
    uint32_t r[4];
    ldmatrix(r, row);
    for (int m = 0; m < 4; ++m) out[lane * 4 + m] = r[m];
}

__global__ void cp_async_to_global(const float *in, float *not_shared) {
    cp_async_cg16(not_shared + 4 * threadIdx.x, in + 4 * threadIdx.x);
    cp_async_wait_all();
}
#endif

int run_planted(const std::string &mode) {
    if (mode == "read_after_wait_ok") return run_staged_shift<true, true>("read_after_wait_ok", false);
    if (mode == "bug_read_before_wait") return run_staged_shift<false, true>("bug_read_before_wait", true);
    if (mode == "bug_wait_no_sync") return run_staged_shift<true, false>("bug_wait_no_sync", true);
    if (mode == "ldmatrix_sync_ok") return run_ldmatrix_other_warp<true>("ldmatrix_sync_ok");
    if (mode == "bug_ldmatrix_no_sync") return run_ldmatrix_other_warp<false>("bug_ldmatrix_no_sync");
#if D4J_CUDA_EMU
    // The emulator abort()s on misuse; CTest counts a death by signal as a failure before it looks at the
    // output: leave with a plain exit status instead (the message is what CTest checks).
    std::signal(SIGABRT, [](int) { std::_Exit(3); });
    float *f = device_filled<float>(256, 0.0f);
    uint16_t *h = device_filled<uint16_t>(256, 0);
    uint32_t *u = device_filled<uint32_t>(128, 0);
    if (mode == "bug_mma_lane_exited") D4J_LAUNCH(mma_lane_exited, 1, 32, 0, nullptr, f);
    else if (mode == "bug_mma_diverged") D4J_LAUNCH(mma_diverged, 1, 32, 0, nullptr, f);
    else if (mode == "bug_ldmatrix_misaligned") D4J_LAUNCH(ldmatrix_bad_address<false>, 1, 32, 0, nullptr, h, u);
    else if (mode == "bug_ldmatrix_global") D4J_LAUNCH(ldmatrix_bad_address<true>, 1, 32, 0, nullptr, h, u);
    else if (mode == "bug_cp_async_global_dst") D4J_LAUNCH(cp_async_to_global, 1, 32, 0, nullptr, f, f + 128);
    else {
        std::printf("unknown mode %s\n", mode.c_str());
        return 2;
    }
    std::printf("%s: ran to completion, the emulator did not catch it\n", mode.c_str());
    return 1;
#else
    std::printf("%s: emulator only\n", mode.c_str());
    return 0;
#endif
}

}  // namespace

int main(int argc, char **argv) {
    const std::string mode = argc > 1 ? argv[1] : "all";
    if (mode.rfind("bug_", 0) == 0 || mode == "read_after_wait_ok" || mode == "ldmatrix_sync_ok")
        return run_planted(mode);
    std::mt19937_64 rng(d4j_test::test_seed("tensor_core_emu"));
    int status = 0;
    bool known = false;
    if (mode == "bf16" || mode == "all") known = true, status |= test_bf16(rng);
    if (mode == "ldmatrix" || mode == "all") known = true, status |= test_ldmatrix(rng);
    if (mode == "mma_layout" || mode == "all") known = true, status |= test_mma_layout(rng);
    if (mode == "tile" || mode == "all") known = true, status |= test_tile(rng);
    if (mode == "cp_async" || mode == "all") known = true, status |= test_cp_async(rng);
    if (!known) {
        std::printf("unknown mode %s\n", mode.c_str());
        return 2;
    }
    std::printf("tensor_core_emu %s: %s\n", mode.c_str(), status == 0 ? "PASSED" : "FAILED");
    return status;
}
