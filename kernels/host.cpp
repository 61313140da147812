// gpunn's kernels compiled for the CPU: the fast path of the CPU backend (gpunn/backend/host.py).
//
// The kernel files the GPU runs (elementwise.cu, softmax_ce.cu, optimizers.cu) are compiled here
// by the system's C++ compiler, with a few definitions that make a kernel a plain function: its
// grid-stride loop becomes `for i in range(n)`, which the compiler vectorizes. Each entry point
// splits its work into contiguous chunks over as many threads as NumPy's BLAS uses at that moment
// (so the elementwise work and the matrix products share the same cores, and an mpiexec rank
// limited to its share keeps to it), and stays on the calling thread when the work is too small
// to pay for waking another.
//
// Compiled with -ffp-contract=off and without -ffast-math, every float operation is the NumPy
// twin's, in the same order: results are equal bit for bit. softmax_ce's exp and log are the C
// library's, within an ulp of NumPy's. Unlike CuPy's compile, no flush-to-zero: NumPy keeps
// subnormals, and so does this.

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#define __global__ inline
#define __device__
#define __forceinline__ inline
struct gpunn_dim3 {
    unsigned x;
};
static const gpunn_dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
// Each chunk of rows adds into a tally of its own (gpunn_softmax_ce), so a plain add is exact.
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

// How many threads NumPy's BLAS uses now (openblas_get_num_threads, found by gpunn/backend/host.py),
// at most GPUNN_HOST_THREADS; without the BLAS's count, GPUNN_HOST_THREADS, else one.
typedef int (*gpunn_thread_count)(void);
static gpunn_thread_count gpunn_blas_threads = 0;

static int gpunn_max_threads = 0;  // GPUNN_HOST_THREADS; 0: not set
static const int GPUNN_MAX_THREADS = 64;

extern "C" void gpunn_host_set_thread_source(void* function, int max_threads) {
    gpunn_blas_threads = (gpunn_thread_count)function;
    gpunn_max_threads = max_threads > 0 ? max_threads : 0;
}

extern "C" int gpunn_host_threads(void) {
    int threads = gpunn_blas_threads ? gpunn_blas_threads() : gpunn_max_threads;
    if (gpunn_max_threads > 0 && threads > gpunn_max_threads) threads = gpunn_max_threads;
    if (threads > GPUNN_MAX_THREADS) threads = GPUNN_MAX_THREADS;
    return threads < 1 ? 1 : threads;
}

// A chunk is this much work (elements times a per-element cost): about 10 us on one core, less
// than it costs to wake a sleeping thread, so an op of one chunk never wakes one.
static const long long GRAIN = 16384;

// The workers that help the calling thread. They sleep on a condition variable between ops: an
// OpenMP worker spins after each region (libgomp's default), and on the 2-core CI machine it and
// OpenBLAS's spinning workers took the cores from each other, training 4x slower (issue 26). The
// chunks of an op are claimed one at a time from a counter: the caller starts at once and a worker
// that wakes late takes what is left, so a slow wake costs nothing but that worker's help. Which
// thread runs a chunk never changes a result: the chunks are fixed by the size alone, and what is
// summed across chunks (softmax_ce's tally) is summed in chunk order.
class GpunnPool {
   public:
    // work(first, last) for every chunk of [0, n), on the caller and up to helpers workers.
    void run(int helpers, long long n, long long chunk, void (*call)(void*, long long, long long),
             void* work) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            while ((int)workers_ < helpers) {
                try {  // a thread the system refuses: fewer helpers (an exception here would
                       // end the process: ctypes cannot pass it on)
                    std::thread(&GpunnPool::work, this, workers_).detach();
                } catch (...) {
                    helpers = (int)workers_;
                    break;
                }
                ++workers_;
            }
            call_ = call, work_ = work, n_ = n, chunk_ = chunk;
            chunks_ = (n + chunk - 1) / chunk;
            next_.store(0), finished_.store(0);
            wanted_ = helpers, open_ = true, ++generation_;
        }
        wake_.notify_all();
        claim();
        while (finished_.load(std::memory_order_acquire) < chunks_) std::this_thread::yield();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            open_ = false;  // no worker joins this op from now on
        }
        while (active_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    }

   private:
    void claim() {
        for (;;) {
            const long long c = next_.fetch_add(1);
            if (c >= chunks_) return;
            const long long last = (c + 1) * chunk_ < n_ ? (c + 1) * chunk_ : n_;
            call_(work_, c * chunk_, last);
            finished_.fetch_add(1, std::memory_order_release);
        }
    }

    void work(unsigned index) {
        std::unique_lock<std::mutex> lock(mutex_);
        unsigned long long seen = 0;
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen && open_ && (int)index < wanted_; });
            seen = generation_;
            active_.fetch_add(1);
            lock.unlock();
            claim();
            active_.fetch_sub(1, std::memory_order_release);
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    unsigned workers_ = 0;
    unsigned long long generation_ = 0;
    int wanted_ = 0;
    bool open_ = false;
    void (*call_)(void*, long long, long long) = 0;
    void* work_ = 0;
    long long n_ = 0, chunk_ = 1, chunks_ = 0;
    std::atomic<long long> next_{0}, finished_{0};
    std::atomic<int> active_{0};
};

