// What every kernel file shares: the grid-stride loop and the tally's layout.
// gpunn/backend/kernels.py pastes this file in where a kernel file includes it, so NVRTC and
// CuPy compile one self-contained source; the host build finds it on its include path.
#ifndef GPUNN_COMMON_CUH
#define GPUNN_COMMON_CUH

// The float16 and bfloat16 instances are a second compile of the same files with
// -DGPUNN_LOW_PRECISION (gpunn/backend/kernels.py: LOW_PRECISION_OPTIONS), so the float32 and
// float64 kernels never need CUDA's half-precision headers.
#ifdef GPUNN_LOW_PRECISION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

// for i in range(first index of this thread, n, threads in the grid), with 64-bit indices, so
// any launch geometry covers any size, including 0 and more than 2^31 elements.
#define GPUNN_GRID_STRIDE_LOOP(i, n)                                                    \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (long long)blockDim.x * gridDim.x)

// The slots of the tally, a float64 device array a training step keeps its metrics in; the same
// numbers as TALLY_* in gpunn/backend/kernels.py (a test compares them).
enum GpunnTally {
    TALLY_LOSS = 0,        // sum of per-sample data losses
    TALLY_CORRECT = 1,     // number of correct predictions
    TALLY_NONFINITE = 2,   // non-finite losses seen, or overflow at the smallest scale (divergence)
    TALLY_SKIPPED = 3,     // steps skipped for gradients with an inf or NaN
    TALLY_ITERATIONS = 4,  // optimizer steps done
    TALLY_SCALE = 5,       // the loss scale, a float32 value
    TALLY_GOOD_STEPS = 6,  // steps since the scale last changed (GradScaler's growth tracker)
    TALLY_FOUND_INF = 7,   // this step's gradients held an inf or NaN (set by unscale)
    TALLY_SIZE = 8
};

// The type a kernel over T computes in: T itself for float and double; float for the half types,
// whose values are converted to float, combined there and rounded once to T on the store (what
// NumPy does with x.astype(float32) ... .astype(float16)). The float steps (adds, multiplies,
// comparisons, floor) are those of the NumPy twin, and none is an a * b + c, so NVRTC's
// --fmad=true has nothing to contract: a GPU, the host build (g++ -ffp-contract=off) and the
// twin agree bit for bit without --fmad=false.
template <typename T>
struct GpunnAccum {
    typedef T type;
};
#ifdef GPUNN_LOW_PRECISION
template <>
struct GpunnAccum<__half> {
    typedef float type;
};
template <>
struct GpunnAccum<__nv_bfloat16> {
    typedef float type;
};
#endif
template <typename T>
using Accum = typename GpunnAccum<T>::type;

#endif  // GPUNN_COMMON_CUH
