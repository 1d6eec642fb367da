// The CPU implementation's housekeeping entries; the kernels live in one file per op.
#include "distill4j_impl.h"
#include "common.h"

#include <dlfcn.h>
#include <string>

namespace {
thread_local std::string last_error = "no error";
d4j::cpu::sgemm_fn blas_sgemm = nullptr;
int (*blas_get_num_threads)() = nullptr;

// RTLD_NOLOAD: only a library already in the process (the preset's). The preset's nolapack build first.
d4j::cpu::sgemm_fn find_sgemm() {
    for (const char *soname : {"libopenblas_nolapack.so.0", "libopenblas.so.0"}) {
        if (void *lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD)) {
            if (void *f = dlsym(lib, "cblas_sgemm")) {
                blas_get_num_threads = reinterpret_cast<int (*)()>(dlsym(lib, "openblas_get_num_threads"));
                return reinterpret_cast<d4j::cpu::sgemm_fn>(f);
            }
        }
    }
    return nullptr;
}
}  // namespace

namespace {
bool blas_single_threaded() {
    if (blas_sgemm == nullptr) blas_sgemm = find_sgemm();
#ifdef _OPENMP
    return blas_get_num_threads != nullptr && blas_get_num_threads() == 1;
#else
    return false;
#endif
}
}  // namespace

int d4j::cpu::gemm_workers() { return blas_single_threaded() ? team() : 1; }

int d4j::cpu::gemm_max_workers() { return blas_single_threaded() ? threads() : 1; }

d4j::cpu::sgemm_fn d4j::cpu::sgemm() {
    if (blas_sgemm == nullptr) blas_sgemm = find_sgemm();
    if (blas_sgemm == nullptr) {
        fail("OpenBLAS is not loaded (libopenblas_nolapack.so.0 or libopenblas.so.0): the Java CpuBackend loads it "
             "through org.bytedeco:openblas; a native program must dlopen it before the first GEMM");
    }
    return blas_sgemm;
}

int d4j::cpu::fail(const char *message) {
    last_error = message;
    return 1;
}

D4J_IMPL_API int d4j_impl_init(int device) {
    return device == 0 ? 0 : d4j::cpu::fail("the cpu backend has one device, 0");
}

// One device, nothing per thread to set.
D4J_IMPL_API int d4j_impl_set_device(int device) {
    return device == 0 ? 0 : d4j::cpu::fail("the cpu backend has one device, 0");
}

D4J_IMPL_API const char *d4j_impl_last_error(void) { return last_error.c_str(); }

D4J_IMPL_API int d4j_impl_synchronize(void *) { return 0; }
