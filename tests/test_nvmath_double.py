"""The nvmath-python double (tests/nvmath_double): its names are the real package's, and its
cuBLAS refuses what cuBLAS or the GPU would. Collected in the ``pytest --cupy-double`` session
only, where ``nvmath`` is the double on the CuPy double's simulated devices (cuda-sim:N)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import cupy
import numpy as np
import nvmath
import pytest
from conftest import NVMATH_DOUBLE, require
from nvmath.bindings import cublas

sim = cupy._sim
F32 = int(nvmath.CudaDataType.CUDA_R_32F)
ONE, ZERO = np.ones(1, "float32"), np.zeros(1, "float32")


def test_the_double_is_the_double():
    assert nvmath.__file__.startswith(str(NVMATH_DOUBLE))


def test_the_api_list_is_what_the_real_nvmath_has_now(tmp_path):
    """Regenerate nvmath_api.json from the real nvmath-python (installed by the dev extra; it
    imports without a GPU) in a process that does not see the doubles, and compare."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = subprocess.run([sys.executable, "-c", "import nvmath.bindings.cublas"],
                           env=environment, cwd=tmp_path, capture_output=True, text=True)
    require(found.returncode == 0, f"the real nvmath-python is not importable: "
                                   f"{found.stderr.strip()[-300:]}")
    output = tmp_path / "api.json"
    subprocess.run([sys.executable, str(NVMATH_DOUBLE / "generate_api.py"), str(output)],
                   env=environment, cwd=tmp_path, check=True)
    assert json.loads(output.read_text()) == json.loads(
        (NVMATH_DOUBLE / "nvmath_api.json").read_text()), (
        "nvmath_api.json is stale: regenerate it with tests/nvmath_double/generate_api.py")


def test_the_double_may_not_invent_names_or_parameters():
    from nvmath import _api

    def gemm_ex(handle, transa):  # the real one takes 19 parameters
        pass

    with pytest.raises(TypeError, match="differs from the real gemm_ex"):
        _api.verify("nvmath.bindings.cublas", {"gemm_ex": gemm_ex})
    with pytest.raises(AttributeError, match="does not have"):
        _api.verify("nvmath.bindings.cublas", {"gemm_fast": gemm_ex})


def _operands(device=0, rows=4, inner=3, cols=5):
    with cupy.cuda.Device(device):
        rng = np.random.default_rng(0)
        a = cupy.asarray(rng.standard_normal((rows, inner)).astype("float32"))
        b = cupy.asarray(rng.standard_normal((inner, cols)).astype("float32"))
        return a, b, cupy.zeros((rows, cols), dtype="float32")


def _gemm(handle, a, b, c):
    """c = a @ b for row-major arrays, as gpunn.backend.blas issues it."""
    rows, inner = a.shape
    cols = b.shape[1]
    cublas.gemm_ex(handle, cublas.Operation.N, cublas.Operation.N, cols, rows, inner,
                   ONE.ctypes.data, b.data.ptr, F32, cols, a.data.ptr, F32, inner,
                   ZERO.ctypes.data, c.data.ptr, F32, cols, cublas.ComputeType.COMPUTE_32F,
                   cublas.GemmAlgo.DEFAULT_TENSOR_OP)


def _bound(stream, workspace=True):
    handle = cublas.create()
    cublas.set_stream(handle, stream.ptr)
    if workspace:
        space = cupy.empty(2**20, dtype="uint8")
        cublas.set_workspace(handle, space.data.ptr, space.nbytes)
        _bound.keep = space
    return handle


def _capturing(stream):
    stream.begin_capture()
    return cupy.cuda.using_allocator(cupy.cuda.MemoryPool().malloc)


