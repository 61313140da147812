// gpunn softmax + categorical cross-entropy: forward, loss, accuracy and the combined gradient
// of a batch in one kernel, with the metrics added to the tally on the device.
//
// A template over the element type (float, double); one thread per row, rows taken by a
// grid-stride loop with 64-bit indices. Arrays are C-contiguous (the caller makes them so).
// The NumPy twin is NumpyBackend.softmax_ce in gpunn/backend/numpy_backend.py.

#include "common.cuh"

// For logits x of shape (rows, cols) and integer labels y of shape (rows,), in NumPy terms:
//   probs = np.exp(x - x.max(axis=1, keepdims=True)); probs /= probs.sum(axis=1, keepdims=True)
//   losses = -np.log(np.clip(probs[range(rows), y], 1e-7, 1 - 1e-7))
//   dlogits = (probs - one_hot(y)) / scale_rows       (softmax + cross-entropy backward)
//   tally[TALLY_LOSS] += losses.sum()                 (in float64)
//   tally[TALLY_CORRECT] += (probs.argmax(axis=1) == y).sum()
//   tally[TALLY_NONFINITE] += (~np.isfinite(losses)).sum()
// NaN propagates as in NumPy (the max, the clip; argmax takes the first NaN). A label outside
// [0, cols) matches no class: its loss is NaN, which the tally counts as non-finite.
// scale_rows is the batch the gradient is averaged over: rows, or a data-parallel global batch.
template <typename T>
__global__ void softmax_ce(const T* logits, const long long* labels, T* probs, T* dlogits,
                           double* tally, long long rows, long long cols, long long scale_rows) {
    if (cols < 1) return;  // no class to predict; the callers refuse such logits
    GPUNN_GRID_STRIDE_LOOP(r, rows) {
        const T* x = logits + r * cols;
        T* p = probs + r * cols;
        T* d = dlogits + r * cols;
        T top = x[0];  // the row maximum; a NaN anywhere makes it NaN, as np.max
        for (long long j = 1; j < cols && !isnan(top); ++j) {
            if (x[j] > top || isnan(x[j])) top = x[j];
        }
        T sum = T(0);
        for (long long j = 0; j < cols; ++j) {
            p[j] = exp(x[j] - top);
            sum += p[j];
        }
        const long long label = labels[r];
        long long best = 0;
        for (long long j = 0; j < cols; ++j) {
            const T q = p[j] / sum;
            p[j] = q;
            d[j] = (j == label ? q - T(1) : q) / T(scale_rows);
            if (q > p[best] || (isnan(q) && !isnan(p[best]))) best = j;
        }
        T picked = 0 <= label && label < cols ? p[label] : T(nan(""));
        // np.clip by comparisons: fmin/fmax would turn a NaN probability into a bound.
        const T low = T(1e-7), high = T(1 - 1e-7);
        picked = picked < low ? low : picked > high ? high : picked;
        const T loss = -log(picked);
        atomicAdd(tally + TALLY_LOSS, (double)loss);
        if (best == label) atomicAdd(tally + TALLY_CORRECT, 1.0);
        if (!isfinite(loss)) atomicAdd(tally + TALLY_NONFINITE, 1.0);
    }
}
