// gpunn dropout: the inverted-dropout mask and the masked inputs in one pass.
//
// A template over the element type (float, double; __half and __nv_bfloat16 in the
// low-precision compile, computed in float: Accum<T> in common.cuh) with a 64-bit grid-stride
// loop. Arrays are
// C-contiguous (the caller makes them so); mask may alias u and y may alias x.
// The NumPy twin is NumpyBackend.dropout in gpunn/backend/numpy_backend.py.

#include "common.cuh"

// For uniform samples u in [0, 1) and keep = 1 - rate, as gpunn.layers.Dropout.forward does
// it in NumPy (u + keep and the product with 1 / keep rounded to T):
//   mask = np.floor(u + keep) * (1 / keep); y = x * mask
// floor(u + keep) is 1 with probability keep, else 0: a Bernoulli mask from one uniform draw.
// For half-precision x the uniforms are float32 draws (CuPy draws no bfloat16), the mask is
// rounded to T and y is x times that rounded mask, so the backward pass (dvalues * mask)
// scales by the same factor as the forward.
template <typename T>
__global__ void dropout(const T* x, const Accum<T>* u, T* mask, T* y, long long n,
                        double keep) {
    typedef Accum<T> A;
    const A shift = A(keep), scale = A(1.0 / keep);
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T m = T(floor(u[i] + shift) * scale);
        mask[i] = m;
        y[i] = T(A(x[i]) * A(m));
    }
}
