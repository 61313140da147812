"""Matrix products (``backend.gemm``, gpunn/backend/blas.py) on every device: NumPy's ``dot`` of
the same operands is the reference. On CUDA, inside ``backend.capturable`` the products go to
cuBLAS directly (through nvmath-python; with ``pytest --cupy-double``, through its double on the
simulated devices cuda-sim:N, not a GPU)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from helpers import to_host

import gpunn

SHAPES = [(5, 3, 4), (1, 7, 6), (6, 7, 1), (1, 1, 1), (33, 300, 17)]  # rows, inner, cols


def _direct(backend):
    """Where the products go: CuPy's dot / NumPy's dot, then (CUDA) cuBLAS directly."""
    modes = [("dot", contextlib.nullcontext)]
    if backend.device != "cpu":
        stream = backend.xp.cuda.Stream(non_blocking=True)
        modes.append(("cublas", lambda: _on(stream, backend)))
    return modes


@contextlib.contextmanager
def _on(stream, backend):
    with backend.activate(), stream, backend.capturable(stream):
        yield


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows, inner, cols", SHAPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_gemm_is_numpys_dot(backend, dtype, rows, inner, cols, trans_a, trans_b):
    rng = np.random.default_rng(rows * 100 + cols)
    a = rng.standard_normal((inner, rows) if trans_a else (rows, inner)).astype(dtype)
    b = rng.standard_normal((cols, inner) if trans_b else (inner, cols)).astype(dtype)
    expected = np.dot(a.T if trans_a else a, b.T if trans_b else b)
    for mode, where in _direct(backend):
        A, B = backend.asarray(a), backend.asarray(b)
        out = backend.xp.full((rows, cols), np.nan, dtype=dtype)
        with where():
            returned = backend.gemm(A, B, out=out, trans_a=trans_a, trans_b=trans_b)
            made = backend.gemm(A, B, trans_a=trans_a, trans_b=trans_b)
        assert returned is out, mode
        for result in (out, made):
            tolerance = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(to_host(backend, result), expected, rtol=tolerance,
                                       atol=tolerance * inner, err_msg=mode)


def test_gemm_of_views_and_an_empty_inner_dimension(backend):
    x = np.arange(24, dtype="float32").reshape(6, 4)
    for mode, where in _direct(backend):
        X = backend.asarray(x)
        with where():
            # a strided view is made contiguous first; k = 0 gives zeros, as NumPy's dot
            sliced = backend.gemm(X[:, ::2], X[:2, :].T[::2, :])
            empty = backend.gemm(X[:, :0], X[:0, :])
        np.testing.assert_array_equal(to_host(backend, sliced), x[:, ::2] @ x[:2, :].T[::2, :],
                                      err_msg=mode)
        np.testing.assert_array_equal(to_host(backend, empty), np.zeros((6, 4), "float32"))


def test_direct_gemm_refuses_operands_that_do_not_multiply(backend):
    if backend.device == "cpu":
        pytest.skip("the direct cuBLAS call is CUDA's; NumPy's dot refuses for the CPU")
    X = backend.asarray(np.ones((4, 3), "float32"))
    stream = backend.xp.cuda.Stream(non_blocking=True)
    with _on(stream, backend):
        with pytest.raises(gpunn.InvalidArgumentError, match=r"op\(a\) is \(4, 3\) and op\(b\) "
                                                             r"\(4, 3\)"):
            backend.gemm(X, X)
        with pytest.raises(gpunn.InvalidArgumentError, match="float32, float64, float16 or "
                                                             "bfloat16 arrays of one dtype"):
            backend._blas.gemm(X, X.astype("float64"), backend.xp.empty((4, 4), "float32"),
                               False, True)


def test_a_layers_products_go_through_gemm(backend, monkeypatch):
    # Dense forward (x @ W), backward (x.T @ dvalues, dvalues @ W.T) and the bias gradient's
    # column sums: every product a layer makes goes through the one interface.
    calls = []
    original = type(backend).gemm

    def spy(self, a, b, out=None, *, trans_a=False, trans_b=False, tf32=False):
        calls.append((a.shape, b.shape, trans_a, trans_b))
        return original(self, a, b, out=out, trans_a=trans_a, trans_b=trans_b, tf32=tf32)

    monkeypatch.setattr(type(backend), "gemm", spy)
    layer = gpunn.Dense(3, 5, device=backend)
    layer.forward(np.ones((8, 3), "float32"))
    layer.backward(backend.xp.ones((8, 5), dtype="float32"))
    assert calls == [((8, 3), (3, 5), False, False), ((8, 3), (8, 5), True, False),
                     ((1, 8), (8, 5), False, False), ((8, 5), (3, 5), False, True)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("into", ["same", "float32"])
def test_16_bit_products_accumulate_in_float32_and_round_once(backend, dtype, into):
    # gpunn.precision's products: 16-bit operands, float32 accumulation, one rounding into a
    # 16-bit result or none into a float32 one (the master weights' gradients). On CUDA they go
    # to cuBLAS directly (CuPy's dot cannot write a 16-bit product into float32); the NumPy
    # twin upcasts, multiplies in float32 and rounds once, so the two agree bit for bit on the
    # double, whose cuBLAS computes as the twin does (a GPU may sum in another order).
    import ml_dtypes  # noqa: F401

    rng = np.random.default_rng(3)
    a32 = rng.standard_normal((300, 40)).astype("float32")
    b32 = rng.standard_normal((40, 7)).astype("float32")
    a, b = a32.astype(dtype), b32.astype(dtype)
    out_dtype = dtype if into == "same" else "float32"
    out = backend.xp.empty((300, 7), dtype=out_dtype)
    result = backend.gemm(backend.asarray(a), backend.asarray(b), out=out)
    expected = np.dot(a.astype("float32"), b.astype("float32")).astype(out_dtype)
    np.testing.assert_array_equal(to_host(backend, result), expected)
    assert result.dtype == np.dtype(out_dtype)


def test_tf32_is_chosen_per_product(backend, monkeypatch):
    if backend.device == "cpu":
        pytest.skip("TF32 is a CUDA compute type")
    backend.why_no_cuda_graph()  # makes the Blas
    chosen = []
    original = backend._blas.cublas.gemm_ex

    def spy(*args):
        chosen.append(args[-2])
        return original(*args)

    monkeypatch.setattr(backend._blas.cublas, "gemm_ex", spy)
    x = backend.asarray(np.ones((4, 3), "float32"))
    backend.gemm(x, x, trans_b=True, tf32=True)
    compute = backend._blas.cublas.ComputeType
    assert chosen == [int(compute.COMPUTE_32F_FAST_TF32)]
