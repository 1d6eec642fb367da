// The tensor-core instructions of ../tensor_core.cuh on the CPU: mma.sync m16n8k16 bf16, ldmatrix, cp.async.
// Included by tensor_core.cuh under the emulator only. Each instruction is modelled as strictly as the emulator
// models shuffles (cuda_emu.h), so that the bugs a kernel author makes with them show up in tests:
//
//   mma.sync / ldmatrix are warp collectives with a full mask (".sync.aligned": every lane of the warp executes
//     the same instruction): a lane that returned, a partial warp or lanes at different call sites abort with the
//     emulator's message. Fragments move between lanes through warp_collective, invisible to ThreadSanitizer
//     (registers); ldmatrix's loads of shared memory are each lane's own loads, which TSan and ASan do see, so an
//     ldmatrix of rows other threads wrote without a barrier between is a race TSan reports. ldmatrix aborts on a
//     row address that is not 16-byte aligned or not inside the block's shared memory (dynamic or static).
//   mma: the 16 products of a bf16 pair are exact in double (and in fp32); each output is c plus its 16 products
//     summed in double, rounded once to fp32. The hardware's order and internal precision are not specified; it
//     differs from this by at most a few fp32 ulps of sum |terms| (the tests' tolerances say how much).
//   cp.async is deferred: the source is read when the copy is issued (ASan checks it there), the destination is
//     written only when a cp.async.wait_group / wait_all of the issuing thread retires its group. At issue the
//     destination is overwritten with the poison (NaN): undefined from issue to wait, as on hardware, so a kernel
//     that reads it before waiting computes NaN in every build, a thread still reading the old contents (no
//     __syncthreads before a buffer is refilled) races with the issuing thread's poison write, and one reading it
//     after the wait without a __syncthreads races with the landing copy (TSan). Copies still pending when a thread returns from the kernel are
//     dropped: no thread may read them without a wait of their issuer, so "never landed" is one behaviour of the
//     hardware, and the one that shows such a read.
#ifndef D4J_CUDA_TENSOR_CORE_EMU_H
#define D4J_CUDA_TENSOR_CORE_EMU_H

#include "cuda_emu.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <source_location>
#include <vector>

namespace d4j_emu {
namespace tc {

// Whether [p, p + bytes) lies inside the block's dynamic shared memory or inside one static shared array.
inline bool in_shared(const void *p, size_t bytes) {
    const auto inside = [&](const void *base, size_t size) {
        const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(base);
        return a >= b && a - b <= size && bytes <= size - (a - b);
    };
    const launch_state &L = *ctx("shared memory").launch;
    if (L.smem != nullptr && inside(L.smem, L.smem_bytes)) return true;
    std::lock_guard<std::mutex> lock(smem_arrays_mutex);
    for (const smem_array &s : smem_arrays)
        if (inside(s.p, s.bytes)) return true;
    return false;
}

// Undoes tsan_blind for the loads between its construction and destruction (they are this lane's own loads).
struct tsan_seen {
#if defined(__SANITIZE_THREAD__)
    tsan_seen() { __tsan_ignore_thread_end(); }
    ~tsan_seen() { __tsan_ignore_thread_begin(); }
#endif
};

inline float bf16_lo(uint32_t r) { return std::bit_cast<float>(r << 16); }
inline float bf16_hi(uint32_t r) { return std::bit_cast<float>(r & 0xffff0000u); }

// One lane's operands, published to the warp by address (the lanes wait in the collective while it is read).
struct mma_operands {
    uint32_t a[4], b[2];
    float c[4];
};

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              const std::source_location &site) {
    const mma_operands mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
    const auto out = warp_collective<std::array<float, 4>>(
        0xffffffffu, reinterpret_cast<uintptr_t>(&mine), "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", site,
        [](const uint64_t *published, unsigned lane, unsigned) {
            // The whole operands, from every lane's fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16",
            // .bf16): groupID = lane >> 2 picks the row of A, C, D and the column of B; threadID_in_group =
            // lane % 4 picks the pair of columns of A, C, D and the pair of rows of B; register j of A holds rows
            // +8 when j is odd and columns +8 when j >= 2; register 1 of B holds rows +8. Within a register the
            // element with the lower index is in the low 16 bits.
            float A[16][16], B[16][8], C[16][8];
            for (unsigned l = 0; l < 32; ++l) {
                const auto &f = *reinterpret_cast<const mma_operands *>(published[l]);
                const unsigned g = l >> 2, t = l % 4;
                for (unsigned j = 0; j < 4; ++j) {
                    const unsigned row = g + 8 * (j % 2), col = 2 * t + 8 * (j / 2);
                    A[row][col] = bf16_lo(f.a[j]);
                    A[row][col + 1] = bf16_hi(f.a[j]);
                }
                for (unsigned j = 0; j < 2; ++j) {
                    B[2 * t + 8 * j][g] = bf16_lo(f.b[j]);
                    B[2 * t + 8 * j + 1][g] = bf16_hi(f.b[j]);
                }
                for (unsigned j = 0; j < 4; ++j) C[g + 8 * (j / 2)][2 * t + j % 2] = f.c[j];
            }
            std::array<float, 4> r;
            const unsigned g = lane >> 2, t = lane % 4;
            for (unsigned j = 0; j < 4; ++j) {
                const unsigned row = g + 8 * (j / 2), col = 2 * t + j % 2;
                double s = C[row][col];
                for (unsigned k = 0; k < 16; ++k) s += static_cast<double>(A[row][k]) * B[k][col];
                r[j] = static_cast<float>(s);
            }
            return r;
        });
    for (unsigned j = 0; j < 4; ++j) d[j] = out[j];
}

// ldmatrix.sync.aligned.m8n8.x{N}{.trans}.shared.b16: lanes 8m..8m+7 give the addresses of rows 0..7 of matrix
// m (16 bytes each), register m of every lane receives its fragment of matrix m: without .trans, lane l gets
// row l/4, columns 2(l%4) and 2(l%4)+1; with .trans the matrix is read transposed, so lane l gets column l/4,
// rows 2(l%4) and 2(l%4)+1. The lower column (row) in the low 16 bits. Addresses of lanes >= 8N are not used.
template <bool TRANS, int N>
void ldmatrix(uint32_t (&r)[N], const void *row, const std::source_location &site) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
    static constexpr const char *op = TRANS ? (N == 1   ? "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16"
                                               : N == 2 ? "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16"
                                                        : "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16")
                                            : (N == 1   ? "ldmatrix.sync.aligned.m8n8.x1.shared.b16"
                                               : N == 2 ? "ldmatrix.sync.aligned.m8n8.x2.shared.b16"
                                                        : "ldmatrix.sync.aligned.m8n8.x4.shared.b16");
    const unsigned me = ctx(op).lane;
    if (me < 8u * N) {
        if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
            fail("%s at %s:%u: lane %u's row address %p is not 16-byte aligned (the PTX ISA requires it)", op,
                 site.file_name(), site.line(), me, row);
        if (!in_shared(row, 16))
            fail("%s at %s:%u: lane %u's row address %p (16 bytes) is not inside the block's shared memory", op,
                 site.file_name(), site.line(), me, row);
    }
    const auto out = warp_collective<std::array<uint32_t, N>>(
        0xffffffffu, reinterpret_cast<uintptr_t>(row), op, site, [](const uint64_t *rows, unsigned lane, unsigned) {
            [[maybe_unused]] const tsan_seen seen;
            const unsigned g = lane >> 2, t = lane % 4;
            std::array<uint32_t, N> v;
            for (unsigned m = 0; m < N; ++m) {
                if (!TRANS) {
                    std::memcpy(&v[m], reinterpret_cast<const unsigned char *>(rows[8 * m + g]) + 4 * t, 4);
                } else {
                    uint16_t lo, hi;
                    std::memcpy(&lo, reinterpret_cast<const unsigned char *>(rows[8 * m + 2 * t]) + 2 * g, 2);
                    std::memcpy(&hi, reinterpret_cast<const unsigned char *>(rows[8 * m + 2 * t + 1]) + 2 * g, 2);
                    v[m] = lo | static_cast<uint32_t>(hi) << 16;
                }
            }
            return v;
        });
    for (int m = 0; m < N; ++m) r[m] = out[m];
}

