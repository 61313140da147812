// gpunn elementwise kernels: ReLU forward and backward, bias add, and fused bias + ReLU.
//
// Each kernel is a template over the element type (float, double; __half and __nv_bfloat16 in
// the low-precision compile, computed in float: Accum<T> in common.cuh) and walks its data with a
// grid-stride loop and 64-bit indices, so any launch geometry covers any size, including 0 and
// arrays of more than 2^31 elements. Arrays are C-contiguous; the caller makes them so.
// The output may alias an input (in-place use): each element is read before it is written.
// The NumPy twin of each kernel lives in gpunn/backend/numpy_backend.py and tests compare them.

#include "common.cuh"

// y = np.maximum(x, 0): NaN propagates, as in NumPy.
template <typename T>
__global__ void relu(const T* x, T* y, long long n) {
    typedef Accum<T> A;
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const A v = A(x[i]);
        y[i] = T(v < A(0) ? A(0) : v);
    }
}

// dx = dy where x > 0 else 0 (the book: dinputs[inputs <= 0] = 0; a NaN input passes dy).
template <typename T>
__global__ void relu_backward(const T* dy, const T* x, T* dx, long long n) {
    typedef Accum<T> A;
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        dx[i] = A(x[i]) <= A(0) ? T(A(0)) : dy[i];
    }
}

// y = x + b for x of shape (n / cols, cols) and b of shape (cols,): the bias row broadcast.
// The biases are in the type the kernel computes in: for half-precision x, the float32 master
// biases, added in float and the sum rounded once.
template <typename T>
__global__ void bias_add(const T* x, const Accum<T>* __restrict__ b, T* y, long long n,
                         long long cols) {
    typedef Accum<T> A;
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        y[i] = T(A(x[i]) + b[i % cols]);
    }
}

// y = np.maximum(x + b, 0), in one pass over memory instead of two.
template <typename T>
__global__ void bias_relu(const T* x, const Accum<T>* __restrict__ b, T* y, long long n,
                          long long cols) {
    typedef Accum<T> A;
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const A v = A(x[i]) + b[i % cols];
        y[i] = T(v < A(0) ? A(0) : v);
    }
}