// One pool per process, made at the first op that wants help. A forked child has none of its
// parent's threads: it leaves the parent's pool behind and makes its own. Ops called at once from
// several Python threads (ctypes lets go of the GIL) run on their caller alone.
static GpunnPool* gpunn_pool = 0;
static std::mutex gpunn_pool_busy;
static void gpunn_forget_pool(void) {
    gpunn_pool = 0;
    new (&gpunn_pool_busy) std::mutex();
}
static pthread_once_t gpunn_atfork_once = PTHREAD_ONCE_INIT;
static void gpunn_register_atfork(void) { pthread_atfork(0, 0, gpunn_forget_pool); }

template <typename Work>
static void gpunn_call(void* work, long long first, long long last) {
    (*(Work*)work)(first, last);
}

// The number of chunks work over [0, n) at cost_per_item makes, with chunk edges on multiples of
// align (a cache line of elements, or a row).
static long long gpunn_chunk_size(long long n, long long cost_per_item, long long align) {
    long long chunk = (GRAIN + cost_per_item - 1) / cost_per_item;
    chunk = (chunk + align - 1) / align * align;
    return chunk < n ? chunk : (n > 0 ? n : 1);
}

// work(first, last) over [0, n) in chunks of gpunn_chunk_size, on the BLAS's threads.
template <typename Work>
static void gpunn_chunks(long long n, long long cost_per_item, long long align, Work work) {
    const long long chunk = gpunn_chunk_size(n, cost_per_item, align);
    const long long chunks = (n + chunk - 1) / chunk;
    // Fewer than four chunks (about 40 us on one core) stay on the caller: waking a helper for
    // less made the spiral's steps (300 x 64 arrays, two chunks) 7% slower.
    long long helpers = chunks < 4 ? 0 : gpunn_host_threads() - 1;
    if (helpers > chunks - 1) helpers = chunks - 1;
    if (helpers <= 0 || !gpunn_pool_busy.try_lock()) {
        for (long long c = 0; c < chunks; ++c) work(c * chunk, c + 1 < chunks ? (c + 1) * chunk : n);
        return;
    }
    pthread_once(&gpunn_atfork_once, gpunn_register_atfork);
    if (!gpunn_pool) gpunn_pool = new GpunnPool();
    gpunn_pool->run((int)helpers, n, chunk, gpunn_call<Work>, &work);
    gpunn_pool_busy.unlock();
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

// softmax_ce over chunks of rows, each chunk adding into a tally of its own; the partial tallies
// are then added in chunk order, so a result does not depend on which thread ran which chunk.
#define GPUNN_SOFTMAX_CE(T, S)                                                                   \
    extern "C" void gpunn_softmax_ce_##S(const T* logits, const long long* labels, T* probs,     \
                                         T* dlogits, double* tally, long long rows,              \
                                         long long cols, long long scale_rows) {                 \
        const long long chunk = gpunn_chunk_size(rows, 8 * cols, 1);                             \
        std::vector<double> partial(((rows + chunk - 1) / chunk) * TALLY_SIZE, 0.0);             \
        gpunn_chunks(rows, 8 * cols, 1, [&](long long a, long long b) {                          \
            softmax_ce<T>(logits + a * cols, labels + a, probs + a * cols, dlogits + a * cols,   \
                          &partial[a / chunk * TALLY_SIZE], b - a, cols, scale_rows);            \
        });                                                                                      \
        for (size_t c = 0; c < partial.size(); c += TALLY_SIZE)                                  \
            for (int s = 0; s < TALLY_SIZE; ++s) tally[s] += partial[c + s];                     \
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
        if (found) __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
    });
    return !bad;
}

extern "C" int gpunn_all_finite_f64(const uint64_t* x, long long n) {
    int bad = 0;
    const uint64_t exponent = 0x7ff0000000000000ull;
    gpunn_chunks(n, 1, 16, [&](long long a, long long b) {
        uint64_t found = 0;
        for (long long i = a; i < b; ++i) found |= (x[i] & exponent) == exponent;
        if (found) __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
    });
    return !bad;
}
