// gpunn's kernels compiled for the CPU: the fast path of the CPU backend (gpunn/backend/host.py).
//
// The kernel files the GPU runs (elementwise.cu, softmax_ce.cu, optimizers.cu) are compiled here
// by the system's C++ compiler, with a few definitions that make a kernel a plain function: its
// grid-stride loop becomes `for i in range(n)`, which the compiler vectorizes. Each entry point
// splits its work into contiguous chunks over OpenMP threads, as many as NumPy's BLAS uses at
// that moment (so the elementwise work and the matrix products share the same cores, and an
// mpiexec rank limited to its share keeps to it), and stays on one thread when the work is too
// small to pay for waking another.
//
// Compiled with -ffp-contract=off and without -ffast-math, every float operation is the NumPy
// twin's, in the same order: results are equal bit for bit. softmax_ce's exp and log are the C
// library's, within an ulp of NumPy's. Unlike CuPy's compile, no flush-to-zero: NumPy keeps
// subnormals, and so does this.

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#else  // a compiler without OpenMP: one thread (gpunn info says so)
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

#define __global__ inline
#define __device__
#define __forceinline__ inline
struct gpunn_dim3 {
    unsigned x;
};
static const gpunn_dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
// Each thread adds into a tally of its own (gpunn_softmax_ce), so a plain add is exact.
static inline double atomicAdd(double* address, double value) {
    const double old = *address;
    *address = old + value;
    return old;
}

#include "common.cuh"
// One "thread" runs the whole range it is given: a plain loop the compiler can vectorize.
#undef GPUNN_GRID_STRIDE_LOOP
#define GPUNN_GRID_STRIDE_LOOP(i, n) for (long long i = 0; i < (n); ++i)

#include "elementwise.cu"
#include "optimizers.cu"
#include "softmax_ce.cu"

// ---- threads -----------------------------------------------------------------------------------

// How many threads NumPy's BLAS uses now (openblas_get_num_threads, found by gpunn/backend/host.py);
// without it, OpenMP's own setting (OMP_NUM_THREADS); at most GPUNN_HOST_THREADS.
typedef int (*gpunn_thread_count)(void);
static gpunn_thread_count gpunn_blas_threads = 0;

static int gpunn_max_threads = 1 << 30;  // GPUNN_HOST_THREADS, when set

extern "C" void gpunn_host_set_thread_source(void* function, int max_threads) {
    gpunn_blas_threads = (gpunn_thread_count)function;
    gpunn_max_threads = max_threads > 0 ? max_threads : 1 << 30;
}

extern "C" int gpunn_host_threads(void) {
#ifdef _OPENMP
    int threads = gpunn_blas_threads ? gpunn_blas_threads() : omp_get_max_threads();
    if (threads > gpunn_max_threads) threads = gpunn_max_threads;
    return threads < 1 ? 1 : threads;
#else
    return 1;
#endif
}

// Below this many elements a second thread costs more to wake than it saves.
static const long long GRAIN = 32768;
// softmax_ce keeps a partial tally per thread on the stack.
#define GPUNN_MAX_THREADS 64

// work(first, last) over [0, n) in contiguous chunks, one per thread; chunk edges fall on
// multiples of `align` (a cache line of elements, or a row).
template <typename Work>
static void gpunn_chunks(long long n, long long cost_per_item, long long align, Work work) {
    long long threads = gpunn_host_threads();
    if (threads > GPUNN_MAX_THREADS) threads = GPUNN_MAX_THREADS;
    if (threads > n * cost_per_item / GRAIN) threads = n * cost_per_item / GRAIN;
    if (threads <= 1) {
        work(0LL, n);
        return;
    }
#pragma omp parallel num_threads((int)threads)
    {
        const long long t = omp_get_thread_num(), k = omp_get_num_threads();
        long long first = n * t / k / align * align, last = n * (t + 1) / k / align * align;
        if (t == k - 1) last = n;
        if (first < last) work(first, last);
    }
}

// ---- entry points, one per op and dtype (suffix f32 or f64) -----------------------------------

#define GPUNN_ELEMENTWISE(T, S)                                                                  \
    extern "C" void gpunn_relu_##S(const T* x, T* y, long long n) {                              \
        gpunn_chunks(n, 1, 16, [&](long long a, long long b) { relu<T>(x + a, y + a, b - a); }); \
    }                                                                                            \
    extern "C" void gpunn_relu_backward_##S(const T* dy, const T* x, T* dx, long long n) {       \
        gpunn_chunks(n, 1, 16, [&](long long a, long long b) {                                   \
            relu_backward<T>(dy + a, x + a, dx + a, b - a);                                      \
        });                                                                                      \
    }                                                                                            \
    /* y = x + b, row by row: the kernel's b[i % cols] as a loop over one row at a time */       \
    extern "C" void gpunn_bias_add_##S(const T* x, const T* b, T* y, long long rows,             \
                                       long long cols) {                                         \
        gpunn_chunks(rows, cols, 1, [&](long long a, long long z) {                              \
            for (long long r = a; r < z; ++r) {                                                  \
                const T* xr = x + r * cols;                                                      \
                T* yr = y + r * cols;                                                            \
                for (long long j = 0; j < cols; ++j) yr[j] = xr[j] + b[j];                       \
            }                                                                                    \
        });                                                                                      \
    }                                                                                            \
    extern "C" void gpunn_bias_relu_##S(const T* x, const T* b, T* y, long long rows,            \
                                        long long cols) {                                        \
        gpunn_chunks(rows, cols, 1, [&](long long a, long long z) {                              \
            for (long long r = a; r < z; ++r) {                                                  \
                const T* xr = x + r * cols;                                                      \
                T* yr = y + r * cols;                                                            \
                for (long long j = 0; j < cols; ++j) {                                           \
                    const T v = xr[j] + b[j];                                                    \
                    yr[j] = v < T(0) ? T(0) : v;                                                 \
                }                                                                                \
            }                                                                                    \
        });                                                                                      \
    }

