"""The CUDA kernels in kernels/, checked without a GPU: compiled by NVRTC for real GPU
architectures, and run on the host (as C++ with a small shim) against the NumPy backend."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import require
from helpers import flush_subnormals
from kernel_host import HostKernels, build, compiler

from gpunn.backend import kernels, nvrtc
from gpunn.backend.numpy_backend import NumpyBackend

DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 2, 255, 256, 257, 1000, 4099]
reference = NumpyBackend()


# ---- NVRTC ------------------------------------------------------------------------------------

@pytest.mark.compiler
@pytest.mark.parametrize("architecture", nvrtc.ARCHITECTURES)
@pytest.mark.parametrize("filename", kernels.source_files())
def test_nvrtc_compiles_every_instance(filename, architecture):
    module, reason = nvrtc.load()
    require(module is not None, reason)
    compiled = nvrtc.compile_file(module, filename, architecture)
    assert compiled.ok, f"NVRTC failed for {filename} ({architecture}):\n{compiled.log}"
    assert compiled.cubin_size > 0
    assert sorted(compiled.lowered_names) == sorted(kernels.name_expressions(filename))


@pytest.mark.compiler
def test_reading_the_compile_log_corrupts_nothing():
    # The log was read into b" " * size; for an empty log that is CPython's shared b" ", which
    # NVRTC overwrote with NUL: every space encoded afterwards in the process printed as \x00.
    module, reason = nvrtc.load()
    require(module is not None, reason)
    for filename in kernels.source_files():
        assert nvrtc.compile_file(module, filename, "sm_90").ok
    space = " "
    assert list(space.encode()) == [32]  # the shared one-byte object, read byte by byte


def test_every_kernel_instance_is_listed():
    # A kernel added to a .cu file but not to kernels.KERNELS would never be compiled or tested.
    for filename in kernels.source_files():
        source = kernels.read_source(filename)
        defined = {line.split("(")[0].split()[-1] for line in source.splitlines()
                   if line.startswith("__global__")}
        listed = {name for name, file in kernels.KERNELS.items() if file == filename}
        assert defined == listed


def test_kernels_use_64_bit_grid_stride_loops():
    source = kernels.read_source("elementwise.cu")
    assert "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x" in source
    assert "i += (long long)blockDim.x * gridDim.x" in source
    assert source.count("GPUNN_GRID_STRIDE_LOOP(i, n) {") == len(kernels.KERNELS)


# ---- host execution -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory):
    require(compiler() is not None, "no C++ compiler (g++) on PATH to run the kernels on the host")
    return HostKernels(build(tmp_path_factory.mktemp("kernels")))


def _specials(dtype):
    info = np.finfo(dtype)
    values = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, info.smallest_subnormal,
              -info.smallest_subnormal, info.tiny, -info.tiny, info.max, -info.max, 1.0, -1.0]
    return np.array(values, dtype=dtype)


def _random(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


GEOMETRIES = [{}, {"grid": 1, "block": 32}, {"grid": 3, "block": 7}]  # full cover; grid < data


def assert_twin(result, twin, *inputs):
    """The kernel's result equals its NumPy twin's on the same inputs; for float32, as CUDA
    computes it under CuPy's -ftz=true: subnormal inputs and results count as zero."""
    if result.dtype == np.float32:
        with np.errstate(invalid="ignore", over="ignore"):
            expected = twin(*(flush_subnormals(x) for x in inputs))
        np.testing.assert_array_equal(flush_subnormals(result), flush_subnormals(expected))
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            np.testing.assert_array_equal(result, twin(*inputs))


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_relu_matches_numpy(host, dtype, size, geometry):
    x = _random(size, dtype)
    assert_twin(host.relu(x, **geometry), reference.relu, x)
    dy = _random(size, dtype, seed=1)
    assert_twin(host.relu_backward(dy, x, **geometry), reference.relu_backward, dy, x)


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (3, 1), (1, 5), (7, 3), (33, 10), (130, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_bias_ops_match_numpy(host, dtype, shape, geometry):
    x, biases = _random(shape, dtype), _random((1, shape[1]), dtype, seed=2)
    assert_twin(host.bias_add(x, biases, **geometry), reference.bias_add, x, biases)
    assert_twin(host.bias_relu(x, biases, **geometry), reference.bias_relu, x, biases)


@pytest.mark.compiler
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_kernels_on_special_values(host, dtype):
    specials = _specials(dtype)
    x = np.array(np.meshgrid(specials, specials)).reshape(2, -1)  # every pair of specials
    a, b = x[0].copy(), x[1].copy()
    assert_twin(host.relu(a), reference.relu, a)
    assert_twin(host.relu_backward(b, a), reference.relu_backward, b, a)
    rows = a.reshape(len(specials), len(specials))
    bias = specials.reshape(1, -1)
    # inf + -inf and max + max, on purpose
    assert_twin(host.bias_add(rows, bias), reference.bias_add, rows, bias)
    assert_twin(host.bias_relu(rows, bias), reference.bias_relu, rows, bias)


@pytest.mark.compiler
@pytest.mark.parametrize("dtype, subnormal_passes", [(np.float32, False), (np.float64, True)])
def test_host_relu_backward_masks_exactly_where_input_is_not_positive(host, dtype,
                                                                       subnormal_passes):
    # A positive subnormal input is zero under float32 flush-to-zero, so its gradient is
    # masked as on a GPU; float64 keeps it.
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([-1.0, -0.0, 0.0, np.nan, tiny, 2.0], dtype=dtype)
    dy = np.full_like(x, 5.0)
    np.testing.assert_array_equal(host.relu_backward(dy, x),
                                  [0, 0, 0, 5, 5 if subnormal_passes else 0, 5])


@pytest.mark.compiler
def test_host_float32_kernels_flush_subnormals_as_cuda_does(host):
    # The host run must predict the GPU: without FTZ this sum would be a subnormal.
    tiny = np.finfo(np.float32).tiny
    x = np.array([[tiny * 1.5]], dtype=np.float32)  # both inputs normal, the sum subnormal
    b = np.array([[-tiny]], dtype=np.float32)
    assert host.bias_add(x, b)[0, 0] == 0.0
    assert host.bias_add(x.astype(np.float64), b.astype(np.float64))[0, 0] == np.float32(tiny) / 2


@pytest.mark.compiler
def test_host_relu_in_place(host):
    x = np.array([-1.0, 2.0, -3.0], dtype=np.float64)
    host.relu(x, out=x)
    np.testing.assert_array_equal(x, [0.0, 2.0, 0.0])


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.compiler
@pytest.mark.slow
def test_host_relu_past_two_to_the_31_elements(host):
    # With 32-bit indices the loop would wrap before the end and leave the tail untouched.
    n = 2**31 + 3
    if _available_memory() < 12 * 2**30:
        pytest.skip("needs 12 GiB of free memory for a 2^31-element array")
    x = np.zeros(n, dtype=np.float32)
    x[[2**31 - 1, 2**31, n - 1]] = -1.0
    x[2**31 + 1] = 3.0
    host.relu(x, out=x, grid=1024, block=256)
    assert x[2**31 - 1] == 0 and x[2**31] == 0 and x[n - 1] == 0 and x[2**31 + 1] == 3.0
    del x


# ---- packaging ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_wheel_contains_the_kernel_sources(tmp_path):
    root = kernels.kernel_dir().parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("gpunn is installed from a wheel, not a checkout: nothing to build")
    build_ = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert build_.returncode == 0, build_.stderr
    (wheel,) = tmp_path.glob("gpunn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for filename in kernels.source_files():
        assert f"gpunn/kernels/{filename}" in names
    # and the installed package finds them there
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    found = subprocess.run(
        [sys.executable, "-c", "from gpunn.backend import kernels; print(kernels.kernel_dir())"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(target / "gpunn" / "kernels")