def test_a_product_computes_counts_and_replays_in_a_graph():
    a, b, c = _operands()
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    sim.reset_counters()
    with stream:
        _gemm(handle, a, b, c)
    np.testing.assert_array_equal(c.get(), a.get() @ b.get())
    assert sim.counters["launch"] == sim.counters["cublas"] == 1
    with stream, _capturing(stream):
        _gemm(handle, a, b, c)
    graph = stream.end_capture()
    c.fill(0)
    a *= 2
    graph.launch(stream)
    np.testing.assert_array_equal(c.get(), a.get() @ b.get())  # recomputed from the new a
    cublas.destroy(handle)


def test_a_capture_without_a_workspace_of_its_own_is_refused():
    a, b, c = _operands()
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    cublas.set_stream(handle, stream.ptr)  # resets the workspace, as cublasSetStream does
    with stream, _capturing(stream):
        try:
            with pytest.raises(cublas.cuBLASError, match="ALLOC_FAILED.*no workspace"):
                _gemm(handle, a, b, c)
        finally:
            stream.end_capture()
    with stream:
        _gemm(handle, a, b, c)  # outside a capture cuBLAS uses its own pool: fine


def test_a_workspace_past_its_buffer_is_refused():
    handle = cublas.create()
    space = cupy.empty(1024, dtype="uint8")
    with pytest.raises(cublas.cuBLASError, match="INVALID_VALUE"):
        cublas.set_workspace(handle, space.data.ptr, 4096)


def test_memory_and_streams_of_another_device_are_refused():
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    a, b, c = _operands(device=1)
    with stream, pytest.raises(cublas.cuBLASError, match="EXECUTION_FAILED.*cuda-sim:1"):
        _gemm(handle, *_operands()[:2], c)
    with cupy.cuda.Device(1):
        other = cupy.cuda.Stream(non_blocking=True)
    cublas.set_stream(handle, other.ptr)
    with pytest.raises(cublas.cuBLASError, match="stream is on cuda-sim:1"):
        _gemm(handle, *_operands())


def test_an_operand_past_its_buffer_and_a_host_pointer_are_refused():
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    a, b, c = _operands()
    rows, inner = a.shape
    with stream, pytest.raises(cublas.cuBLASError, match="illegal memory access"):
        cublas.gemm_ex(handle, 0, 0, 5, rows, inner + 1, ONE.ctypes.data, b.data.ptr, F32, 5,
                       a.data.ptr, F32, inner + 1, ZERO.ctypes.data, c.data.ptr, F32, 5,
                       cublas.ComputeType.COMPUTE_32F, 99)
    host = np.zeros(20, "float32")
    with stream, pytest.raises(cublas.cuBLASError, match="not device memory"):
        cublas.gemm_ex(handle, 0, 0, 5, rows, inner, ONE.ctypes.data, b.data.ptr, F32, 5,
                       a.data.ptr, F32, inner, ZERO.ctypes.data, host.ctypes.data, F32, 5,
                       cublas.ComputeType.COMPUTE_32F, 99)


def test_the_legacy_stream_during_a_capture_is_refused():
    a, b, c = _operands()
    capturing = cupy.cuda.Stream(non_blocking=True)
    handle = cublas.create()  # bound to the legacy default stream
    with capturing, _capturing(capturing):
        try:
            with pytest.raises(cublas.cuBLASError, match="StreamCaptureImplicit"):
                _gemm(handle, a, b, c)
        finally:
            capturing.end_capture()


def test_alpha_and_beta_are_read_from_host_memory():
    a, b, c = _operands()
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    c.fill(1)
    alpha, beta = ctypes.c_float(2.0), ctypes.c_float(3.0)
    rows, inner = a.shape
    with stream:
        cublas.gemm_ex(handle, 0, 0, 5, rows, inner, ctypes.addressof(alpha), b.data.ptr, F32,
                       5, a.data.ptr, F32, inner, ctypes.addressof(beta), c.data.ptr, F32, 5,
                       cublas.ComputeType.COMPUTE_32F, 99)
    np.testing.assert_allclose(c.get(), 2 * (a.get() @ b.get()) + 3, rtol=1e-6)
