"""What the CuPy double refuses while a stream captures a CUDA graph, and what it lets through,
each as CuPy 14.2.0 does (issue 17; tests/cupy_double/README.md lists the source lines).

Every refused call is also shown to work outside a capture, and every allowed one to be recorded
into the graph and replayed by its launch. Collected only in the ``pytest --cupy-double``
session, where ``cupy`` is the double.
"""

from __future__ import annotations

import cupy
import numpy as np
import pytest
from test_cupy_double import _capture  # one way to capture in the double's tests

sim = cupy._sim
CUBLAS = "calling cuBLAS API during stream capture is currently unsupported"


@pytest.fixture(autouse=True)
def _device_zero():
    cupy.cuda.Device(0).use()
    sim.reset_counters()


def _operands(xp):
    rng = np.random.default_rng(0)
    host = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal((3, 5)),
            "v": rng.standard_normal(3), "row": rng.standard_normal((1, 3)),
            "col": rng.standard_normal((3, 1)), "stack": rng.standard_normal((2, 4, 3)),
            "empty": np.zeros((0, 3))}
    host = {name: value.astype(np.float32) for name, value in host.items()}
    host.update(a64=host["a"].astype(np.float64), ia=rng.integers(-3, 4, (4, 3)),
                ib=rng.integers(-3, 4, (3, 5)), istack=rng.integers(-3, 4, (2, 4, 3)),
                scalar=np.float32(2.0))
    if xp is np:
        return host
    return {name: cupy.asarray(value) for name, value in host.items()}


# Products whose CuPy implementation calls cuBLAS (cupy/_core/_routines_linalg.pyx: tensordot_core
# for float operands, n or m above 1; matmul batched for 'efdFD').
CUBLAS_PRODUCTS = {
    "dot": lambda xp, o: xp.dot(o["a"], o["b"]),
    "ndarray.dot": lambda xp, o: o["a"].dot(o["b"]),
    "dot into out": lambda xp, o: xp.dot(o["a"], o["b"], out=xp.empty((4, 5), np.float32)),
    "dot float64": lambda xp, o: xp.dot(o["a64"], o["a64"].T),
    "dot matrix-vector": lambda xp, o: xp.dot(o["a"], o["v"]),
    "dot vector-matrix": lambda xp, o: xp.dot(o["v"], o["b"]),
    "dot integer by float": lambda xp, o: xp.dot(o["ia"], o["b"]),
    "matmul": lambda xp, o: xp.matmul(o["a"], o["b"]),
    "@": lambda xp, o: o["a"] @ o["b"],
    "matmul batched": lambda xp, o: xp.matmul(o["stack"], o["b"]),
    "matmul batched 1x1": lambda xp, o: xp.matmul(o["stack"][:, :1], o["col"]),
    "tensordot": lambda xp, o: xp.tensordot(o["a"], o["b"], axes=1),
    "tensordot axes=0": lambda xp, o: xp.tensordot(o["v"], o["v"], axes=0),
    "inner": lambda xp, o: xp.inner(o["a"], o["a"]),
    "einsum": lambda xp, o: xp.einsum("ij,jk->ik", o["a"], o["b"]),
    "einsum implicit": lambda xp, o: xp.einsum("ij,jk", o["a"], o["b"]),
    "einsum to a scalar": lambda xp, o: xp.einsum("i,i->", o["v"], o["v"]),  # matmul, not vdot
    "einsum with sublists": lambda xp, o: xp.einsum(o["a"], [0, 1], o["b"], [1, 2], [0, 2]),
}

