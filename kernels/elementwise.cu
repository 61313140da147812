// gpunn elementwise kernels: ReLU forward and backward, bias add, and fused bias + ReLU.
//
// Each kernel is a template over the element type (float, double) and walks its data with a
// grid-stride loop and 64-bit indices, so any launch geometry covers any size, including 0 and
// arrays of more than 2^31 elements. Arrays are C-contiguous; the caller makes them so.
// The output may alias an input (in-place use): each element is read before it is written.
// The NumPy twin of each kernel lives in gpunn/backend/numpy_backend.py and tests compare them.

#include "common.cuh"

// y = np.maximum(x, 0): NaN propagates, as in NumPy.
template <typename T>
__global__ void relu(const T* x, T* y, long long n) {
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        y[i] = v < T(0) ? T(0) : v;
    }
}

// dx = dy where x > 0 else 0 (the book: dinputs[inputs <= 0] = 0; a NaN input passes dy).
template <typename T>
__global__ void relu_backward(const T* dy, const T* x, T* dx, long long n) {
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        dx[i] = x[i] <= T(0) ? T(0) : dy[i];
    }
}

// y = x + b for x of shape (n / cols, cols) and b of shape (cols,): the bias row broadcast.
template <typename T>
__global__ void bias_add(const T* x, const T* __restrict__ b, T* y, long long n, long long cols) {
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        y[i] = x[i] + b[i % cols];
    }
}

// y = np.maximum(x + b, 0), in one pass over memory instead of two.
template <typename T>
__global__ void bias_relu(const T* x, const T* __restrict__ b, T* y, long long n, long long cols) {
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T v = x[i] + b[i % cols];
        y[i] = v < T(0) ? T(0) : v;
    }
}
