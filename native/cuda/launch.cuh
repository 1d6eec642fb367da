// Host-side helpers shared by the .cu files: error slot, launch checks, group reductions used by several ops.
#ifndef D4J_CUDA_LAUNCH_CUH
#define D4J_CUDA_LAUNCH_CUH

namespace d4j::cuda {
// Records a message for d4j_impl_last_error on this thread and returns the nonzero error code.
int fail(const char *message);
// 0 if the last launch succeeded, else records "what: <cuda error>" and returns 1.
int check_launch(const char *what);
}  // namespace d4j::cuda

#endif
