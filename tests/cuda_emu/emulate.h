// Compiles kernels/metad2a.cu as plain C++ with one thread per block, so the kernels' logic can
// be tested against the CPU implementation on machines without a GPU (tests/cuda_emulated.rs).
// Every block-cooperative loop in the kernels is written `for (i = threadIdx.x; ...; i +=
// blockDim.x)` with __syncthreads() between phases, which one thread runs correctly.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#define METAD2A_EMULATE 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct EmuDim3 {
    unsigned x, y, z;
};
static EmuDim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1},
               gridDim = {1, 1, 1};
static float* emu_shared = nullptr;
#define DYN_SHARED(name) float* name = emu_shared

inline void __syncthreads() {}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __int_as_float(unsigned i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
