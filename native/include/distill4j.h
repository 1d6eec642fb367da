/*
 * distill4j C ABI as Java sees it (bound by org.distill4j.natives.Distill4jNative through JavaCPP).
 *
 * A backend handle is created from the path of one implementation library (distill4j_impl.h): the dispatch
 * library dlopen()s it, looks up its function table and keeps it, as ggml backends and ONNX Runtime execution
 * providers do. A failed dlopen() reports dlerror()'s text, which names the missing library (libcudart.so.13,
 * libgomp.so.1, ...), so the Java exception can say exactly what is absent.
 */
#ifndef DISTILL4J_H
#define DISTILL4J_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The libraries are built with hidden visibility: only what is marked here is exported. */
#define D4J_API __attribute__((visibility("default")))

typedef struct d4j_backend d4j_backend;

/*
 * Threads and devices: a handle may be used from any thread, one call at a time per stream. Every call below that
 * takes a backend first makes the backend's device current on the calling thread (d4j_impl_set_device: a cheap
 * check when it already is), so a backend opened for cuda:1 on one thread launches on cuda:1 from any other.
 * Code that calls the CUDA runtime itself for a backend (the Java CudaBackend's allocations, copies and streams)
 * calls d4j_backend_use_device first, on the same thread.
 */

/* Opens `impl_path` and initialises it for `device`. NULL on failure, with the reason in err[errlen]. */
D4J_API d4j_backend *d4j_backend_open(const char *impl_path, int device, char *err, int errlen);
D4J_API void d4j_backend_close(d4j_backend *backend);
/* Message of the last failed call through `backend` on this thread. */
D4J_API const char *d4j_backend_last_error(d4j_backend *backend);
D4J_API int d4j_synchronize(d4j_backend *backend, void *stream);
/* The most threads the backend's host kernels run with (cpu: OMP_NUM_THREADS, else the affinity mask capped by the
 * cgroup CPU quota; fewer while other processes keep the CPUs busy); 1 for a backend without d4j_impl_threads. */
D4J_API int d4j_backend_threads(d4j_backend *backend);

/* dlopen(name) with RTLD_GLOBAL; 0 if found, else -1 and dlerror()'s text in err (used to probe libcuda.so.1). */
D4J_API int d4j_probe_library(const char *name, char *err, int errlen);

/* Host memory for the cpu and cuda-emu backends: 64-byte aligned so rows vectorise and float4 loads are legal. */
D4J_API void *d4j_host_alloc(size_t bytes);
D4J_API void d4j_host_free(void *ptr);
/* Makes the backend's device current on the calling thread, for the caller's own CUDA runtime calls; 0 or nonzero
 * with d4j_backend_last_error's message. */
D4J_API int d4j_backend_use_device(d4j_backend *backend);
/* Memory for a host-memory backend (cpu, cuda-emu): the implementation's d4j_impl_malloc on the backend's device
 * when it has one (cuda-emu: tagged with the device, 256-byte aligned), else d4j_host_alloc. NULL when out of memory.
 * d4j_backend_free frees it (nonzero for a pointer the implementation did not allocate). */
D4J_API void *d4j_backend_alloc(d4j_backend *backend, size_t bytes);
D4J_API int d4j_backend_free(d4j_backend *backend, void *ptr);

/*
 * Streams and CUDA graphs (d4j_impl_stream_create ... d4j_impl_graph_destroy in distill4j_impl.h): 1 when the
 * backend has them (cuda, cuda-emu), 0 when not (cpu: every entry below then fails with a message saying so).
 */
D4J_API int d4j_backend_has_streams(d4j_backend *backend);
D4J_API int d4j_stream_create(d4j_backend *backend, void **stream);
D4J_API int d4j_stream_destroy(d4j_backend *backend, void *stream);
D4J_API int d4j_zero_async(d4j_backend *backend, void *stream, void *ptr, size_t bytes);
D4J_API int d4j_copy_async(d4j_backend *backend, void *stream, void *dst, const void *src, size_t bytes);
D4J_API int d4j_graph_begin(d4j_backend *backend, void *stream);
D4J_API int d4j_graph_end(d4j_backend *backend, void *stream, void **graph);
D4J_API int d4j_graph_launch(d4j_backend *backend, void *stream, void *graph);
D4J_API int d4j_graph_destroy(d4j_backend *backend, void *graph);

/* See d4j_impl_kl_div in distill4j_impl.h. */
D4J_API int d4j_kl_div(d4j_backend *backend, void *stream, const float *student, const float *teacher, int64_t B, int64_t C,
               float T, int reduction, int log_target, float loss_scale, const float *grad_out, float *row_loss,
               float *loss, float *grad);

/* See d4j_impl_patch_embed_* in distill4j_impl.h. */
D4J_API int64_t d4j_patch_embed_workspace(d4j_backend *backend, int64_t B, int64_t Cin, int64_t H, int64_t W,
                                          int64_t P, int64_t D);
D4J_API int d4j_patch_embed_forward(d4j_backend *backend, void *stream, const float *images, int64_t B, int64_t Cin,
                                    int64_t H, int64_t W, int64_t P, int64_t D, const float *weight, const float *bias,
                                    const float *pos, const float *cls, const float *dist, float *tokens,
                                    void *workspace);
