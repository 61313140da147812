"""The CPU backend: every op written with NumPy through ``self.xp``.

The CuPy backend subclasses this class and overrides only the ops our CUDA kernels speed up,
so each method here is also the reference ("NumPy twin") its kernel is tested against.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy

from gpunn.backend import kernels
from gpunn.errors import InvalidArgumentError

CLIP = 1e-7  # gpunn.losses.CLIP: probabilities are clipped to [CLIP, 1 - CLIP] before log


class NumpyBackend:
    """Arrays in host memory, math by NumPy. ``xp`` is the array module layers use."""

    name = "numpy"
    # Whether a training step runs as fused kernels with its metrics in a device tally
    # (softmax_ce, optimizer_step, advance). The NumPy twin of optimizer_step is each
    # optimizer's own _update (gpunn/optimizers.py), so this backend has none.
    fused = False
    # Whether the training step takes the output softmax, the loss, its gradient and the
    # accuracy from one softmax_ce call even so: on NumPy the book's separate steps are faster;
    # the host kernels (gpunn.backend.host.HostBackend) make it one pass.
    fused_softmax_ce = False

    def __init__(self) -> None:
        self.xp = numpy
        self.device = "cpu"
        self.random = numpy.random.default_rng()
        self.out_of_memory_errors: tuple[type[BaseException], ...] = (MemoryError,)
        self._ones_cache: dict[tuple[int, Any], Any] = {}

    def __repr__(self) -> str:
        return f"<gpunn backend {self.device}>"

    # ---- device, transfer, randomness ------------------------------------------------------

    def activate(self) -> contextlib.AbstractContextManager:
        """A context in which this backend's device is the current one (nothing to do on CPU)."""
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait until queued work is done (NumPy works synchronously)."""

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """``data`` as an array on this device; no copy when it is already there and typed."""
        if hasattr(data, "__cuda_array_interface__"):  # a CuPy array coming back to the host
            data = data.get()
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array: Any) -> numpy.ndarray:
        """A host NumPy array with the values of ``array`` (a copy if it is on a GPU)."""
        if hasattr(array, "__cuda_array_interface__"):  # CuPy refuses numpy.asarray
            return array.get()
        return numpy.asarray(array)

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` means this device ran out of memory."""
        return isinstance(error, self.out_of_memory_errors)

    def is_array(self, data: Any) -> bool:
        """Whether ``data`` already lives on this device as an array."""
        return isinstance(data, self.xp.ndarray)

    def holds(self, nbytes: int) -> bool:
        """Whether a data set of ``nbytes`` should live on this device (host memory: always)."""
        return True

    def seed(self, seed: int) -> None:
        """Reseed this device's random generator (dropout masks)."""
        self.random = self.xp.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform samples in [0, 1) drawn on the device, for dropout masks."""
        return self.random.random(shape, dtype=dtype)

    # ---- matrix products ---------------------------------------------------------------------

    def gemm(self, a: Any, b: Any, out: Any = None, *, trans_a: bool = False,
             trans_b: bool = False, tf32: bool = False) -> Any:
        """``op(a) @ op(b)``, into ``out`` when given, where ``op`` transposes its matrix when
        ``trans_a`` / ``trans_b`` is set: every matrix product of a layer goes through here.
        16-bit operands (float16, bfloat16) multiply in float32 and round once into ``out``
        (their dtype, or float32), as cuBLAS does with float32 accumulation: NumPy's own 16-bit
        arithmetic would round every partial sum. ``tf32``: TF32 tensor cores (CUDA only;
        gpunn.precision refuses it on the CPU).

        Example: ``backend.gemm(inputs, dvalues, out=dweights, trans_a=True)``.
        """
        a, b = a.T if trans_a else a, b.T if trans_b else b
        # NumPy's matmul, not numpy.dot: nnfs.init(), which every script of the book calls,
        # replaces numpy.dot with a float64 product that refuses ``out`` (the same sgemm
        # either way; CuPy's dot is its own)
        dot = numpy.matmul if self.xp is numpy else self.xp.dot
        if a.dtype.itemsize != 2:
            return dot(a, b, out=out)
        result = dot(a.astype(numpy.float32), b.astype(numpy.float32))
        if out is None:
            return result.astype(a.dtype)
        out[...] = result
        return out

    def cast(self, x: Any, dtype: Any = None, out: Any = None) -> Any:
        """``x`` as ``dtype``, or copied into ``out`` (rounding to nearest even): how values
        enter and leave a 16-bit policy's layers (gpunn.precision)."""
        if out is None:
            return x.astype(dtype)
        out[...] = x
        return out

    def compute_capability(self) -> tuple[int, int]:
        """A CUDA device's (major, minor) compute capability; the CPU has none: (0, 0)."""
        return (0, 0)

    def low_precision_error(self, dtype: str = "float16") -> str | None:
        """Why this device cannot run the ``dtype`` (float16 or bfloat16) ops, or None: NumPy
        has float16; bfloat16 is ml_dtypes'."""
        if dtype != "bfloat16":
            return None
        try:
            import ml_dtypes  # noqa: F401 (registers numpy.dtype("bfloat16"))
        except ImportError as error:
            return f"bfloat16 needs ml_dtypes ({error}): pip install ml_dtypes"
        return None

    def why_no_cuda_graph(self) -> str | None:
        """Why a training step on this device cannot run as a CUDA graph, or None if it can."""
        return "the CPU runs no CUDA graphs"

    # ---- reductions on small batches ----------------------------------------------------------
    # np.sum(axis=...) and np.max(axis=1) pay several microseconds per call on the narrow arrays of
    # a small network; as products with a ones vector (BLAS) and as a reduction over a transposed
    # copy they cost about one. Same values up to float rounding.

    def column_sums(self, x: Any, out: Any = None) -> Any:
        """``x.sum(axis=0, keepdims=True)``: e.g. the bias gradient."""
        return self.gemm(self._ones(x.shape[0], x.dtype).reshape(1, -1), x, out=out)

    def row_sums(self, x: Any) -> Any:
        """``x.sum(axis=1, keepdims=True)``."""
        return self.gemm(x, self._ones(x.shape[1], x.dtype).reshape(-1, 1))

    def row_max(self, x: Any) -> Any:
        """``x.max(axis=1, keepdims=True)``."""
        if x.shape[1] > 64:
            return x.max(axis=1, keepdims=True)
        return self.xp.ascontiguousarray(x.T).max(axis=0).reshape(-1, 1)

    def _ones(self, n: int, dtype: Any) -> Any:
        key = (n, dtype)  # a dtype object hashes fast; its .name is a slow property
        if key not in self._ones_cache:
            with self.activate():  # made once, on this backend's device whatever is current
                self._ones_cache[key] = self.xp.ones(n, dtype=dtype)
        return self._ones_cache[key]

    # ---- the kernel-backed ops ---------------------------------------------------------------
    # Each has a CUDA kernel of the same name in kernels/elementwise.cu. float16 and bfloat16
    # (ml_dtypes) arrays are computed as their kernels compute them: cast up to float32, one
    # float32 operation, rounded once to the array's dtype. (NumPy's own float16 arithmetic
    # rounds the same way, but ml_dtypes' bfloat16 is not a model to rely on.)

    def relu(self, x: Any, out: Any = None) -> Any:
        """``np.maximum(x, 0)``; NaN propagates."""
        if _low_precision(x):
            return _rounded(self.xp, self.xp.maximum(x.astype(numpy.float32), 0), x.dtype, out)
        return self.xp.maximum(x, 0, out=out)

    def relu_backward(self, dvalues: Any, inputs: Any, out: Any = None) -> Any:
        """``dvalues`` with zeros where ``inputs <= 0``, as the book's ReLU backward."""
        if _low_precision(dvalues):
            # A comparison is exact in any precision. CuPy's where has no bfloat16 loop (it
            # answers in float32), so the choice is cast back: exact, the values are dvalues'.
            result = self.xp.where(inputs.astype(numpy.float32) <= 0,
                                   self.xp.zeros((), dvalues.dtype), dvalues)
            result = result.astype(dvalues.dtype, copy=False)
        else:
            result = self.xp.where(inputs <= 0, 0, dvalues)  # faster than a masked copyto
        if out is None:
            return result
        self.xp.copyto(out, result)
        return out

    def bias_add(self, x: Any, biases: Any, out: Any = None) -> Any:
        """``x + biases`` with the bias row broadcast over the batch. For float16 or bfloat16
        ``x`` the biases are float32 (the master copy): added in float32, rounded once."""
        _check_bias(x, biases)
        if _low_precision(x):
            return _rounded(self.xp, x.astype(numpy.float32) + biases.astype(numpy.float32),
                            x.dtype, out)
        return self.xp.add(x, biases, out=out)

    def bias_relu(self, x: Any, biases: Any, out: Any = None) -> Any:
        """``np.maximum(x + biases, 0)``: the fused Dense + ReLU forward (biases as bias_add)."""
        if _low_precision(x):
            _check_bias(x, biases)
            total = x.astype(numpy.float32) + biases.astype(numpy.float32)
            return _rounded(self.xp, self.xp.maximum(total, 0, out=total), x.dtype, out)
        out = self.bias_add(x, biases, out=out)
        return self.xp.maximum(out, 0, out=out)


    # ---- the fused training-step ops ---------------------------------------------------------
    # Each has a CUDA kernel of the same name: kernels/softmax_ce.cu, kernels/dropout.cu.

    def softmax_ce(self, logits: Any, labels: Any, tally: Any, *, probs: Any = None,
                   dlogits: Any = None, scale_rows: int | None = None) -> tuple[Any, Any]:
        """Softmax of ``logits`` (rows, cols), cross-entropy against integer ``labels`` (rows,)
        and their combined gradient ``(probs - one_hot(labels)) / scale_rows`` (default: rows),
        as (probs, dlogits); adds the summed loss, the correct predictions and the non-finite
        losses to ``tally`` (a float64 array of kernels.TALLY_SIZE) in place.

        Example: ``probs, dlogits = backend.softmax_ce(logits, y, tally)``.
        """
        xp = self.xp
        rows, cols = _check_softmax_ce(logits, labels, tally)
        with numpy.errstate(invalid="ignore", over="ignore", divide="ignore"):
            # The book's Softmax (gpunn.activations.Softmax.forward): exp(x - max) / sum.
            probs = xp.subtract(logits, self.row_max(logits), out=probs)
            xp.exp(probs, out=probs)
            probs /= self.row_sums(probs)
            # CategoricalCrossentropy.forward; a label outside [0, cols) gets a NaN loss.
            valid = (labels >= 0) & (labels < cols)
            index = xp.arange(rows), xp.where(valid, labels, 0)
            picked = xp.where(valid, probs[index], xp.nan)
            losses = -xp.log(xp.clip(picked, CLIP, 1 - CLIP))
            # SoftmaxCategoricalCrossentropy.backward, averaged over scale_rows.
            if dlogits is None:
                dlogits = probs.copy()
            else:
                xp.copyto(dlogits, probs)
            dlogits[index] -= valid.astype(dlogits.dtype)
            dlogits /= rows if scale_rows is None else scale_rows
            tally[kernels.TALLY_LOSS] += losses.sum(dtype="float64")
            tally[kernels.TALLY_CORRECT] += xp.count_nonzero(probs.argmax(axis=1) == labels)
            tally[kernels.TALLY_NONFINITE] += xp.count_nonzero(~xp.isfinite(losses))
        return probs, dlogits

    def dropout(self, x: Any, u: Any, keep: float, *, mask: Any = None,
                out: Any = None) -> tuple[Any, Any]:
        """Inverted dropout of ``x`` from uniform samples ``u`` in [0, 1) of the same shape:
        (mask, y) with ``mask = floor(u + keep) * (1 / keep)`` (0 or 1 / keep) and
        ``y = x * mask``, as gpunn.layers.Dropout.forward computes them.

        For float16 or bfloat16 ``x``, ``u`` holds float32 draws; the mask is computed in
        float32 and rounded to x's dtype, and ``y = x * mask`` in float32 with that rounded
        mask, rounded once, so the backward pass scales by the same factor.

        Example: ``mask, y = backend.dropout(x, backend.uniform(x.shape, x.dtype), 0.9)``.
        """
        if _low_precision(x):
            factor = self.xp.floor(u.astype(numpy.float32) + keep)  # keep rounds to float32
            factor *= 1.0 / keep
            mask = _rounded(self.xp, factor, x.dtype, mask)
            product = x.astype(numpy.float32) * mask.astype(numpy.float32)
            return mask, _rounded(self.xp, product, x.dtype, out)
        # floor(u + keep) is 1 with probability keep, else 0: a Bernoulli mask in one buffer.
        mask = self.xp.add(u, keep, out=mask)
        self.xp.floor(mask, out=mask)
        mask *= 1.0 / keep
        return mask, self.xp.multiply(x, mask, out=out)

    def optimizer_update(self, optimizer: Any, parameters: Any, gradients: Any) -> None:
        """One step of ``optimizer``'s rule on ``parameters`` in place, outside a fused step
        (the CPU): here the optimizer's own ``_update``, the book's rule and the twin of the
        host kernels (gpunn.backend.host) and of optimizer_step's CUDA kernels."""
        optimizer._update(parameters, gradients, self.xp)

    def all_finite(self, x: Any) -> bool:
        """Whether no element of ``x`` is inf or NaN (the data checks before training)."""
        return bool(self.xp.isfinite(x).all())

    # ---- the loss scaler -------------------------------------------------------------------
    # Its state lives in the tally (TALLY_SCALE, TALLY_GOOD_STEPS, TALLY_FOUND_INF,
    # TALLY_SKIPPED); the CUDA kernels of the same name are in kernels/optimizers.cu. The rules
    # are PyTorch's GradScaler's (torch.amp.GradScaler: unscale_, then step, then update).

    def unscale(self, gradients: Any, tally: Any) -> None:
        """Divide the float32 or float64 ``gradients`` by the loss scale ``tally[TALLY_SCALE]``
        in place (times its float32 reciprocal, as GradScaler.unscale_), and set
        ``tally[TALLY_FOUND_INF]`` when any gradient was inf or NaN before.

        Example: ``backend.unscale(gradients, tally)`` between backward and optimizer_step.
        """
        _check_tally("unscale", tally)
        inverse = numpy.float32(1.0 / numpy.float64(numpy.float32(tally[kernels.TALLY_SCALE])))
        if not self.xp.isfinite(gradients).all():
            tally[kernels.TALLY_FOUND_INF] = 1.0
        gradients *= gradients.dtype.type(inverse)

    def advance(self, tally: Any, scaler: Any = None) -> None:
        """After an optimizer step: count it in ``tally`` and update the loss scale as
        GradScaler.update does, with ``scaler``'s growth_factor, backoff_factor,
        growth_interval and min_scale (None: no loss scaling, and an inf or NaN gradient means
        the run diverged). A step whose gradients overflowed is not counted: it adds to
        TALLY_SKIPPED and backs the scale off, or at min_scale counts as divergence at that step
        (TALLY_NONFINITE, not skipped). Nothing changes once the run diverged.

        Example: ``backend.advance(tally, precision.scaler)``.
        """
        _check_tally("advance", tally)
        growth_factor, backoff_factor, growth_interval, min_scale = scaler_settings(scaler)
        if tally[kernels.TALLY_NONFINITE] != 0:
            return
        if tally[kernels.TALLY_FOUND_INF] != 0:
            tally[kernels.TALLY_FOUND_INF] = 0
            if tally[kernels.TALLY_SCALE] <= min_scale:
                tally[kernels.TALLY_NONFINITE] += 1
            else:
                tally[kernels.TALLY_SKIPPED] += 1
                tally[kernels.TALLY_SCALE] = numpy.float32(tally[kernels.TALLY_SCALE]
                                                           * backoff_factor)
                tally[kernels.TALLY_GOOD_STEPS] = 0
            return
        tally[kernels.TALLY_ITERATIONS] += 1
        if growth_interval > 0:
            good = tally[kernels.TALLY_GOOD_STEPS] + 1
            if good == growth_interval:
                with numpy.errstate(over="ignore"):  # past float32's range: the scale stays
                    grown = numpy.float32(tally[kernels.TALLY_SCALE] * growth_factor)
                if numpy.isfinite(grown):
                    tally[kernels.TALLY_SCALE] = grown
                good = 0
            tally[kernels.TALLY_GOOD_STEPS] = good


