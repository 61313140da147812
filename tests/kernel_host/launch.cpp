// C entry points that run each kernel of kernels/elementwise.cu on the host, for ctypes.
// Built by tests/kernel_host/__init__.py: g++ -include shim.h -I kernels launch.cpp.
#include "elementwise.cu"

#define GPUNN_HOST_KERNELS(T)                                                                  \
    extern "C" void relu_##T(unsigned grid, unsigned block, const T* x, T* y, long long n) {  \
        gpunn_host_launch(grid, block, [&] { relu<T>(x, y, n); });                             \
    }                                                                                          \
    extern "C" void relu_backward_##T(unsigned grid, unsigned block, const T* dy, const T* x, \
                                      T* dx, long long n) {                                    \
        gpunn_host_launch(grid, block, [&] { relu_backward<T>(dy, x, dx, n); });              \
    }                                                                                          \
    extern "C" void bias_add_##T(unsigned grid, unsigned block, const T* x, const T* b, T* y, \
                                 long long n, long long cols) {                                \
        gpunn_host_launch(grid, block, [&] { bias_add<T>(x, b, y, n, cols); });               \
    }                                                                                          \
    extern "C" void bias_relu_##T(unsigned grid, unsigned block, const T* x, const T* b,      \
                                  T* y, long long n, long long cols) {                         \
        gpunn_host_launch(grid, block, [&] { bias_relu<T>(x, b, y, n, cols); });              \
    }

GPUNN_HOST_KERNELS(float)
GPUNN_HOST_KERNELS(double)
