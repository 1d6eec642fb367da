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

#include <stddef.h>
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

/* Prepares the implementation for `device` (cuda: range and capability checks, then d4j_impl_set_device;
 * others: nothing). */
D4J_IMPL_API int d4j_impl_init(int device);
/*
 * Makes `device` current on the calling thread (cuda, cuda-emu: cudaSetDevice unless cudaGetDevice already says so;
 * cpu: nothing). CUDA's current device belongs to the host thread, and a backend opened on one thread is called from
 * others: the dispatch library calls this before every entry below that takes a stream, so the entries themselves
 * may assume the backend's device is current (cuBLAS handles, launches, cudaGetDevice all rely on it).
 */
D4J_IMPL_API int d4j_impl_set_device(int device);
/*
 * Optional (cuda-emu only): memory for a host-memory backend that the implementation wants to know about. The
 * emulator tags each block with the device current at the call, so that a launch with another device current is
 * caught as hardware would fault. NULL when out of memory. d4j_impl_free returns nonzero for a pointer it did
 * not allocate.
 */
D4J_IMPL_API void *d4j_impl_malloc(size_t bytes);
D4J_IMPL_API int d4j_impl_free(void *ptr);
/* Message of the last failed call on this thread (never NULL). */
D4J_IMPL_API const char *d4j_impl_last_error(void);
/* Blocks until the work queued on `stream` has finished (cpu, cuda-emu: returns at once). */
D4J_IMPL_API int d4j_impl_synchronize(void *stream);
/* Optional (the cpu library only): the most threads its parallel regions use, native/cpu/threads.h. */
D4J_IMPL_API int d4j_impl_threads(void);
/*
 * Optional, all or none (cuda, cuda-emu; the cpu library has none): streams, work queued on them, and CUDA graphs.
 * zero and copy are queued on `stream` (cudaMemsetAsync, cudaMemcpyAsync with cudaMemcpyDefault: unified addressing
 * tells the sides apart). graph_begin starts capturing `stream` (cudaStreamCaptureModeThreadLocal: only this
 * thread's unsafe calls break the capture, so other threads and backends carry on); until graph_end, work issued to
 * the stream is recorded, not run. graph_end stops the capture and returns the instantiated graph in *graph, or
 * fails (and *graph is NULL) when the capture was broken: a wait for the device, an allocation or a synchronous copy
 * on this thread, or a failed call inside it. graph_launch replays it on `stream`; graph_destroy frees it.
 */
D4J_IMPL_API int d4j_impl_stream_create(void **stream);
D4J_IMPL_API int d4j_impl_stream_destroy(void *stream);
D4J_IMPL_API int d4j_impl_zero_async(void *stream, void *ptr, size_t bytes);
D4J_IMPL_API int d4j_impl_copy_async(void *stream, void *dst, const void *src, size_t bytes);
D4J_IMPL_API int d4j_impl_graph_begin(void *stream);
D4J_IMPL_API int d4j_impl_graph_end(void *stream, void **graph);
D4J_IMPL_API int d4j_impl_graph_launch(void *stream, void *graph);
D4J_IMPL_API int d4j_impl_graph_destroy(void *graph);

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

/*
 * The same attention forward in bf16 on tensor cores (issue #18; not yet used by the model): qkv [B, N, 3, H, Dh]
 * and out [B, N, H*Dh] hold bf16 values as uint16_t bit patterns (the upper half of the IEEE binary32 word, as
 * CUDA's __nv_bfloat16 and torch.bfloat16 store them); lse [B, H, N] is fp32, natural log. S = Q K^T, the softmax
 * statistics and O are fp32; P is rounded to bf16 (nearest even) before P V, out rounded once. Dh 32 or 64 (others
 * rejected with a message), any N >= 1, scale finite; qkv and out 16-byte aligned (cuda). No workspace.
 */
D4J_IMPL_API int d4j_impl_attention_bf16_forward(void *stream, const uint16_t *qkv, int64_t B, int64_t N, int64_t H,
                                                 int64_t Dh, float scale, uint16_t *out, float *lse);

