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
from helpers import assert_product_close
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
    assert_product_close(c.get(), a.get(), b.get())  # in another order than NumPy's
    assert sim.counters["launch"] == sim.counters["cublas"] == 1
    with stream, _capturing(stream):
        _gemm(handle, a, b, c)
    graph = stream.end_capture()
    c.fill(0)
    a *= 2
    graph.launch(stream)
    assert_product_close(c.get(), a.get(), b.get())  # recomputed from the new a
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


def _product(handle, a, b, out, compute):
    """out = a @ b for row-major arrays of any dtype the double takes."""
    types = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2}
    if a.dtype.name == "bfloat16":
        types[a.dtype] = 14
    rows, inner = a.shape
    cols = b.shape[1]
    cublas.gemm_ex(handle, 0, 0, cols, rows, inner, ONE.ctypes.data, b.data.ptr, types[a.dtype],
                   cols, a.data.ptr, types[a.dtype], inner, ZERO.ctypes.data, out.data.ptr,
                   types[out.dtype], cols, compute, cublas.GemmAlgo.DEFAULT)
    return out.get()


def test_a_product_sums_in_another_order_than_numpy():
    # As a GPU's does: the bits differ from NumPy's dot, the values within the arithmetic's bound
    rng = np.random.default_rng(1)
    a = cupy.asarray(rng.standard_normal((30, 700)).astype("float32"))
    b = cupy.asarray(rng.standard_normal((700, 9)).astype("float32"))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        c = _product(_bound(stream), a, b, cupy.empty((30, 9), "float32"),
                     cublas.ComputeType.COMPUTE_32F)
    assert not np.array_equal(c, a.get() @ b.get())
    assert_product_close(c, a.get(), b.get(), accumulate="float32")


def test_the_math_mode_decides_where_16_bit_split_k_sums_are_added():
    # cuBLAS's default math mode lets a split-K product add its slices in the 16-bit output type;
    # DISALLOW_REDUCED_PRECISION_REDUCTION keeps them in float32, rounded once at the end.
    rng = np.random.default_rng(2)
    a16 = rng.standard_normal((40, 1024)).astype("float16")
    b16 = rng.standard_normal((1024, 8)).astype("float16")
    a, b = cupy.asarray(a16), cupy.asarray(b16)
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    assert cublas.get_math_mode(handle) == cublas.Math.DEFAULT_MATH
    compute = cublas.ComputeType.COMPUTE_32F
    with stream:
        reduced = _product(handle, a, b, cupy.empty((40, 8), "float16"), compute)
        cublas.set_math_mode(handle, cublas.Math.DISALLOW_REDUCED_PRECISION_REDUCTION)
        kept = _product(handle, a, b, cupy.empty((40, 8), "float16"), compute)
        wide = _product(handle, a, b, cupy.empty((40, 8), "float32"), compute)
    np.testing.assert_array_equal(kept, wide.astype("float16"))  # rounded once
    assert not np.array_equal(reduced, kept)
    with pytest.raises(cublas.cuBLASError, match="INVALID_VALUE"):
        cublas.set_math_mode(handle, 1 << 12)


def test_tf32_rounds_the_operands_to_ten_mantissa_bits():
    a = cupy.asarray(np.array([[1 + 2.0**-15, 1 + 2.0**-9]], "float32"))
    b = cupy.asarray(np.ones((2, 1), "float32"))
    stream = cupy.cuda.Stream(non_blocking=True)
    handle = _bound(stream)
    with stream:
        tf32 = _product(handle, a, b, cupy.empty((1, 1), "float32"),
                        cublas.ComputeType.COMPUTE_32F_FAST_TF32)
        ieee = _product(handle, a, b, cupy.empty((1, 1), "float32"),
                        cublas.ComputeType.COMPUTE_32F)
    assert tf32[0, 0] == np.float32(2 + 2.0**-9)  # 1 + 2^-15 became 1
    assert ieee[0, 0] == np.float32(2 + 2.0**-9 + 2.0**-15)


def test_a_workspace_not_aligned_to_256_bytes_is_refused():
    handle = cublas.create()
    space = cupy.empty(4096, dtype="uint8")
    shifted, aligned = space[16:], space[256:]  # kept alive: the double resolves live arrays
    with pytest.raises(cublas.cuBLASError, match="INVALID_VALUE.*aligned to 256"):
        cublas.set_workspace(handle, shifted.data.ptr, 1024)
    cublas.set_workspace(handle, aligned.data.ptr, 1024)
