// gpunn optimizer steps: one kernel per update rule of gpunn/optimizers.py over the flat
// parameter buffer; `unscale`, which divides the gradients by the loss scale; and `advance`,
// which counts the step and adjusts the loss scale.
//
// Each rule is a template over the element type (float, double) with a 64-bit grid-stride loop
// over n elements, updating params and its state arrays in place. The step counter and the
// divergence flag live in the tally on the device, so a training step needs nothing from the
// host: iterations = tally[TALLY_ITERATIONS], and after a non-finite loss
// (tally[TALLY_NONFINITE] != 0), or when unscale found an inf or NaN gradient
// (tally[TALLY_FOUND_INF] != 0), no rule changes anything, so the parameters stay those from
// before that step. The NumPy twin of each rule is its optimizer's _update method;
// the operations are the same, in the same order and precision (hyperparameters combined in
// double, then rounded to T as NumPy rounds a Python float for a float32 array). The results are
// not always the same bits: NVRTC contracts a * b + c into a fused multiply-add by default
// (--fmad=true, which CuPy and gpunn keep), rounding once where NumPy rounds twice, so on a GPU
// an update can differ from the twin in its last bit. The tests' host build (g++ with
// -ffp-contract=off) does not contract, and equals the twin bit for bit.

#include "common.cuh"

// Whether this step changes nothing: the run diverged, or the gradients overflowed.
__device__ __forceinline__ bool gpunn_skip_step(const double* tally) {
    return tally[TALLY_NONFINITE] != 0.0 || tally[TALLY_FOUND_INF] != 0.0;
}

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
    if (gpunn_skip_step(tally)) return;
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
    if (gpunn_skip_step(tally)) return;
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
    if (gpunn_skip_step(tally)) return;
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
    if (gpunn_skip_step(tally)) return;
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
    if (gpunn_skip_step(tally)) return;
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

// The loss scaler's unscale, as PyTorch's GradScaler.unscale_
// (torch._amp_foreach_non_finite_check_and_unscale_): with the scale a float32 value and
//   inv = np.float32(1 / np.float64(scale))   (GradScaler: scale.double().reciprocal().float())
//   if not np.isfinite(grads).all(): tally[TALLY_FOUND_INF] = 1
//   grads *= inv                              (in T: a float32 or float64 product)
// Every thread that sees an inf or NaN stores the same 1.0 with a plain store: whichever store
// lands last, the slot holds 1.0, so no atomic is needed.
template <typename T>
__global__ void unscale(T* grads, long long n, double* tally) {
    const float inv = float(1.0 / double(float(tally[TALLY_SCALE])));
    GPUNN_GRID_STRIDE_LOOP(i, n) {
        const T g = grads[i];
        if (!isfinite(g)) tally[TALLY_FOUND_INF] = 1.0;
        grads[i] = g * T(inv);
    }
}

// Optimizer.post_update_params after a rule's kernel, and GradScaler.update
// (torch._amp_update_scale_) in one. Nothing when the run diverged (tally[TALLY_NONFINITE]).
// A step whose gradients overflowed (tally[TALLY_FOUND_INF], set by unscale) changed nothing:
// clear the flag; then if the scale is already at most min_scale the gradients overflow even
// barely scaled, so the run diverged at this step (TALLY_NONFINITE += 1, which the training loop
// reports, naming this step), else it was skipped (TALLY_SKIPPED += 1), scale *= backoff_factor
// and the growth tracker restarts.
// A step taken counts in TALLY_ITERATIONS; with dynamic scaling (growth_interval > 0) every
// growth_interval-th good step in a row multiplies the scale by growth_factor, unless that
// overflows float32. growth_interval == 0: no loss scaling, the scale stays as it is.
// New scales are rounded to float32, as GradScaler's float32 scale tensor holds them.
// Any launch works; one thread does it.
__global__ void advance(double* tally, double growth_factor, double backoff_factor,
                        long long growth_interval, double min_scale) {
    if (blockIdx.x != 0 || threadIdx.x != 0 || tally[TALLY_NONFINITE] != 0.0) return;
    if (tally[TALLY_FOUND_INF] != 0.0) {
        tally[TALLY_FOUND_INF] = 0.0;
        if (tally[TALLY_SCALE] <= min_scale) {
            tally[TALLY_NONFINITE] += 1.0;
        } else {
            tally[TALLY_SKIPPED] += 1.0;
            tally[TALLY_SCALE] = float(tally[TALLY_SCALE] * backoff_factor);
            tally[TALLY_GOOD_STEPS] = 0.0;
        }
        return;
    }
    tally[TALLY_ITERATIONS] += 1.0;
    if (growth_interval > 0) {
        const double good = tally[TALLY_GOOD_STEPS] + 1.0;
        if (good == double(growth_interval)) {
            const float grown = float(tally[TALLY_SCALE] * growth_factor);
            if (isfinite(grown)) tally[TALLY_SCALE] = grown;
            tally[TALLY_GOOD_STEPS] = 0.0;
        } else {
            tally[TALLY_GOOD_STEPS] = good;
        }
    }
}