/*
 * Its backward (issue #18; not yet used by the model): from qkv, out, dout (bf16 bits,
 * layouts as above) and lse (fp32) WRITES dqkv (bf16, qkv's layout; every element). D = rowsum(dO o out), P
 * recomputed from lse; S, dP, D, dS and the dQ, dK, dV sums in fp32; P and dS rounded to bf16 before their mma;
 * each output rounded once. No atomics: the same inputs give the same bits. Dh 32 or 64, any N >= 1, scale finite;
 * qkv, out, dout and dqkv 16-byte aligned (cuda). No workspace.
 */
D4J_IMPL_API int d4j_impl_attention_bf16_backward(void *stream, const uint16_t *qkv, const uint16_t *out,
                                                  const float *lse, const uint16_t *dout, int64_t B, int64_t N,
                                                  int64_t H, int64_t Dh, float scale, uint16_t *dqkv);

/*
 * Linear layer, weights stored (out, in) as PyTorch's nn.Linear:  y = x W^T + b (+ residual).
 *   x [M, K], weight [N, K], bias [N] or NULL, residual [M, N] or NULL (the ViT's skip connection, fused so the
 *   block output is written once; it may not alias y), y [M, N] WRITTEN.
 * Backward from dy [M, N]: dx [M, K] WRITTEN (NULL skips it), dweight [N, K] and dbias [N] (NULL when there is no
 * bias) ACCUMULATE (+=). The residual's gradient is dy itself: the caller keeps it.
 * The GEMMs are library calls, never hand-written: OpenBLAS (cpu; also cuda-emu, whose memory is host memory)
 * and cuBLAS (cuda; libcublas.so.13 is opened on first use and a missing one is reported by name).
 * precision: 0 fp32 (cublasSgemm); 1 tf32: the GEMMs' operands rounded to TF32 (10 explicit mantissa bits), sums
 * fp32 (cuda: cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32, whose operand rounding NVIDIA does not document; cpu
 * and cuda-emu: round to nearest even, then the fp32 GEMM); the bias gradient sums dy unrounded. Others refused.
 */
D4J_IMPL_API int d4j_impl_linear_forward(void *stream, const float *x, const float *weight, const float *bias,
                                         const float *residual, int64_t M, int64_t K, int64_t N, float *y,
                                         int precision);
D4J_IMPL_API int d4j_impl_linear_backward(void *stream, const float *x, const float *weight, const float *dy,
                                          int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias,
                                          int precision);

/*
 * The same linear layer with bf16 operands (issue #18; not yet used by the model): x, weight and dy hold bf16 values
 * as uint16_t bit patterns (as d4j_impl_attention_bf16_*); bias, residual, y, dx, dweight and dbias are fp32, with
 * the contract above (y and dx WRITTEN, dweight and dbias ACCUMULATE, residual not aliasing y). Every product of two
 * bf16 values is exact in fp32, every sum is fp32 (cuda: cublasGemmEx, CUDA_R_16BF operands, CUDA_R_32F result,
 * CUBLAS_COMPUTE_32F; cpu and cuda-emu: the operands widened to fp32, exactly, then the fp32 GEMM).
 */
D4J_IMPL_API int d4j_impl_linear_bf16_forward(void *stream, const uint16_t *x, const uint16_t *weight,
                                              const float *bias, const float *residual, int64_t M, int64_t K,
                                              int64_t N, float *y);
D4J_IMPL_API int d4j_impl_linear_bf16_backward(void *stream, const uint16_t *x, const uint16_t *weight,
                                               const uint16_t *dy, int64_t M, int64_t K, int64_t N, float *dx,
                                               float *dweight, float *dbias);

/*
 * LayerNorm over the last dimension C of x [M, C] (timm: eps 1e-6), affine weight [C] and bias [C].
 * Forward: y [M, C], mean [M] and rstd [M] (1/sqrt(var + eps), biased variance) WRITTEN, saved for backward.
 * Backward from dy [M, C]: dx [M, C] ACCUMULATES (+=: it is the residual stream's gradient, llm.c's convention),
 * dweight [C] and dbias [C] ACCUMULATE, reduced over M in a fixed order (reproducible bits).
 * workspace: d4j_impl_layernorm_workspace() bytes (0 allowed), owned by the caller.
 */
