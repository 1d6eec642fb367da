/*
 * Loads the shipped natives without Java and runs a kernel: the proof that they work on an older Linux
 * (tests/old-glibc/run.sh builds and runs this inside Debian 11, glibc 2.31). Plain C, built by that system's gcc.
 *
 *   load_natives <natives dir>
 *
 * libdistill4j.so opens libdistill4j_cpu.so (libgomp.so.1 from the system: the bundled one needs glibc 2.34), which
 * computes a KL loss on an OpenMP thread team, checked against a float64 reference, and reports a bad argument
 * through its thread_local message (the C++ runtime linked into it). libjniDistill4jNative.so is opened (JNI_OnLoad
 * needs a JVM, so no call). libdistill4j_cuda.so is opened when present, libcudart.so.13 beside it; without a GPU
 * driver d4j_backend_open then fails in cudaSetDevice, after the library loaded, and its message is printed.
 * Exit 0 when every check passes, 1 otherwise.
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "distill4j.h"
#include "distill4j_impl.h"

static int failures = 0;

static void check(int ok, const char *what, const char *detail) {
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail[0] ? ": " : "", detail);
    if (!ok) failures++;
}

static void *open_library(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    check(lib != NULL, name, lib != NULL ? "loaded" : dlerror());
    return lib;
}

/* KL(q || p) per row, p = softmax(s/T), q = softmax(t/T), times T^2, averaged over the rows (batchmean). */
static double kl_reference(const float *s, const float *t, int B, int C, double T) {
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        double ms = -INFINITY, mt = -INFINITY, zs = 0.0, zt = 0.0, row = 0.0;
        for (int c = 0; c < C; c++) {
            if (s[b * C + c] / T > ms) ms = s[b * C + c] / T;
            if (t[b * C + c] / T > mt) mt = t[b * C + c] / T;
        }
        for (int c = 0; c < C; c++) {
            zs += exp(s[b * C + c] / T - ms);
            zt += exp(t[b * C + c] / T - mt);
        }
        for (int c = 0; c < C; c++) {
            const double log_p = s[b * C + c] / T - ms - log(zs), log_q = t[b * C + c] / T - mt - log(zt);
            row += exp(log_q) * (log_q - log_p);
        }
        total += row * T * T;
    }
    return total / B;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: load_natives <natives dir>\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a crash */
    const char *dir = argv[1];
    void *dispatch = open_library(dir, "libdistill4j.so");
    if (dispatch == NULL) return 1;
    d4j_backend *(*backend_open)(const char *, int, char *, int) =
        (d4j_backend *(*)(const char *, int, char *, int))dlsym(dispatch, "d4j_backend_open");
    const char *(*last_error)(d4j_backend *) =
        (const char *(*)(d4j_backend *))dlsym(dispatch, "d4j_backend_last_error");
    int (*kl_div)(d4j_backend *, void *, const float *, const float *, int64_t, int64_t, float, int, int, float,
                  const float *, float *, float *, float *) =
        (int (*)(d4j_backend *, void *, const float *, const float *, int64_t, int64_t, float, int, int, float,
                 const float *, float *, float *, float *))dlsym(dispatch, "d4j_kl_div");
    check(backend_open != NULL && last_error != NULL && kl_div != NULL, "d4j_* entry points", "");
    if (failures) return 1;

    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/libdistill4j_cpu.so", dir);
    d4j_backend *cpu = backend_open(path, 0, err, sizeof err);
    check(cpu != NULL, "cpu backend", cpu != NULL ? "opened" : err);
    if (cpu != NULL) {
        enum { B = 64, C = 100 };
        static float s[B * C], t[B * C], row_loss[B], grad[B * C];
        for (int i = 0; i < B * C; i++) {
            s[i] = (float)sin(0.37 * i) * 3.0f;
            t[i] = (float)cos(0.11 * i) * 2.0f;
        }
        float loss = NAN;
        const int rc =
            kl_div(cpu, NULL, s, t, B, C, 2.0f, D4J_REDUCTION_BATCHMEAN, 0, 4.0f, NULL, row_loss, &loss, grad);
        const double ref = kl_reference(s, t, B, C, 2.0), err_rel = fabs(loss - ref) / fabs(ref);
        char detail[160];
        snprintf(detail, sizeof detail, "rc %d, loss %.7g, float64 reference %.7g, relative error %.2g", rc, loss, ref,
                 err_rel);
        check(rc == 0 && err_rel <= 1e-5, "cpu kl_div", detail); /* NaN fails the comparison */
        const int bad = kl_div(cpu, NULL, NULL, t, B, C, 2.0f, D4J_REDUCTION_BATCHMEAN, 0, 1.0f, NULL, row_loss, &loss,
                               grad);
        const char *message = last_error(cpu);
        check(bad != 0 && strstr(message, "kl_div") != NULL, "cpu kl_div refuses a null buffer", message);
        void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
        Dl_info where;
        if (gomp != NULL && dladdr(dlsym(gomp, "omp_get_max_threads"), &where) != 0)
            printf("info libgomp.so.1 in use: %s\n", where.dli_fname);
    }

    open_library(dir, "libjniDistill4jNative.so");

    snprintf(path, sizeof path, "%s/libdistill4j_cuda.so", dir);
    if (access(path, F_OK) == 0) {
        void *cuda = open_library(dir, "libdistill4j_cuda.so");
        if (cuda != NULL) {
            err[0] = '\0';
            d4j_backend *gpu = backend_open(path, 0, err, sizeof err);
            printf("info cuda backend: %s\n", gpu != NULL ? "opened (a GPU is present)" : err);
        }
    } else {
        printf("info libdistill4j_cuda.so not in %s (built without nvcc)\n", dir);
    }
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