def scaler_settings(scaler: Any) -> tuple[float, float, int, float]:
    """(growth_factor, backoff_factor, growth_interval, min_scale) of a loss scaler, as the
    advance kernel takes them; for None (no loss scaling) growth_interval 0 keeps the scale, and
    min_scale inf makes any inf or NaN gradient a divergence."""
    if scaler is None:
        return 1.0, 1.0, 0, float("inf")
    settings = (float(scaler.growth_factor), float(scaler.backoff_factor),
                int(scaler.growth_interval), float(scaler.min_scale))
    if settings[2] < 0:
        raise InvalidArgumentError(f"A loss scaler's growth_interval must be 0 (no scaling) or "
                                   f"positive; received growth_interval={settings[2]}.")
    return settings


def _low_precision(x: Any) -> bool:
    # float16 and bfloat16 (kernels.LOW_PRECISION_DTYPES) are the 2-byte floating types; a
    # dtype's .name is a Python property that took 6 us of every op here, its itemsize 0.2
    dtype = x.dtype
    return dtype.itemsize == 2 and dtype.kind not in "iub"


def _rounded(xp: Any, result: Any, dtype: Any, out: Any) -> Any:
    """A float32 ``result`` rounded once to ``dtype`` (to nearest even), into ``out`` if given;
    past the dtype's range it rounds to inf, as the kernels' conversion does."""
    with numpy.errstate(over="ignore"):
        result = result.astype(dtype)
    if out is None:
        return result
    xp.copyto(out, result)
    return out


