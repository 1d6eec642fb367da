/*
 * distill4j implementation ABI: the entry points every kernel library exports under the same names.
 *
 *   libdistill4j_cpu.so      native/cpu/<op>.cpp C++17 + OpenMP
 *   libdistill4j_cuda.so     native/cuda/<op>.cu nvcc, shared cudart
 *   libdistill4j_cudaemu.so  native/cuda/<op>.cu the same sources through g++ and native/cuda/emu/cuda_emu.h
 *
 * The dispatch library (distill4j.h) dlopen()s one of them per backend handle; nothing links two at once,
 * so the names may (and must) be identical. All pointers are in the implementation's memory space: host
 * memory for cpu and cuda-emu, device memory for cuda. `stream` is a cudaStream_t for cuda, ignored otherwise.
 * Every entry returns 0 on success; on failure a nonzero code, with the message from d4j_impl_last_error().
 * Shapes and arguments are checked in Java (org.distill4j.ops) before the call; the checks here only stop a native crash.
 */
#ifndef DISTILL4J_IMPL_H
#define DISTILL4J_IMPL_H

#include <stdint.h>

#ifdef __cplusplus
#define D4J_EXTERN extern "C"
#else
#define D4J_EXTERN extern
#endif
#define D4J_IMPL_API D4J_EXTERN __attribute__((visibility("default")))

/* Reductions with PyTorch's meaning (torch.nn.functional.kl_div). */
enum d4j_reduction {
    D4J_REDUCTION_NONE = 0,      /* per row: loss [B]                        */
    D4J_REDUCTION_BATCHMEAN = 1, /* sum / B: the KL definition (default)     */
    D4J_REDUCTION_SUM = 2,       /* sum over all B*C terms                   */
    D4J_REDUCTION_MEAN = 3       /* sum / (B*C): PyTorch's `mean`, not the KL */
};

/* Prepares the implementation for `device` (cuda: cudaSetDevice + capability check; others: nothing). */
D4J_IMPL_API int d4j_impl_init(int device);
/* Message of the last failed call on this thread (never NULL). */
D4J_IMPL_API const char *d4j_impl_last_error(void);
/* Blocks until the work queued on `stream` has finished (cpu, cuda-emu: returns at once). */
D4J_IMPL_API int d4j_impl_synchronize(void *stream);

/*
 * Fused log_softmax + KL divergence, forward and gradient in one pass over the rows.
 *   student  [B,C]  logits z_s
 *   teacher  [B,C]  logits z_t, or log-probabilities log q when log_target != 0 (then T applies to z_s only)
 *   p = softmax(z_s/T), q = softmax(z_t/T) (or exp(teacher));  row loss = sum_c q (log q - log p), 0*log 0 = 0
 *   loss_scale multiplies loss and gradient (T*T for Hinton's scaling, 1 without).
 *   grad_out   upstream gradient: NULL (= 1), a scalar for the reductions, [B] for NONE.
 *   row_loss   [B] out: the scaled row losses (the result for NONE, a workspace otherwise). Required.
 *   loss       [1] out: the reduced loss; unused (may be NULL) for NONE.
 *   grad       [B,C] out: d loss / d student (times grad_out); NULL skips the gradient.
 */
D4J_IMPL_API int d4j_impl_kl_div(void *stream, const float *student, const float *teacher, int64_t B, int64_t C,
                                 float T, int reduction, int log_target, float loss_scale, const float *grad_out,
                                 float *row_loss, float *loss, float *grad);

/*
 * Patch embedding: a convolution with kernel = stride = P, fused with the bias, the position-embedding add and the
 * placement of the patch tokens after the prefix tokens (class, then distillation), as timm's ViT/DeiT lays out
 * its token sequence. No separate concat: tokens are written straight into the model's sequence buffer.
 *   images  [B, Cin, H, W] (NCHW, as PyTorch), H and W multiples of P;   N = (H/P) * (W/P), K = Cin*P*P
 *   weight  [D, Cin, P, P] = [D, K] row-major (PyTorch's conv weight);    bias [D]
 *   pos     [prefix + N, D];  cls [D] or NULL;  dist [D] or NULL;  prefix = (cls != NULL) + (dist != NULL)
 *   tokens  [B, prefix + N, D]: row 0 cls + pos[0], row 1 dist + pos[1] (when present), then patch n in
 *           row-major patch order (n = py * (W/P) + px): weight . patch + bias + pos[prefix + n]
 * Backward, from dtokens [B, prefix + N, D]: parameter gradients ACCUMULATE (+=) into dweight [D, K], dbias [D],
 * dpos [prefix + N, D], dcls [D] and ddist [D] (each NULL exactly when its input was); dimages [B, Cin, H, W] is
 * WRITTEN (=) and may be NULL (inputs usually need no gradient).
 * workspace: d4j_impl_patch_embed_workspace() bytes (0 allowed), owned by the caller, reused across calls.
 */
D4J_IMPL_API int64_t d4j_impl_patch_embed_workspace(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P,
                                                    int64_t D);
D4J_IMPL_API int d4j_impl_patch_embed_forward(void *stream, const float *images, int64_t B, int64_t Cin, int64_t H,
                                              int64_t W, int64_t P, int64_t D, const float *weight, const float *bias,
                                              const float *pos, const float *cls, const float *dist, float *tokens,
                                              void *workspace);
D4J_IMPL_API int d4j_impl_patch_embed_backward(void *stream, const float *images, int64_t B, int64_t Cin, int64_t H,
                                               int64_t W, int64_t P, int64_t D, const float *weight,
                                               const float *dtokens, float *dweight, float *dbias, float *dpos,
                                               float *dcls, float *ddist, float *dimages, void *workspace);

/*
 * Multi-head self-attention, FlashAttention-2 style: per (batch, head), O = softmax(Q K^T * scale) V, non-causal,
 * no dropout; the N x N score matrix is never stored, in device or host memory.
 *   qkv   [B, N, 3, H, Dh]: the fused qkv linear's output as timm lays it out ([q|k|v] x heads x head_dim)
 *   out   [B, N, H*Dh] WRITTEN: head h at columns h*Dh.., ready for the projection GEMM
 *   lse   [B, H, N] WRITTEN: log-sum-exp of each row of scaled scores, saved for backward
 * Backward from dout [B, N, H*Dh], with qkv, out and lse of the forward: D = rowsum(dout o out), P recomputed per
 * tile from lse; dqkv [B, N, 3, H, Dh] WRITTEN (=), in the layout of qkv.
 * Dh: 32 and 64 must be supported; an implementation may reject others with a message. Any N >= 1.
 * workspace: d4j_impl_attention_workspace() bytes (0 allowed), owned by the caller, reused across calls.
 */
D4J_IMPL_API int64_t d4j_impl_attention_workspace(int64_t B, int64_t N, int64_t H, int64_t Dh);
D4J_IMPL_API int d4j_impl_attention_forward(void *stream, const float *qkv, int64_t B, int64_t N, int64_t H,
                                            int64_t Dh, float scale, float *out, float *lse, void *workspace);
D4J_IMPL_API int d4j_impl_attention_backward(void *stream, const float *qkv, const float *out, const float *lse,
                                             const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                             float scale, float *dqkv, void *workspace);

#endif
