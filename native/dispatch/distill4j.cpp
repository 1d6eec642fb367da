// The dispatch library: one JavaCPP peer, any number of implementation libraries behind it.
// Each backend handle owns a dlopen() handle and the function table resolved from it; calls go straight through.
#include "distill4j.h"
#include "distill4j_impl.h"

#include <dlfcn.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace {

struct function_table {
    int (*init)(int);
    int (*set_device)(int);
    const char *(*last_error)();
    int (*synchronize)(void *);
    int (*kl_div)(void *, const float *, const float *, int64_t, int64_t, float, int, int, float, const float *,
                  float *, float *, float *);
    int64_t (*patch_embed_workspace)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
    int (*patch_embed_forward)(void *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               const float *, const float *, const float *, const float *, const float *, float *,
                               void *);
    int (*patch_embed_backward)(void *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                const float *, const float *, float *, float *, float *, float *, float *, float *,
                                void *);
    int64_t (*attention_workspace)(int64_t, int64_t, int64_t, int64_t);
    int (*attention_forward)(void *, const float *, int64_t, int64_t, int64_t, int64_t, float, float *, float *,
                             void *);
    int (*attention_backward)(void *, const float *, const float *, const float *, const float *, int64_t, int64_t,
                              int64_t, int64_t, float, float *, void *);
    int (*attention_bf16_forward)(void *, const uint16_t *, int64_t, int64_t, int64_t, int64_t, float, uint16_t *,
                                  float *);
    int (*attention_bf16_backward)(void *, const uint16_t *, const uint16_t *, const float *, const uint16_t *,
                                   int64_t, int64_t, int64_t, int64_t, float, uint16_t *);
    int (*cast_bf16)(void *, const float *, int64_t, uint16_t *);
    int (*cast_f32)(void *, const uint16_t *, int64_t, float *);
    int (*linear_forward)(void *, const float *, const float *, const float *, const float *, int64_t, int64_t, int64_t, float *, int);
    int (*linear_backward)(void *, const float *, const float *, const float *, int64_t, int64_t, int64_t, float *, float *, float *, int);
    int (*linear_bf16_forward)(void *, const uint16_t *, const uint16_t *, const float *, const float *, int64_t, int64_t, int64_t, float *);
    int (*linear_bf16_backward)(void *, const uint16_t *, const uint16_t *, const uint16_t *, int64_t, int64_t, int64_t, float *, float *, float *);
    int64_t (*layernorm_workspace)(int64_t, int64_t);
    int (*layernorm_forward)(void *, const float *, const float *, const float *, int64_t, int64_t, float, float *, float *, float *);
    int (*layernorm_backward)(void *, const float *, const float *, const float *, const float *, const float *, int64_t, int64_t, float *, float *, float *, void *);
    int (*layernorm_forward_bf16)(void *, const float *, const float *, const float *, int64_t, int64_t, float, uint16_t *, float *, float *);
    int (*gelu_forward)(void *, const float *, int64_t, float *);
    int (*gelu_backward)(void *, const float *, const float *, int64_t, float *);
    int (*gelu_forward_bf16)(void *, const float *, int64_t, uint16_t *);
    int (*gelu_backward_bf16)(void *, const float *, const float *, int64_t, uint16_t *);
    int (*cross_entropy)(void *, const float *, const int32_t *, int64_t, int64_t, float, float, float *, float *, float *);
    int (*cross_entropy_soft)(void *, const float *, const float *, int64_t, int64_t, float, float, float *, float *,
                              float *);
    int (*argmax)(void *, const float *, int64_t, int64_t, int32_t *);
    int (*sum_squares)(void *, const float *, int64_t, int, float *);
    int (*clip_scale)(void *, const float *, float, float *, float *);
    int (*adamw)(void *, float *, const float *, float *, float *, int64_t, float, float, float, float, float, int64_t, const float *);
    int (*token_rows_forward)(void *, const float *, int64_t, int64_t, int64_t, int64_t, float *);
    int (*token_rows_backward)(void *, const float *, int64_t, int64_t, int64_t, int64_t, float *);
    int (*threads)();  // optional: only the CPU library runs kernels on host threads
    void *(*malloc)(size_t);  // optional, with free: only the emulator tags memory with its device
    int (*free)(void *);
    // optional, all or none: streams, queued zero/copy, CUDA graphs (cuda, cuda-emu)
    int (*stream_create)(void **);
    int (*stream_destroy)(void *);
    int (*zero_async)(void *, void *, size_t);
    int (*copy_async)(void *, void *, const void *, size_t);
    int (*graph_begin)(void *);
    int (*graph_end)(void *, void **);
    int (*graph_launch)(void *, void *);
    int (*graph_destroy)(void *);
};

