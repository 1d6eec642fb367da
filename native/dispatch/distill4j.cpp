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
};

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
              resolve(lib, "d4j_impl_last_error", fn.last_error, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_synchronize", fn.synchronize, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_kl_div", fn.kl_div, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_workspace", fn.patch_embed_workspace, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_forward", fn.patch_embed_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_patch_embed_backward", fn.patch_embed_backward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_workspace", fn.attention_workspace, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_forward", fn.attention_forward, impl_path, err, errlen) &&
              resolve(lib, "d4j_impl_attention_backward", fn.attention_backward, impl_path, err, errlen);
    if (!ok) {
        dlclose(lib);
        return nullptr;
    }
    if (fn.init(device) != 0) {
        write_error(err, errlen, "%s", fn.last_error(), "");
        dlclose(lib);
        return nullptr;
    }
    d4j_backend *backend = new (std::nothrow) d4j_backend{lib, fn};
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
    return backend != nullptr ? backend->fn.last_error() : "no backend";
}

int d4j_synchronize(d4j_backend *backend, void *stream) {
    return backend->fn.synchronize(stream);
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

int d4j_kl_div(d4j_backend *backend, void *stream, const float *student, const float *teacher, int64_t B, int64_t C,
               float T, int reduction, int log_target, float loss_scale, const float *grad_out, float *row_loss,
               float *loss, float *grad) {
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
    return backend->fn.patch_embed_forward(stream, images, B, Cin, H, W, P, D, weight, bias, pos, cls, dist, tokens,
                                           workspace);
}

int d4j_patch_embed_backward(d4j_backend *backend, void *stream, const float *images, int64_t B, int64_t Cin,
                             int64_t H, int64_t W, int64_t P, int64_t D, const float *weight, const float *dtokens,
                             float *dweight, float *dbias, float *dpos, float *dcls, float *ddist, float *dimages,
                             void *workspace) {
    return backend->fn.patch_embed_backward(stream, images, B, Cin, H, W, P, D, weight, dtokens, dweight, dbias, dpos,
                                            dcls, ddist, dimages, workspace);
}

int64_t d4j_attention_workspace(d4j_backend *backend, int64_t B, int64_t N, int64_t H, int64_t Dh) {
    return backend->fn.attention_workspace(B, N, H, Dh);
}

int d4j_attention_forward(d4j_backend *backend, void *stream, const float *qkv, int64_t B, int64_t N, int64_t H,
                          int64_t Dh, float scale, float *out, float *lse, void *workspace) {
    return backend->fn.attention_forward(stream, qkv, B, N, H, Dh, scale, out, lse, workspace);
}

int d4j_attention_backward(d4j_backend *backend, void *stream, const float *qkv, const float *out, const float *lse,
                           const float *dout, int64_t B, int64_t N, int64_t H, int64_t Dh, float scale, float *dqkv,
                           void *workspace) {
    return backend->fn.attention_backward(stream, qkv, out, lse, dout, B, N, H, Dh, scale, dqkv, workspace);
}

}  // extern "C"