// ---- cp.async: per thread, the copies issued since the last commit and the committed groups, oldest first.
struct async_copy {
    unsigned char *dst;
    unsigned bytes;
    unsigned char data[16];
};
struct async_state {
    std::vector<async_copy> open;
    std::deque<std::vector<async_copy>> groups;
};
inline thread_local async_state async;

inline void drop_async_copies() {
    async.open.clear();
    async.groups.clear();
}

// cp.async.{ca,cg}.shared.global [dst], [src], bytes, src_bytes: the first src_bytes bytes are copied, the rest
// of the bytes zero-filled.
inline void cp_async(const char *op, void *dst, const void *src, unsigned bytes, unsigned src_bytes,
                     const std::source_location &site) {
    ctx(op);
    if (src_bytes > bytes) fail("%s at %s:%u: src-size %u exceeds cp-size %u", op, site.file_name(), site.line(),
                                src_bytes, bytes);
    if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || reinterpret_cast<uintptr_t>(src) % bytes != 0)
        fail("%s at %s:%u: addresses %p (shared) and %p (global) must be aligned to the %u bytes copied", op,
             site.file_name(), site.line(), dst, src, bytes);
    if (!in_shared(dst, bytes))
        fail("%s at %s:%u: destination %p (%u bytes) is not inside the block's shared memory", op, site.file_name(),
             site.line(), dst, bytes);
    if (in_shared(src, 1))
        fail("%s at %s:%u: source %p is in shared memory; cp.async copies from global memory", op,
             site.file_name(), site.line(), src);
    async_copy c{static_cast<unsigned char *>(dst), bytes, {}};
    if (src_bytes != 0) std::memcpy(c.data, src, src_bytes);
    // From issue to wait the destination is undefined on hardware (the copy may land at any moment): poison it now,
    // written by this thread, so that a thread still reading the old contents (a missing __syncthreads before a
    // stage is refilled) reads NaN and races with this write for ThreadSanitizer. Without it the copy would land
    // only at the wait, after the next barrier, and such a race would go unseen.
    std::memset(dst, 0xff, bytes);
    async.open.push_back(c);
    on_kernel_return = drop_async_copies;
}

inline void cp_async_commit() {
    ctx("cp.async.commit_group");
    async.groups.push_back(std::move(async.open));
    async.open.clear();
}

// Retires the oldest groups until at most `pending` remain: their copies land now, written by this thread.
inline void cp_async_wait(unsigned pending) {
    ctx("cp.async.wait_group");
    while (async.groups.size() > pending) {
        for (const async_copy &c : async.groups.front()) std::memcpy(c.dst, c.data, c.bytes);
        async.groups.pop_front();
    }
}

}  // namespace tc
}  // namespace d4j_emu

#endif