D4J_IMPL_API int64_t d4j_impl_layernorm_workspace(int64_t M, int64_t C);
D4J_IMPL_API int d4j_impl_layernorm_forward(void *stream, const float *x, const float *weight, const float *bias,
                                            int64_t M, int64_t C, float eps, float *y, float *mean, float *rstd);
D4J_IMPL_API int d4j_impl_layernorm_backward(void *stream, const float *x, const float *weight, const float *mean,
                                             const float *rstd, const float *dy, int64_t M, int64_t C, float *dx,
                                             float *dweight, float *dbias, void *workspace);
/*
 * The forward with y in bf16 (uint16_t bits; issue #18: y feeds a bf16 GEMM): each y the fp32 value the fp32
 * forward computes, rounded once as d4j_impl_cast_bf16 rounds; mean and rstd fp32, as there. y must not overlap x.
 */
D4J_IMPL_API int d4j_impl_layernorm_forward_bf16(void *stream, const float *x, const float *weight,
                                                 const float *bias, int64_t M, int64_t C, float eps, uint16_t *y,
                                                 float *mean, float *rstd);

/*
 * fp32 <-> bf16 casts of n contiguous elements (issue #18: bf16 activations), bf16 as uint16_t bits (the upper half
 * of the IEEE binary32 word, as __nv_bfloat16 and torch.bfloat16 store them).
 * cast_bf16: y = bf16(x), round to nearest, ties to even (cvt.rn.bf16.f32): subnormals round like normals, a value
 *   past the largest finite bf16 (after rounding) becomes infinity of its sign; a NaN stays a quiet NaN with its
 *   sign (x's upper 16 bits with the quiet bit 0x0040 set), the same bits on every backend.
 * cast_f32: y = x widened, exact.
 * y WRITTEN (every element); x and y must not overlap. n >= 1. Any alignment (cuda: 16-byte vectors where the fp32
 * side is 16-byte aligned and the bf16 side 8-byte aligned, element by element otherwise). No workspace.
 */
D4J_IMPL_API int d4j_impl_cast_bf16(void *stream, const float *x, int64_t n, uint16_t *y);
D4J_IMPL_API int d4j_impl_cast_f32(void *stream, const uint16_t *x, int64_t n, float *y);

/*
 * GELU, exact (erf) form as nn.GELU(): y = x/2 (1 + erf(x/sqrt 2)), over n elements.
 * Backward: dx = dy * gelu'(x), WRITTEN; dx may alias dy (in place).
 */
D4J_IMPL_API int d4j_impl_gelu_forward(void *stream, const float *x, int64_t n, float *y);
D4J_IMPL_API int d4j_impl_gelu_backward(void *stream, const float *x, const float *dy, int64_t n, float *dx);
/*
 * The same with bf16 outputs (uint16_t bits; issue #18: the next consumer is a bf16 GEMM): y, dx WRITTEN, each
 * element the fp32 value the fp32 entry computes, rounded once as d4j_impl_cast_bf16 rounds (nearest even, NaN a
 * quiet NaN with its sign): the bits of gelu_forward then cast_bf16, in one pass. dx must not overlap x or dy.
 */
D4J_IMPL_API int d4j_impl_gelu_forward_bf16(void *stream, const float *x, int64_t n, uint16_t *y);
D4J_IMPL_API int d4j_impl_gelu_backward_bf16(void *stream, const float *x, const float *dy, int64_t n, uint16_t *dx);

