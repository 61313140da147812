// Just enough of CUDA to compile kernels/*.cu as plain C++ and run them on the host.
// A launch walks every block and every thread of the grid in turn; the kernels are grid-stride
// loops with no shared memory or barriers, so running threads one after another is exact.
//
// Flush-to-zero: CuPy compiles every kernel with -ftz=true, so on a GPU float32 arithmetic and
// comparisons treat subnormal inputs as zero and flush subnormal results to zero; float64 is
// exact. A launch with ftz set runs with the host FPU in the same mode (x86 MXCSR FTZ and DAZ,
// AArch64 FPCR.FZ), and the launcher sets it for float32 instances only.
#pragma once

// The low-precision compile (-DGPUNN_LOW_PRECISION) uses CUDA's own half types: g++ compiles the
// host paths of cuda_fp16.h and cuda_bf16.h (conversions round to nearest even, as on a GPU;
// all but __hfma have a host version, and the kernels use none of those intrinsics). They are
// included before the macros below: the headers define __global__, __device__, __host__ and
// __forceinline__ themselves (as nothing, or inline, outside nvcc), so the shim defines only
// those still missing.
#ifdef GPUNN_LOW_PRECISION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

// CUDA's device math functions (exp, log, sqrt, pow, floor, isnan, isfinite, nan) without a
// header, overloaded for float as in CUDA: C++'s <math.h> declares them in the global namespace
// with the float overloads of <cmath>, so exp(float) runs expf, not exp on a double.
#include <math.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#ifndef GPUNN_LOW_PRECISION  // else vector_types.h, which cuda_fp16.h includes, has CUDA's own
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
#endif

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#ifndef __global__
#define __global__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
// __restrict__ is a g++ keyword already.

// The host runs one thread at a time, so a plain read-add-write is exactly atomic; it returns
// the old value, as CUDA's does.
inline float atomicAdd(float* address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}
inline double atomicAdd(double* address, double value) {
    const double old = *address;
    *address = old + value;
    return old;
}

struct gpunn_flush_to_zero {
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved;
    explicit gpunn_flush_to_zero(bool on) : saved(_mm_getcsr()) {
        if (on) _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
    }
    ~gpunn_flush_to_zero() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
    unsigned long saved;
    explicit gpunn_flush_to_zero(bool on) {
        __asm__ volatile("mrs %0, fpcr" : "=r"(saved));
        if (on) __asm__ volatile("msr fpcr, %0" : : "r"(saved | (1ul << 24)));  // FZ
    }
    ~gpunn_flush_to_zero() { __asm__ volatile("msr fpcr, %0" : : "r"(saved)); }
#else
#error "the host kernel shim needs x86 or AArch64 to model CUDA's flush-to-zero"
#endif
};

template <typename Kernel>
void gpunn_host_launch(unsigned grid, unsigned block, bool ftz, Kernel kernel) {
    gpunn_flush_to_zero mode(ftz);
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        for (unsigned t = 0; t < block; ++t) {
            threadIdx.x = t;
            kernel();
        }
    }
}