void write_error(char *err, int errlen, const char *fmt, const char *a, const char *b) {
    if (err != nullptr && errlen > 0) std::snprintf(err, static_cast<size_t>(errlen), fmt, a, b);
}

// Resolves `name` into `slot`; false (with the symbol named in err) when the library lacks it, which means a
// stale or foreign library file rather than a missing dependency.
template <typename F>
bool resolve(void *lib, const char *name, F &slot, const char *path, char *err, int errlen) {
    slot = reinterpret_cast<F>(dlsym(lib, name));
    if (slot == nullptr) write_error(err, errlen, "%s does not export %s", path, name);
    return slot != nullptr;
}

}  // namespace

struct d4j_backend {
    void *lib;
    function_table fn;
    int device;
};

namespace {
// CUDA's current device is per host thread and a handle is used from any thread: every entry makes the backend's
// device current first (distill4j.h, "Threads and devices").
int use_device(d4j_backend *backend) { return backend->fn.set_device(backend->device); }

// The message of a stream or graph entry called on a library without them (the cpu one), for the next
// d4j_backend_last_error on this thread: the library itself was never called, so it has no message of its own.
thread_local const char *no_streams_error = nullptr;
int no_streams() {
    no_streams_error = "this backend has no streams or CUDA graphs (only cuda and cuda-emu do)";
    return 1;
}
}  // namespace

