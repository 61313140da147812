"""Matrix products (``backend.gemm``, gpunn/backend/blas.py) on every device: NumPy's ``dot`` of
the same operands is the reference, within the rounding the arithmetic allows (a GPU sums in
another order). On CUDA the products go to cuBLAS directly wherever nvmath-python loads, inside
``backend.capturable`` or not (with ``pytest --cupy-double``, through its double on the
simulated devices cuda-sim:N, not a GPU)."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest
from helpers import assert_product_close, product_bound, to_host

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
    # to cuBLAS directly (CuPy's dot cannot write a 16-bit product into float32). cuBLAS sums in
    # an order of its own (the nvmath double too: tiles and split-K), so the result is compared
    # with what the arithmetic allows: k float32 additions and one rounding into the output.
    import ml_dtypes  # noqa: F401

    rng = np.random.default_rng(3)
    a32 = rng.standard_normal((300, 400)).astype("float32")
    b32 = rng.standard_normal((400, 7)).astype("float32")
    a, b = a32.astype(dtype), b32.astype(dtype)
    out_dtype = dtype if into == "same" else "float32"
    out = backend.xp.empty((300, 7), dtype=out_dtype)
    result = backend.gemm(backend.asarray(a), backend.asarray(b), out=out)
    assert result.dtype == np.dtype(out_dtype)
    assert_product_close(to_host(backend, result).astype("float32"), a, b,
                         accumulate="float32", out=out_dtype)


def test_the_product_bound_is_tight_enough_to_see_16_bit_accumulation():
    # The bound above would pass anything if it were loose: a product accumulated in float16 (a
    # running sum rounded to 16 bits at every addition) lies past it, one accumulated in float32
    # and rounded once within it.
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 1024)).astype("float16")
    b = rng.standard_normal((1024, 8)).astype("float16")
    once = (a.astype("float32") @ b.astype("float32")).astype("float16")
    sixteen = np.zeros((64, 8), "float16")
    for i in range(1024):
        sixteen = (sixteen + np.outer(a[:, i], b[i]).astype("float16")).astype("float16")
    assert_product_close(once, a, b, accumulate="float32", out="float16")
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert (np.abs(sixteen - exact) > product_bound(a, b, out="float16")).any()


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


def _cuda_only(backend):
    if backend.device == "cpu":
        pytest.skip("cuBLAS through nvmath-python is CUDA's")


def test_the_handle_keeps_16_bit_split_k_sums_in_float32(backend):
    # cuBLAS's default math mode may add a split-K product's partial sums in its 16-bit output
    # type; "float32 accumulation, rounded once" needs DISALLOW_REDUCED_PRECISION_REDUCTION.
    _cuda_only(backend)
    assert backend.why_no_cuda_graph() is None
    blas = backend._blas
    mode = blas.cublas.get_math_mode(blas.handle)
    assert mode & int(blas.cublas.Math.DISALLOW_REDUCED_PRECISION_REDUCTION)


def test_the_algorithm_is_cublas_default(backend):
    # GEMM_DEFAULT_TENSOR_OP is deprecated since CUDA 11: cuBLAS picks tensor cores by the
    # compute type under DEFAULT.
    _cuda_only(backend)
    backend.why_no_cuda_graph()
    assert backend._blas.algo == int(backend._blas.cublas.GemmAlgo.DEFAULT)


def test_plain_products_take_the_graphs_path(backend, monkeypatch):
    # One product path for plain and graphed steps wherever nvmath-python loads: CuPy's dot
    # passes other flags for size-1 shapes and runs on another handle and workspace.
    _cuda_only(backend)
    backend.why_no_cuda_graph()
    calls = []
    original = backend._blas.cublas.gemm_ex
    monkeypatch.setattr(backend._blas.cublas, "gemm_ex",
                        lambda *args: calls.append(args[3:6]) or original(*args))
    for shape in [(1, 1), (4, 3)]:
        x = backend.asarray(np.ones(shape, "float32"))
        backend.gemm(x, x, trans_b=True)
    assert calls == [(1, 1, 1), (4, 4, 3)]


def test_a_failed_blas_is_tried_once_per_device(backend, monkeypatch):
    _cuda_only(backend)
    from gpunn.backend import blas

    tries = []

    def broken():
        tries.append(1)
        raise ImportError("nvmath-python is not installed (simulated)")

    fresh = type(backend).__new__(type(backend))
    fresh.__dict__.update(backend.__dict__, _blas=None, _blas_error=None, _blas_bound=None)
    monkeypatch.setattr(blas, "load", broken)
    x = fresh.asarray(np.ones((4, 3), "float32"))
    for _ in range(3):
        fresh.gemm(x, x, trans_b=True)
        fresh.gemm(x.astype("float16"), x.astype("float16"), trans_b=True)
    assert "simulated" in fresh.why_no_cuda_graph() and len(tries) == 1


def test_without_ml_dtypes_cuda_trains_without_graphs(backend, monkeypatch):
    # blas.py imported ml_dtypes at module level, outside why_no_cuda_graph's try: a missing
    # ml_dtypes broke every CUDA train() instead of training without graphs.
    _cuda_only(backend)
    import gpunn.backend as backend_package

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    monkeypatch.delitem(sys.modules, "gpunn.backend.blas")
    monkeypatch.delattr(backend_package, "blas")
    fresh = type(backend).__new__(type(backend))
    fresh.__dict__.update(backend.__dict__, _blas=None, _blas_error=None, _blas_bound=None)
    assert "ml_dtypes" in fresh.why_no_cuda_graph()
    x = fresh.asarray(np.ones((4, 3), "float32"))
    np.testing.assert_array_equal(to_host(fresh, fresh.gemm(x, x, trans_b=True)),
                                  np.full((4, 4), 3.0, "float32"))


def test_a_failed_nvmath_import_says_what_failed_and_why(monkeypatch):
    # nvmath-python 1.0.1 with cuda-core 0.4 fails with "cannot import name 'Stream'": that is
    # not "nvmath-python is not installed", and the message says what it needs.
    import builtins

    from gpunn.backend import blas

    real_import = builtins.__import__

    def old_cuda_core(name, *args, **kwargs):
        if name == "nvmath" or name.startswith("nvmath."):
            raise ImportError("cannot import name 'Stream' from 'cuda.core'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(blas.metadata, "version",
                        lambda name: {"nvmath-python": "1.0.1", "cuda-core": "0.4.2"}.get(
                            name, "1.9.1"))
    monkeypatch.setattr(builtins, "__import__", old_cuda_core)
    with pytest.raises(ImportError) as raised:
        blas.load()
    message = str(raised.value)
    assert "not installed" not in message
    assert "nvmath-python 1.0.1 is installed but did not import" in message
    assert "cannot import name 'Stream'" in message
    assert "cuda-core>=0.5.0,<2 (found 0.4.2)" in message
