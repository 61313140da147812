// Just enough of CUDA to compile kernels/*.cu as plain C++ and run them on the host.
// A launch walks every block and every thread of the grid in turn; the kernels are grid-stride
// loops with no shared memory or barriers, so running threads one after another is exact.
#pragma once

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a g++ keyword already.

template <typename Kernel>
void gpunn_host_launch(unsigned grid, unsigned block, Kernel kernel) {
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