/*
 * Fused softmax + cross-entropy forward and backward in one pass (llm.c's fused classifier), PyTorch's
 * F.cross_entropy(logits, labels, label_smoothing=eps) with reduction 'mean', times loss_scale:
 *   logits [B, C]; labels [B] int32 class indices, each in [0, C) (no ignore_index: PyTorch's -100 is out of range);
 *   row_loss [B] WRITTEN: loss_scale * the row's loss; loss [1] WRITTEN: their mean (NULL skips it);
 *   grad [B, C] WRITTEN: loss_scale/B * (softmax - target), target = (1 - eps) onehot + eps/C (NULL skips it).
 * A label outside [0, C) is never used as an index. The CPU kernel returns nonzero (the message names the row and the
 * label) before writing anything; a CUDA kernel cannot report without a synchronisation, so it writes NaN into that
 * row's loss and gradient row, and the mean is NaN. Java checks labels in host memory before either runs.
 */
D4J_IMPL_API int d4j_impl_cross_entropy(void *stream, const float *logits, const int32_t *labels, int64_t B,
                                        int64_t C, float label_smoothing, float loss_scale, float *row_loss,
                                        float *loss, float *grad);
/*
 * The same with probability targets (Mixup, CutMix, soft labels): F.cross_entropy(logits, targets,
 * label_smoothing=eps) with a float target [B, C], reduction 'mean' (over B), times loss_scale:
 *   t' = (1 - eps) targets + eps/C; row_loss [B] WRITTEN: loss_scale * sum_c t'_c (-log_softmax(x)_c);
 *   grad [B, C] WRITTEN: loss_scale/B * (softmax * sum_c t'_c - t'). As in PyTorch, a target row need not sum to 1
 *   and is not checked: a NaN target gives a NaN row.
 */
D4J_IMPL_API int d4j_impl_cross_entropy_soft(void *stream, const float *logits, const float *targets, int64_t B,
                                             int64_t C, float label_smoothing, float loss_scale, float *row_loss,
                                             float *loss, float *grad);
/*
 * index [B] int32 WRITTEN: the column of each row's maximum as torch.argmax(x, 1) gives it: the first of equal
 * maxima, and the first NaN where a row holds one (NaN is the maximum). C < 2^31.
 */
D4J_IMPL_API int d4j_impl_argmax(void *stream, const float *x, int64_t B, int64_t C, int32_t *index);

/*
 * Global gradient-norm clipping without a host round trip (torch.nn.utils.clip_grad_norm_):
 * sum_squares: out[0] = (accumulate ? out[0] : 0) + sum x^2 over n elements, in a fixed order; called once per
 * gradient tensor in a fixed order, so the total is reproducible.
 * clip_scale: norm[0] = sqrt(sumsq[0]); scale[0] = min(1, max_norm / (norm + 1e-6)), PyTorch's clip coefficient.
 */
D4J_IMPL_API int d4j_impl_sum_squares(void *stream, const float *x, int64_t n, int accumulate, float *out);
D4J_IMPL_API int d4j_impl_clip_scale(void *stream, const float *sumsq, float max_norm, float *norm, float *scale);

/*
 * AdamW step with torch.optim.AdamW's semantics (decoupled weight decay, bias correction, eps outside the sqrt):
 *   g = grad * (grad_scale ? grad_scale[0] : 1)      (the clip coefficient, read on the device)
 *   param *= 1 - lr * weight_decay;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   param -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
 * step counts from 1. param, m, v [n] updated in place; grad is read only.
 */
D4J_IMPL_API int d4j_impl_adamw(void *stream, float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                                const float *grad_scale);

/*
 * The prefix tokens (class, then distillation) of a token sequence, gathered for the heads:
 * forward: rows [prefix, B, D] WRITTEN, rows[p, b] = tokens[b, p] (p < prefix <= T);
 * backward: dtokens [B, T, D] WRITTEN: drows at the prefix rows, 0 elsewhere (it starts the backward pass).
 */
D4J_IMPL_API int d4j_impl_token_rows_forward(void *stream, const float *tokens, int64_t B, int64_t T, int64_t D,
                                             int64_t prefix, float *rows);
D4J_IMPL_API int d4j_impl_token_rows_backward(void *stream, const float *drows, int64_t B, int64_t T, int64_t D,
                                              int64_t prefix, float *dtokens);

#endif
