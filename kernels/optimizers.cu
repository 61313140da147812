// gpunn optimizer steps: one kernel per update rule of gpunn/optimizers.py over the flat
// parameter buffer, and `advance`, which counts the step.
//
// Each rule is a template over the element type (float, double) with a 64-bit grid-stride loop
// over n elements, updating params and its state arrays in place. The step counter and the
// divergence flag live in the tally on the device, so a training step needs nothing from the
// host: iterations = tally[TALLY_ITERATIONS], and after a non-finite loss
// (tally[TALLY_NONFINITE] != 0) no kernel changes anything, so the parameters stay those from
// before the diverging step. The NumPy twin of each rule is its optimizer's _update method;
// the operations are the same, in the same order and precision (hyperparameters combined in
// double, then rounded to T as NumPy rounds a Python float for a float32 array). The results are
// not always the same bits: NVRTC contracts a * b + c into a fused multiply-add by default
// (--fmad=true, which CuPy and gpunn keep), rounding once where NumPy rounds twice, so on a GPU
// an update can differ from the twin in its last bit. The tests' host build (g++ with
// -ffp-contract=off) does not contract, and equals the twin bit for bit.

#include "common.cuh"

// Optimizer.pre_update_params: lr / (1 + decay * iterations) when decay is set.
__device__ __forceinline__ double gpunn_current_learning_rate(double learning_rate,
                                                              double decay,
                                                              const double* tally) {
    return decay != 0.0 ? learning_rate / (1.0 + decay * tally[TALLY_ITERATIONS])
                        : learning_rate;
}

// SGD: params += -lr * grads
template <typename T>
__global__ void sgd(T* params, const T* grads, long long n, double learning_rate, double decay,
                    const double* tally) {
    if (tally[TALLY_NONFINITE] != 0.0) return;
    const T step = T(-gpunn_current_learning_rate(learning_rate, decay, tally));
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        params[i] += grads[i] * step;
    }
}

// SGD with momentum: momentums = momentum * momentums - lr * grads; params += momentums
template <typename T>
__global__ void sgd_momentum(T* params, const T* grads, T* momentums, long long n,
                             double learning_rate, double decay, double momentum,
                             const double* tally) {
    if (tally[TALLY_NONFINITE] != 0.0) return;
    const T lr = T(gpunn_current_learning_rate(learning_rate, decay, tally));
    const T beta = T(momentum);
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T update = momentums[i] * beta - grads[i] * lr;
        momentums[i] = update;
        params[i] += update;
    }
}

// Adagrad: cache += grads**2; params -= grads / (sqrt(cache) + epsilon) * lr
template <typename T>
__global__ void adagrad(T* params, const T* grads, T* cache, long long n, double learning_rate,
                        double decay, double epsilon, const double* tally) {
    if (tally[TALLY_NONFINITE] != 0.0) return;
    const T lr = T(gpunn_current_learning_rate(learning_rate, decay, tally));
    const T eps = T(epsilon);
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T g = grads[i];
        const T c = cache[i] + g * g;
        cache[i] = c;
        params[i] -= g / (sqrt(c) + eps) * lr;
    }
}

// RMSprop: cache = rho * cache + (1 - rho) * grads**2; params -= grads / (sqrt(cache) + eps) * lr
template <typename T>
__global__ void rmsprop(T* params, const T* grads, T* cache, long long n, double learning_rate,
                        double decay, double rho, double epsilon, const double* tally) {
    if (tally[TALLY_NONFINITE] != 0.0) return;
    const T lr = T(gpunn_current_learning_rate(learning_rate, decay, tally));
    const T keep = T(rho), add = T(1.0 - rho), eps = T(epsilon);
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T g = grads[i];
        const T c = cache[i] * keep + g * g * add;
        cache[i] = c;
        params[i] -= g / (sqrt(c) + eps) * lr;
    }
}

// Adam, with t = iterations + 1:
//   momentums = beta_1 * momentums + (1 - beta_1) * grads
//   cache = beta_2 * cache + (1 - beta_2) * grads**2
//   params -= lr * (momentums / (1 - beta_1**t)) / (sqrt(cache / (1 - beta_2**t)) + epsilon)
// rearranged as Adam._update does: with s = sqrt(1 - beta_2**t),
//   params -= momentums / (sqrt(cache) + epsilon * s) * (lr * s / (1 - beta_1**t))
template <typename T>
__global__ void adam(T* params, const T* grads, T* momentums, T* cache, long long n,
                     double learning_rate, double decay, double epsilon, double beta_1,
                     double beta_2, const double* tally) {
    if (tally[TALLY_NONFINITE] != 0.0) return;
    const double t = tally[TALLY_ITERATIONS] + 1.0;
    const double s = sqrt(1.0 - pow(beta_2, t));
    const T scale = T(gpunn_current_learning_rate(learning_rate, decay, tally) * s /
                      (1.0 - pow(beta_1, t)));
    const T eps = T(epsilon * s);
    const T b1 = T(beta_1), b1_rest = T(1.0 - beta_1), b2 = T(beta_2), b2_rest = T(1.0 - beta_2);
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T g = grads[i];
        const T m = momentums[i] * b1 + g * b1_rest;
        const T v = cache[i] * b2 + g * g * b2_rest;
        momentums[i] = m;
        cache[i] = v;
        params[i] -= m / (sqrt(v) + eps) * scale;
    }
}

// Optimizer.post_update_params, after a rule's kernel: tally[TALLY_ITERATIONS] += 1, unless a
// non-finite loss was seen (then no step was taken). Any launch works; one thread does it.
__global__ void advance(double* tally) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && tally[TALLY_NONFINITE] == 0.0) {
        tally[TALLY_ITERATIONS] += 1.0;
    }
}