extern "C" {

d4j_backend *d4j_backend_open(const char *impl_path, int device, char *err, int errlen) {
    if (impl_path == nullptr) {
        write_error(err, errlen, "%s%s", "no implementation library path given", "");
        return nullptr;
    }
    // RTLD_LOCAL: every implementation exports the same names; they must not interpose on each other.
    void *lib = dlopen(impl_path, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        const char *why = dlerror();
        write_error(err, errlen, "%s", why != nullptr ? why : impl_path, "");
        return nullptr;
    }
    function_table fn{};
    bool ok = resolve(lib, "d4j_impl_init", fn.init, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_set_device", fn.set_device, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_last_error", fn.last_error, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_synchronize", fn.synchronize, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_kl_div", fn.kl_div, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_workspace", fn.patch_embed_workspace, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_forward", fn.patch_embed_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_backward", fn.patch_embed_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_workspace", fn.attention_workspace, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_forward", fn.attention_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_backward", fn.attention_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_bf16_forward", fn.attention_bf16_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_bf16_backward", fn.attention_bf16_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_cast_bf16", fn.cast_bf16, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_cast_f32", fn.cast_f32, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_linear_forward", fn.linear_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_linear_backward", fn.linear_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_linear_bf16_forward", fn.linear_bf16_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_linear_bf16_backward", fn.linear_bf16_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_layernorm_workspace", fn.layernorm_workspace, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_layernorm_forward", fn.layernorm_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_layernorm_backward", fn.layernorm_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_layernorm_forward_bf16", fn.layernorm_forward_bf16, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_gelu_forward", fn.gelu_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_gelu_backward", fn.gelu_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_gelu_forward_bf16", fn.gelu_forward_bf16, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_gelu_backward_bf16", fn.gelu_backward_bf16, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_cross_entropy", fn.cross_entropy, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_cross_entropy_soft", fn.cross_entropy_soft, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_argmax", fn.argmax, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_sum_squares", fn.sum_squares, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_clip_scale", fn.clip_scale, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_adamw", fn.adamw, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_token_rows_forward", fn.token_rows_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_token_rows_backward", fn.token_rows_backward, impl_path, err, errlen);
    if (!ok) {
        dlclose(lib);
        return nullptr;
    }
    fn.threads = reinterpret_cast<int (*)()>(dlsym(lib, "d4j_impl_threads"));
    fn.malloc = reinterpret_cast<void *(*)(size_t)>(dlsym(lib, "d4j_impl_malloc"));
    fn.free = reinterpret_cast<int (*)(void *)>(dlsym(lib, "d4j_impl_free"));
    if ((fn.malloc == nullptr) != (fn.free == nullptr)) {
        write_error(err, errlen, "%s exports only one of d4j_impl_malloc and d4j_impl_free%s", impl_path, "");
        dlclose(lib);
        return nullptr;
    }
    // Optional entries, found or not (no error: dlsym(NULL) is how a library says it has none of them).
    fn.stream_create = reinterpret_cast<int (*)(void **)>(dlsym(lib, "d4j_impl_stream_create"));
    fn.stream_destroy = reinterpret_cast<int (*)(void *)>(dlsym(lib, "d4j_impl_stream_destroy"));
    fn.zero_async = reinterpret_cast<int (*)(void *, void *, size_t)>(dlsym(lib, "d4j_impl_zero_async"));
    fn.copy_async = reinterpret_cast<int (*)(void *, void *, const void *, size_t)>(dlsym(lib, "d4j_impl_copy_async"));
    fn.graph_begin = reinterpret_cast<int (*)(void *)>(dlsym(lib, "d4j_impl_graph_begin"));
    fn.graph_end = reinterpret_cast<int (*)(void *, void **)>(dlsym(lib, "d4j_impl_graph_end"));
    fn.graph_launch = reinterpret_cast<int (*)(void *, void *)>(dlsym(lib, "d4j_impl_graph_launch"));
    fn.graph_destroy = reinterpret_cast<int (*)(void *)>(dlsym(lib, "d4j_impl_graph_destroy"));
    const int streams = (fn.stream_create != nullptr) + (fn.stream_destroy != nullptr) + (fn.zero_async != nullptr) +
                        (fn.copy_async != nullptr) + (fn.graph_begin != nullptr) + (fn.graph_end != nullptr) +
                        (fn.graph_launch != nullptr) + (fn.graph_destroy != nullptr);
    if (streams != 0 && streams != 8) {
        write_error(err, errlen, "%s exports only some of the stream and graph entries (d4j_impl_stream_create, "
                    "..., d4j_impl_graph_destroy)%s", impl_path, "");
        dlclose(lib);
        return nullptr;
    }
    if (fn.init(device) != 0) {
        write_error(err, errlen, "%s", fn.last_error(), "");
        dlclose(lib);
        return nullptr;
    }
    d4j_backend *backend = new (std::nothrow) d4j_backend{lib, fn, device};
    if (backend == nullptr) {
        write_error(err, errlen, "%s%s", "out of host memory", "");
        dlclose(lib);
    }
    return backend;
}

void d4j_backend_close(d4j_backend *backend) {
    if (backend == nullptr) return;
    // The library stays mapped: a CUDA library may have registered fat binaries and atexit handlers with the
    // runtime, and unmapping it under them crashes at exit. The handle count keeps it alive; that is intended.
    delete backend;
}

const char *d4j_backend_last_error(d4j_backend *backend) {
    if (no_streams_error != nullptr) {
        const char *e = no_streams_error;
        no_streams_error = nullptr;
        return e;
    }
    return backend != nullptr ? backend->fn.last_error() : "no backend";
}

int d4j_backend_has_streams(d4j_backend *backend) { return backend->fn.graph_begin != nullptr ? 1 : 0; }

int d4j_stream_create(d4j_backend *backend, void **stream) {
    *stream = nullptr;
    if (backend->fn.stream_create == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.stream_create(stream);
}

int d4j_stream_destroy(d4j_backend *backend, void *stream) {
    if (backend->fn.stream_destroy == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.stream_destroy(stream);
}

int d4j_zero_async(d4j_backend *backend, void *stream, void *ptr, size_t bytes) {
    if (backend->fn.zero_async == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.zero_async(stream, ptr, bytes);
}

int d4j_copy_async(d4j_backend *backend, void *stream, void *dst, const void *src, size_t bytes) {
    if (backend->fn.copy_async == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.copy_async(stream, dst, src, bytes);
}

int d4j_graph_begin(d4j_backend *backend, void *stream) {
    if (backend->fn.graph_begin == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.graph_begin(stream);
}

int d4j_graph_end(d4j_backend *backend, void *stream, void **graph) {
    *graph = nullptr;
    if (backend->fn.graph_end == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.graph_end(stream, graph);
}

int d4j_graph_launch(d4j_backend *backend, void *stream, void *graph) {
    if (backend->fn.graph_launch == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.graph_launch(stream, graph);
}

int d4j_graph_destroy(d4j_backend *backend, void *graph) {
    if (backend->fn.graph_destroy == nullptr) return no_streams();
    if (int e = use_device(backend)) return e;
    return backend->fn.graph_destroy(graph);
}

int d4j_synchronize(d4j_backend *backend, void *stream) {
    if (int e = use_device(backend)) return e;
    return backend->fn.synchronize(stream);
}

int d4j_backend_threads(d4j_backend *backend) {
    return backend != nullptr && backend->fn.threads != nullptr ? backend->fn.threads() : 1;
}

int d4j_probe_library(const char *name, char *err, int errlen) {
    if (dlopen(name, RTLD_NOW | RTLD_GLOBAL) != nullptr) return 0;
    const char *why = dlerror();
    write_error(err, errlen, "%s", why != nullptr ? why : name, "");
    return -1;
}

void *d4j_host_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;  // aligned_alloc wants a multiple of the alignment
    return std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
}

void d4j_host_free(void *ptr) { std::free(ptr); }

int d4j_backend_use_device(d4j_backend *backend) { return use_device(backend); }

void *d4j_backend_alloc(d4j_backend *backend, size_t bytes) {
    if (backend->fn.malloc == nullptr) return d4j_host_alloc(bytes);
    if (use_device(backend) != 0) return nullptr;
    return backend->fn.malloc(bytes == 0 ? 1 : bytes);
}

int d4j_backend_free(d4j_backend *backend, void *ptr) {
    if (backend->fn.free == nullptr) {
        d4j_host_free(ptr);
        return 0;
    }
    return backend->fn.free(ptr);
}

int d4j_kl_div(d4j_backend *backend, void *stream, const float *student, const float *teacher, int64_t B, int64_t C,
               float T, int reduction, int log_target, float loss_scale, const float *grad_out, float *row_loss,
               float *loss, float *grad) {
    if (int e = use_device(backend)) return e;
    return backend->fn.kl_div(stream, student, teacher, B, C, T, reduction, log_target, loss_scale, grad_out,
                              row_loss, loss, grad);
}

int64_t d4j_patch_embed_workspace(d4j_backend *backend, int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t P,
                                  int64_t D) {
    return backend->fn.patch_embed_workspace(B, Cin, H, W, P, D);
}

int d4j_patch_embed_forward(d4j_backend *backend, void *stream, const float *images, int64_t B, int64_t Cin, int64_t H,
                            int64_t W, int64_t P, int64_t D, const float *weight, const float *bias, const float *pos,
                            const float *cls, const float *dist, float *tokens, void *workspace) {
    if (int e = use_device(backend)) return e;
    return backend->fn.patch_embed_forward(stream, images, B, Cin, H, W, P, D, weight, bias, pos, cls, dist, tokens,
                                           workspace);
}

int d4j_patch_embed_backward(d4j_backend *backend, void *stream, const float *images, int64_t B, int64_t Cin,
                             int64_t H, int64_t W, int64_t P, int64_t D, const float *weight, const float *dtokens,
                             float *dweight, float *dbias, float *dpos, float *dcls, float *ddist, float *dimages,
                             void *workspace) {
    if (int e = use_device(backend)) return e;
    return backend->fn.patch_embed_backward(stream, images, B, Cin, H, W, P, D, weight, dtokens, dweight, dbias, dpos,
                                            dcls, ddist, dimages, workspace);
}

int64_t d4j_attention_workspace(d4j_backend *backend, int64_t B, int64_t N, int64_t H, int64_t Dh) {
    return backend->fn.attention_workspace(B, N, H, Dh);
}

int d4j_attention_forward(d4j_backend *backend, void *stream, const float *qkv, int64_t B, int64_t N, int64_t H,
                          int64_t Dh, float scale, float *out, float *lse, void *workspace) {
    if (int e = use_device(backend)) return e;
    return backend->fn.attention_forward(stream, qkv, B, N, H, Dh, scale, out, lse, workspace);
}

int d4j_attention_backward(d4j_backend *backend, void *stream, const float *qkv, const float *out, const float *lse,
                           const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh, float scale, float *dqkv,
                           void *workspace) {
    if (int e = use_device(backend)) return e;
    return backend->fn.attention_backward(stream, qkv, out, lse, dout, B, N, H, Dh, scale, dqkv, workspace);
}

int d4j_attention_bf16_forward(d4j_backend *backend, void *stream, const uint16_t *qkv, int64_t B, int64_t N,
                               int64_t H, int64_t Dh, float scale, uint16_t *out, float *lse) {
    if (int e = use_device(backend)) return e;
    return backend->fn.attention_bf16_forward(stream, qkv, B, N, H, Dh, scale, out, lse);
}

int d4j_attention_bf16_backward(d4j_backend *backend, void *stream, const uint16_t *qkv, const uint16_t *out,
                                const float *lse, const uint16_t *dout, int64_t B, int64_t N, int64_t H, int64_t Dh,
                                float scale, uint16_t *dqkv) {
    if (int e = use_device(backend)) return e;
    return backend->fn.attention_bf16_backward(stream, qkv, out, lse, dout, B, N, H, Dh, scale, dqkv);
}

int d4j_cast_bf16(d4j_backend *backend, void *stream, const float *x, int64_t n, uint16_t *y) {
    if (int e = use_device(backend)) return e;
    return backend->fn.cast_bf16(stream, x, n, y);
}

int d4j_cast_f32(d4j_backend *backend, void *stream, const uint16_t *x, int64_t n, float *y) {
    if (int e = use_device(backend)) return e;
    return backend->fn.cast_f32(stream, x, n, y);
}

int d4j_linear_forward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, const float *residual, int64_t M, int64_t K, int64_t N, float *y, int precision) {
    if (int e = use_device(backend)) return e;
    return backend->fn.linear_forward(stream, x, weight, bias, residual, M, K, N, y, precision);
}

int d4j_linear_backward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *dy, int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias, int precision) {
    if (int e = use_device(backend)) return e;
    return backend->fn.linear_backward(stream, x, weight, dy, M, K, N, dx, dweight, dbias, precision);
}

int d4j_linear_bf16_forward(d4j_backend *backend, void *stream, const uint16_t *x, const uint16_t *weight, const float *bias, const float *residual, int64_t M, int64_t K, int64_t N, float *y) {
    if (int e = use_device(backend)) return e;
    return backend->fn.linear_bf16_forward(stream, x, weight, bias, residual, M, K, N, y);
}

int d4j_linear_bf16_backward(d4j_backend *backend, void *stream, const uint16_t *x, const uint16_t *weight, const uint16_t *dy, int64_t M, int64_t K, int64_t N, float *dx, float *dweight, float *dbias) {
    if (int e = use_device(backend)) return e;
    return backend->fn.linear_bf16_backward(stream, x, weight, dy, M, K, N, dx, dweight, dbias);
}

int64_t d4j_layernorm_workspace(d4j_backend *backend, int64_t M, int64_t C) {
    return backend->fn.layernorm_workspace(M, C);
}

int d4j_layernorm_forward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, int64_t M, int64_t C, float eps, float *y, float *mean, float *rstd) {
    if (int e = use_device(backend)) return e;
    return backend->fn.layernorm_forward(stream, x, weight, bias, M, C, eps, y, mean, rstd);
}

int d4j_layernorm_backward(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *mean, const float *rstd, const float *dy, int64_t M, int64_t C, float *dx, float *dweight, float *dbias, void *workspace) {
    if (int e = use_device(backend)) return e;
    return backend->fn.layernorm_backward(stream, x, weight, mean, rstd, dy, M, C, dx, dweight, dbias, workspace);
}

int d4j_layernorm_forward_bf16(d4j_backend *backend, void *stream, const float *x, const float *weight, const float *bias, int64_t M, int64_t C, float eps, uint16_t *y, float *mean, float *rstd) {
    if (int e = use_device(backend)) return e;
    return backend->fn.layernorm_forward_bf16(stream, x, weight, bias, M, C, eps, y, mean, rstd);
}

int d4j_gelu_forward(d4j_backend *backend, void *stream, const float *x, int64_t n, float *y) {
    if (int e = use_device(backend)) return e;
    return backend->fn.gelu_forward(stream, x, n, y);
}

int d4j_gelu_backward(d4j_backend *backend, void *stream, const float *x, const float *dy, int64_t n, float *dx) {
    if (int e = use_device(backend)) return e;
    return backend->fn.gelu_backward(stream, x, dy, n, dx);
}

int d4j_gelu_forward_bf16(d4j_backend *backend, void *stream, const float *x, int64_t n, uint16_t *y) {
    if (int e = use_device(backend)) return e;
    return backend->fn.gelu_forward_bf16(stream, x, n, y);
}

int d4j_gelu_backward_bf16(d4j_backend *backend, void *stream, const float *x, const float *dy, int64_t n, uint16_t *dx) {
    if (int e = use_device(backend)) return e;
    return backend->fn.gelu_backward_bf16(stream, x, dy, n, dx);
}

int d4j_cross_entropy(d4j_backend *backend, void *stream, const float *logits, const int32_t *labels, int64_t B, int64_t C, float label_smoothing, float loss_scale, float *row_loss, float *loss, float *grad) {
    if (int e = use_device(backend)) return e;
    return backend->fn.cross_entropy(stream, logits, labels, B, C, label_smoothing, loss_scale, row_loss, loss, grad);
}

int d4j_cross_entropy_soft(d4j_backend *backend, void *stream, const float *logits, const float *targets, int64_t B, int64_t C, float label_smoothing, float loss_scale, float *row_loss, float *loss, float *grad) {
    if (int e = use_device(backend)) return e;
    return backend->fn.cross_entropy_soft(stream, logits, targets, B, C, label_smoothing, loss_scale, row_loss, loss, grad);
}

int d4j_argmax(d4j_backend *backend, void *stream, const float *x, int64_t B, int64_t C, int32_t *index) {
    if (int e = use_device(backend)) return e;
    return backend->fn.argmax(stream, x, B, C, index);
}

int d4j_sum_squares(d4j_backend *backend, void *stream, const float *x, int64_t n, int accumulate, float *out) {
    if (int e = use_device(backend)) return e;
    return backend->fn.sum_squares(stream, x, n, accumulate, out);
}

int d4j_clip_scale(d4j_backend *backend, void *stream, const float *sumsq, float max_norm, float *norm, float *scale) {
    if (int e = use_device(backend)) return e;
    return backend->fn.clip_scale(stream, sumsq, max_norm, norm, scale);
}

int d4j_adamw(d4j_backend *backend, void *stream, float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step, const float *grad_scale) {
    if (int e = use_device(backend)) return e;
    return backend->fn.adamw(stream, param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
}

int d4j_token_rows_forward(d4j_backend *backend, void *stream, const float *tokens, int64_t B, int64_t T, int64_t D, int64_t prefix, float *rows) {
    if (int e = use_device(backend)) return e;
    return backend->fn.token_rows_forward(stream, tokens, B, T, D, prefix, rows);
}

int d4j_token_rows_backward(d4j_backend *backend, void *stream, const float *drows, int64_t B, int64_t T, int64_t D, int64_t prefix, float *dtokens) {
    if (int e = use_device(backend)) return e;
    return backend->fn.token_rows_backward(stream, drows, B, T, D, prefix, dtokens);
}

}  // extern "C"