# Products CuPy computes with its own kernels: allowed in a capture.
KERNEL_PRODUCTS = {
    "vdot": lambda xp, o: xp.vdot(o["a"], o["a"]),
    "dot of vectors (1x1)": lambda xp, o: xp.dot(o["v"], o["v"]),
    "dot row by column (1x1)": lambda xp, o: xp.dot(o["row"], o["col"]),
    "inner of vectors (1x1)": lambda xp, o: xp.inner(o["v"], o["v"]),
    "tensordot over every axis (1x1)": lambda xp, o: xp.tensordot(o["a"], o["a"], axes=2),
    "dot integer": lambda xp, o: xp.dot(o["ia"], o["ib"]),
    "matmul integer batched": lambda xp, o: xp.matmul(o["istack"], o["ib"]),
    "dot empty": lambda xp, o: xp.dot(o["empty"], o["b"]),
    "dot by a 0-d array": lambda xp, o: xp.dot(o["a"], o["scalar"]),
    "outer": lambda xp, o: xp.outer(o["v"], o["v"]),
    "einsum without a sum": lambda xp, o: xp.einsum("i,j->ij", o["v"], o["v"]),
    "einsum elementwise": lambda xp, o: xp.einsum("ij,ij->ij", o["a"], o["a"]),
    "einsum unary sum": lambda xp, o: xp.einsum("ij->j", o["a"]),
    "einsum integer": lambda xp, o: xp.einsum("ij,jk->ik", o["ia"], o["ib"]),
}


@pytest.mark.parametrize("product", CUBLAS_PRODUCTS.values(), ids=CUBLAS_PRODUCTS.keys())
def test_products_that_call_cublas_are_refused_in_a_capture(product):
    operands = _operands(cupy)
    with pytest.raises(NotImplementedError, match=CUBLAS):
        _capture(lambda: product(cupy, operands))
    np.testing.assert_allclose(product(cupy, operands).get(), product(np, _operands(np)),
                               rtol=1e-6)  # outside a capture: cuBLAS, as usual


@pytest.mark.parametrize("product", KERNEL_PRODUCTS.values(), ids=KERNEL_PRODUCTS.keys())
def test_products_by_cupys_own_kernels_are_captured(product):
    operands, made = _operands(cupy), {}
    graph, stream = _capture(lambda: made.update(result=product(cupy, operands)))
    graph.launch(stream)
    expected = product(np, _operands(np))
    np.testing.assert_allclose(made["result"].get(), expected, rtol=1e-6)
    np.testing.assert_allclose(product(cupy, operands).get(), expected, rtol=1e-6)


def test_the_refusal_names_the_product():
    a = cupy.ones((2, 3), np.float32)
    with pytest.raises(NotImplementedError,
                       match=r"cupy.dot of float32 \(2, 3\) and float32 \(3, 2\) inside a "
                             r"simulated CUDA graph capture"):
        _capture(lambda: a.dot(a.T))


def test_an_integer_product_needs_no_cublas_workspace(monkeypatch):
    from cupy_backends.cuda.libs.cublas import CUBLASError

    ints, floats = cupy.ones((4, 4), np.int64), cupy.ones((4, 4), np.float32)
    monkeypatch.setattr(sim.devices[0], "capacity", sim.devices[0].allocated + 1000)
    assert int(cupy.dot(ints, ints).sum()) == 64
    with pytest.raises(CUBLASError, match="CUBLAS_STATUS_ALLOC_FAILED"):
        cupy.dot(floats, floats)


# ---- random draws ------------------------------------------------------------------------------

def test_generator_draws_are_captured_and_curands_host_api_is_absent():
    # cupy.random.Generator launches CuPy's own kernels (cupy/random/_generator_api.pyx:1068);
    # RandomState calls cuRAND's host API, which refuses a capture (curand.pyx:140): the double
    # has no RandomState, so nothing can reach it.
    generator, made = cupy.random.default_rng(0), {}
    graph, stream = _capture(lambda: made.update(u=generator.random((64,), np.float32)))
    graph.launch(stream)
    u = made["u"].get()
    assert ((0 <= u) & (u < 1)).all()
    assert not hasattr(cupy.random, "RandomState")


# ---- copies through a MemoryPointer ------------------------------------------------------------

def _buffers():
    """A device source and target, and host memory, of 4 float32 each."""
    source = cupy.asarray(np.arange(4, dtype=np.float32))
    target = cupy.zeros(4, np.float32)
    return source, target, np.full(4, 7.0, np.float32)


