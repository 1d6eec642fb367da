// The CPU implementation's housekeeping entries; the kernels live in one file per op.
#include "distill4j_impl.h"
#include "common.h"

#include <string>

namespace {
thread_local std::string last_error = "no error";
}

int d4j::cpu::fail(const char *message) {
    last_error = message;
    return 1;
}

D4J_IMPL_API int d4j_impl_init(int device) {
    return device == 0 ? 0 : d4j::cpu::fail("the cpu backend has one device, 0");
}

D4J_IMPL_API const char *d4j_impl_last_error(void) { return last_error.c_str(); }

D4J_IMPL_API int d4j_impl_synchronize(void *) { return 0; }
