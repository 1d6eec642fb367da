// NVIDIA's own host implementation of __float2bfloat16_rn (cuda_bf16.hpp, the path for code that is not
// compiled for sm_80 or later), in a translation unit of its own: the emulator's __nv_bfloat16 has the same name.
// tensor_core_emu compares the emulator's conversion with it bit for bit when CMake finds the header.
#include <cuda_bf16.h>

#include <cstdint>

uint16_t nvidia_float2bfloat16_rn(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
