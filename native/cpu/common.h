// Shared by the CPU kernels: the error slot behind d4j_impl_last_error.
#ifndef D4J_CPU_COMMON_H
#define D4J_CPU_COMMON_H

namespace d4j::cpu {
// Records a message for d4j_impl_last_error on this thread and returns the nonzero error code.
int fail(const char *message);
}  // namespace d4j::cpu
#endif