GPUNN_ELEMENTWISE(float, f32)
GPUNN_ELEMENTWISE(double, f64)

// The optimizer kernels over chunks of the flat buffers; `tally` is read only (the step count and
// the divergence flags).
#define GPUNN_OPTIMIZERS(T, S)                                                                   \
    extern "C" void gpunn_sgd_##S(T* p, const T* g, long long n, double lr, double decay,        \
                                  const double* tally) {                                         \
        gpunn_chunks(n, 1, 16, [&](long long a, long long b) {                                   \
            sgd<T>(p + a, g + a, b - a, lr, decay, tally);                                       \
        });                                                                                      \
    }                                                                                            \
    extern "C" void gpunn_sgd_momentum_##S(T* p, const T* g, T* m, long long n, double lr,       \
                                           double decay, double momentum,                        \
                                           const double* tally) {                                \
        gpunn_chunks(n, 1, 16, [&](long long a, long long b) {                                   \
            sgd_momentum<T>(p + a, g + a, m + a, b - a, lr, decay, momentum, tally);             \
        });                                                                                      \
    }                                                                                            \
    extern "C" void gpunn_adagrad_##S(T* p, const T* g, T* c, long long n, double lr,            \
                                      double decay, double epsilon, const double* tally) {       \
        gpunn_chunks(n, 4, 16, [&](long long a, long long b) {                                   \
            adagrad<T>(p + a, g + a, c + a, b - a, lr, decay, epsilon, tally);                   \
        });                                                                                      \
    }                                                                                            \
    extern "C" void gpunn_rmsprop_##S(T* p, const T* g, T* c, long long n, double lr,            \
                                      double decay, double rho, double epsilon,                  \
                                      const double* tally) {                                     \
        gpunn_chunks(n, 4, 16, [&](long long a, long long b) {                                   \
            rmsprop<T>(p + a, g + a, c + a, b - a, lr, decay, rho, epsilon, tally);              \
        });                                                                                      \
    }                                                                                            \
    extern "C" void gpunn_adam_##S(T* p, const T* g, T* m, T* v, long long n, double lr,         \
                                   double decay, double epsilon, double beta_1, double beta_2,   \
                                   const double* tally) {                                        \
        gpunn_chunks(n, 4, 16, [&](long long a, long long b) {                                   \
            adam<T>(p + a, g + a, m + a, v + a, b - a, lr, decay, epsilon, beta_1, beta_2,       \
                    tally);                                                                      \
        });                                                                                      \
    }

GPUNN_OPTIMIZERS(float, f32)
GPUNN_OPTIMIZERS(double, f64)

// softmax_ce over chunks of rows, each thread adding into a tally of its own; the partial tallies
// are then added in thread order, so a result does not depend on which thread finished first.
#define GPUNN_SOFTMAX_CE(T, S)                                                                   \
    extern "C" void gpunn_softmax_ce_##S(const T* logits, const long long* labels, T* probs,     \
                                         T* dlogits, double* tally, long long rows,              \
                                         long long cols, long long scale_rows) {                 \
        double partial[GPUNN_MAX_THREADS][TALLY_SIZE];                                                          \
        memset(partial, 0, sizeof partial);                                                      \
        gpunn_chunks(rows, 8 * cols, 1, [&](long long a, long long b) {                          \
            const int t = omp_get_thread_num();                                                  \
            softmax_ce<T>(logits + a * cols, labels + a, probs + a * cols, dlogits + a * cols,   \
                          partial[t], b - a, cols, scale_rows);                                  \
        });                                                                                      \
        for (int t = 0; t < GPUNN_MAX_THREADS; ++t)                                                             \
            for (int s = 0; s < TALLY_SIZE; ++s) tally[s] += partial[t][s];                      \
    }

GPUNN_SOFTMAX_CE(float, f32)
GPUNN_SOFTMAX_CE(double, f64)

// Whether every element of x is finite (no inf, no NaN): the exponent bits of each value, in one
// pass without the temporary array np.isfinite(x).all() makes.
extern "C" int gpunn_all_finite_f32(const uint32_t* x, long long n) {
    int bad = 0;
    gpunn_chunks(n, 1, 16, [&](long long a, long long b) {
        uint32_t found = 0;
        for (long long i = a; i < b; ++i) found |= (x[i] & 0x7f800000u) == 0x7f800000u;
#pragma omp atomic
        bad |= (int)found;
    });
    return !bad;
}

extern "C" int gpunn_all_finite_f64(const uint64_t* x, long long n) {
    int bad = 0;
    const uint64_t exponent = 0x7ff0000000000000ull;
    gpunn_chunks(n, 1, 16, [&](long long a, long long b) {
        uint64_t found = 0;
        for (long long i = a; i < b; ++i) found |= (x[i] & exponent) == exponent;
#pragma omp atomic
        bad |= (int)found;
    });
    return !bad;
}