D4J_API int d4j_patch_embed_backward(d4j_backend *backend, void *stream, const float *images, int64_t B, int64_t Cin,
                                     int64_t H, int64_t W, int64_t P, int64_t D, const float *weight,
                                     const float *dtokens, float *dweight, float *dbias, float *dpos, float *dcls,
                                     float *ddist, float *dimages, void *workspace);

/* See d4j_impl_attention_* in distill4j_impl.h. */
D4J_API int64_t d4j_attention_workspace(d4j_backend *backend, int64_t B, int64_t N, int64_t H, int64_t Dh);
D4J_API int d4j_attention_forward(d4j_backend *backend, void *stream, const float *qkv, int64_t B, int64_t N,
                                  int64_t H, int64_t Dh, float scale, float *out, float *lse, void *workspace);
D4J_API int d4j_attention_backward(d4j_backend *backend, void *stream, const float *qkv, const float *out,
                                   const float *lse, const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                   float scale, float *dqkv, void *workspace);
/* See d4j_impl_attention_bf16_forward and _backward in distill4j_impl.h (bf16 as uint16_t bits). */
D4J_API int d4j_attention_bf16_forward(d4j_backend *backend, void *stream, const uint16_t *qkv, int64_t B, int64_t N,
                                       int64_t H, int64_t Dh, float scale, uint16_t *out, float *lse);
D4J_API int d4j_attention_bf16_backward(d4j_backend *backend, void *stream, const uint16_t *qkv, const uint16_t *out,
                                        const float *lse, const uint16_t *dout, int64_t B, int64_t N, int64_t H,
                                        int64_t Dh, float scale, uint16_t *dqkv);

/* See d4j_impl_cast_bf16 and _f32 in distill4j_impl.h (bf16 as uint16_t bits). */
D4J_API int d4j_cast_bf16(d4j_backend *backend, void *stream, const float *x, int64_t n, uint16_t *y);
D4J_API int d4j_cast_f32(d4j_backend *backend, void *stream, const uint16_t *x, int64_t n, float *y);

/* See d4j_impl_linear_*, linear_bf16_*, layernorm_*, gelu_*, cross_entropy(_soft), argmax, sum_squares, clip_scale, adamw and
 * token_rows_* in distill4j_impl.h: the same arguments after the backend handle. */
D4J_API int d4j_linear_forward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, const float *residual, int64_t M, int64_t K, int64_t N, float *y, int precision);
D4J_API int d4j_linear_backward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *dy, int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias, int precision);
D4J_API int d4j_linear_bf16_forward(d4j_backend *backend, void *stream, const uint16_t *x, const uint16_t *weight, const float *bias, const float *residual, int64_t M, int64_t K, int64_t N, float *y);
D4J_API int d4j_linear_bf16_backward(d4j_backend *backend, void *stream, const uint16_t *x, const uint16_t *weight, const uint16_t *dy, int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias);
D4J_API int64_t d4j_layernorm_workspace(d4j_backend *backend, int64_t M, int64_t C);
D4J_API int d4j_layernorm_forward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, int64_t M, int64_t C, float eps, float *y, float *mean, float *rstd);
D4J_API int d4j_layernorm_backward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *mean, const float *rstd, const float *dy, int64_t M, int64_t C, float *dx, float *dweight, float *dbias, void *workspace);
D4J_API int d4j_layernorm_forward_bf16(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, int64_t M, int64_t C, float eps, uint16_t *y, float *mean, float *rstd);
D4J_API int d4j_gelu_forward(d4j_backend *backend, void *stream, const float *x, int64_t n, float *y);
D4J_API int d4j_gelu_backward(d4j_backend *backend, void *stream, const float *x, const float *dy, int64_t n, float *dx);
D4J_API int d4j_gelu_forward_bf16(d4j_backend *backend, void *stream, const float *x, int64_t n, uint16_t *y);
D4J_API int d4j_gelu_backward_bf16(d4j_backend *backend, void *stream, const float *x, const float *dy, int64_t n, uint16_t *dx);
D4J_API int d4j_cross_entropy(d4j_backend *backend, void *stream, const float *logits, const int32_t *labels, int64_t B, int64_t C, float label_smoothing, float loss_scale, float *row_loss, float *loss, float *grad);
D4J_API int d4j_cross_entropy_soft(d4j_backend *backend, void *stream, const float *logits, const float *targets, int64_t B, int64_t C, float label_smoothing, float loss_scale, float *row_loss, float *loss, float *grad);
D4J_API int d4j_argmax(d4j_backend *backend, void *stream, const float *x, int64_t B, int64_t C, int32_t *index);
D4J_API int d4j_sum_squares(d4j_backend *backend, void *stream, const float *x, int64_t n, int accumulate, float *out);
D4J_API int d4j_clip_scale(d4j_backend *backend, void *stream, const float *sumsq, float max_norm, float *norm, float *scale);
D4J_API int d4j_adamw(d4j_backend *backend, void *stream, float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step, const float *grad_scale);
D4J_API int d4j_token_rows_forward(d4j_backend *backend, void *stream, const float *tokens, int64_t B, int64_t T, int64_t D, int64_t prefix, float *rows);
D4J_API int d4j_token_rows_backward(d4j_backend *backend, void *stream, const float *drows, int64_t B, int64_t T, int64_t D, int64_t prefix, float *dtokens);

#ifdef __cplusplus
}
#endif
#endif