def _check_tally(op: str, tally: Any) -> None:
    if tally.dtype != numpy.float64 or tally.shape != (kernels.TALLY_SIZE,):
        raise InvalidArgumentError(f"{op} expects a float64 tally of shape "
                                   f"({kernels.TALLY_SIZE},); received {tally.dtype} "
                                   f"{tuple(tally.shape)}.")


def _check_softmax_ce(logits: Any, labels: Any, tally: Any) -> tuple[int, int]:
    if logits.ndim != 2 or logits.shape[1] == 0 or labels.shape != logits.shape[:1]:
        raise InvalidArgumentError(
            f"softmax_ce expects logits of shape (rows, classes) with at least one class and "
            f"one label per row; received logits of shape {tuple(logits.shape)} and labels of "
            f"shape {tuple(labels.shape)}.")
    if labels.dtype.kind not in "iu":
        raise InvalidArgumentError(f"softmax_ce expects integer class indices as labels; "
                                   f"received {labels.dtype}.")
    _check_tally("softmax_ce", tally)
    return logits.shape


def _check_bias(x: Any, biases: Any) -> None:
    if x.ndim != 2 or biases.size != x.shape[1]:
        raise InvalidArgumentError(
            f"bias_add expects x of shape (batch, n) and n biases; received x of shape "
            f"{tuple(x.shape)} and biases of shape {tuple(biases.shape)}."
        )