SYNCHRONOUS = "the current stream is capturing, so synchronous API calls are disallowed"
REFUSED_COPIES = {
    "copy_from_device": (SYNCHRONOUS, lambda s, t, h: t.data.copy_from_device(s.data, 16)),
    "copy_from device": (SYNCHRONOUS, lambda s, t, h: t.data.copy_from(s.data, 16)),
    "copy_from_host": (SYNCHRONOUS, lambda s, t, h: t.data.copy_from_host(h.ctypes.data, 16)),
    "copy_from host": (SYNCHRONOUS, lambda s, t, h: t.data.copy_from(h.ctypes.data, 16)),
    "copy_to_host": (SYNCHRONOUS, lambda s, t, h: s.data.copy_to_host(h.ctypes.data, 16)),
    "memset": (SYNCHRONOUS, lambda s, t, h: s.data.memset(0, 16)),
    "copy_from_host_async": ("the current stream is capturing, so H2D transfers are disallowed",
                             lambda s, t, h: t.data.copy_from_host_async(h.ctypes.data, 16)),
    "copy_from_async host": ("the current stream is capturing, so H2D transfers are disallowed",
                             lambda s, t, h: t.data.copy_from_async(h.ctypes.data, 16)),
    "copy_to_host_async": ("the current stream is capturing, so D2H transfers are disallowed",
                           lambda s, t, h: s.data.copy_to_host_async(h.ctypes.data, 16)),
}
# What each copy leaves in (source, target, host), which start as [0, 1, 2, 3], 0s and 7s.
ARANGE, ZEROS, SEVENS = [0, 1, 2, 3], [0] * 4, [7] * 4
COPIED = {"copy_from_device": (ARANGE, ARANGE, SEVENS),
          "copy_from device": (ARANGE, ARANGE, SEVENS),
          "copy_from_host": (ARANGE, SEVENS, SEVENS), "copy_from host": (ARANGE, SEVENS, SEVENS),
          "copy_to_host": (ARANGE, ZEROS, ARANGE), "memset": (ZEROS, ZEROS, SEVENS),
          "copy_from_host_async": (ARANGE, SEVENS, SEVENS),
          "copy_from_async host": (ARANGE, SEVENS, SEVENS),
          "copy_to_host_async": (ARANGE, ZEROS, ARANGE)}


@pytest.mark.parametrize("name", REFUSED_COPIES)
def test_synchronous_and_host_copies_are_refused_in_a_capture(name):
    message, copy = REFUSED_COPIES[name]
    source, target, host = _buffers()
    with pytest.raises(RuntimeError, match=message):
        _capture(lambda: copy(source, target, host))
    assert (source.get().tolist(), target.get().tolist(), host.tolist()) == (
        ARANGE, ZEROS, SEVENS)  # the refused copy changed nothing
    copy(source, target, host)  # outside a capture it copies
    assert (source.get().tolist(), target.get().tolist(), host.tolist()) == COPIED[name]


@pytest.mark.parametrize("copy", [
    lambda s, t: t.data.copy_from_device_async(s.data, 16),
    lambda s, t: t.data.copy_from_async(s.data, 16),
], ids=["copy_from_device_async", "copy_from_async device"])
def test_device_to_device_copies_on_the_stream_are_captured(copy):
    source, target, _ = _buffers()
    graph, stream = _capture(lambda: copy(source, target))
    assert target.get().tolist() == [0] * 4  # recorded, not run
    graph.launch(stream)
    assert target.get().tolist() == [0, 1, 2, 3]


def test_memset_async_is_captured():
    source, _, _ = _buffers()
    graph, stream = _capture(lambda: source.data.memset_async(0, 8))
    assert source.get().tolist() == [0, 1, 2, 3]
    graph.launch(stream)
    assert source.get().tolist() == [0, 0, 2, 3]


def test_a_copy_past_the_end_of_the_buffer_is_refused():
    source, target, _ = _buffers()
    with pytest.raises(ValueError, match="past the end"):
        target.data.copy_from_device_async(source.data, 20)
