"""The CUDA kernels in kernels/, checked without a GPU: compiled by NVRTC for real GPU
architectures, and run on the host (as C++ with a small shim) against the NumPy backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import require
from helpers import flush_subnormals
from kernel_host import HostKernels, build, compiler

import gpunn
from gpunn.backend import kernels, nvrtc
from gpunn.backend.numpy_backend import NumpyBackend

DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 2, 255, 256, 257, 1000, 4099]
reference = NumpyBackend()


# ---- NVRTC ------------------------------------------------------------------------------------

# Each kernel file's compiles: the float32/float64 one, and the float16/bfloat16 one where it has
# such instances (with -DGPUNN_LOW_PRECISION and CUDA's headers).
COMPILES = [(filename, low_precision) for filename in kernels.source_files()
            for low_precision in (False, True)
            if kernels.name_expressions(filename, low_precision=low_precision)]


@pytest.mark.compiler
@pytest.mark.parametrize("architecture", nvrtc.ARCHITECTURES)
@pytest.mark.parametrize("filename, low_precision", COMPILES)
def test_nvrtc_compiles_every_instance(filename, low_precision, architecture):
    names = kernels.name_expressions(filename, low_precision=low_precision)
    module, reason = nvrtc.load()
    require(module is not None, reason)
    if low_precision:
        require(nvrtc.cuda_include_dir() is not None,
                f"CUDA's cuda_fp16.h not found: {nvrtc.HEADERS_HINT}")
    compiled = nvrtc.compile_file(module, filename, architecture, low_precision=low_precision)
    assert compiled.ok, f"NVRTC failed for {filename} ({architecture}):\n{compiled.log}"
    assert compiled.cubin_size > 0
    assert sorted(compiled.lowered_names) == sorted(names)


@pytest.mark.compiler
def test_the_float_kernels_need_no_cuda_headers():
    # Without -DGPUNN_LOW_PRECISION no header is included: NVRTC compiles the float32 and
    # float64 kernels without CUDA's headers (CuPy 14 itself does not: it refuses every compile
    # without them, tests/test_simulated.py). The low-precision compile cannot do without.
    module, reason = nvrtc.load()
    require(module is not None, reason)
    source = kernels.read_source("elementwise.cu")
    plain = nvrtc.compile_source(module, source, "e.cu", kernels.name_expressions(
        "elementwise.cu"), "sm_90", kernels.options() + kernels.CUPY_OPTIONS)
    assert plain.ok, plain.log
    half = nvrtc.compile_source(module, source, "e.cu", kernels.name_expressions(
        "elementwise.cu", low_precision=True), "sm_90",
        kernels.options(low_precision=True) + kernels.CUPY_OPTIONS)
    assert not half.ok and "cuda_bf16.h" in half.log


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


def _ptx(module, source, name, options):
    """The PTX NVRTC makes of kernel ``name`` in ``source`` for compute_90 with ``options``."""
    ok = module.nvrtcResult.NVRTC_SUCCESS
    error, program = module.nvrtcCreateProgram(source.encode(), b"k.cu", 0, [], [])
    assert error == ok
    try:
        module.nvrtcAddNameExpression(program, name.encode())
        options = [b"--gpu-architecture=compute_90", *(o.encode() for o in options)]
        (error,) = module.nvrtcCompileProgram(program, len(options), options)
        assert error == ok, error
        _, size = module.nvrtcGetPTXSize(program)
        ptx = bytearray(size)
        module.nvrtcGetPTX(program, ptx)
        return bytes(ptx).decode()
    finally:
        module.nvrtcDestroyProgram(program)


@pytest.mark.compiler
def test_nvrtc_fuses_the_optimizers_multiply_adds_which_the_host_build_does_not():
    # Why optimizers.cu equals its NumPy twin bit for bit on the host (g++ -ffp-contract=off)
    # but not always on a GPU: with gpunn's options NVRTC contracts a * b + c into one rounding.
    module, reason = nvrtc.load()
    require(module is not None, reason)
    source = kernels.read_source("optimizers.cu")
    options = kernels.NVRTC_OPTIONS + kernels.CUPY_OPTIONS
    fma = re.compile(r"\bfma\.rn\.ftz\.f32\b")  # -ftz=true: the float32 FMA flushes too
    assert fma.search(_ptx(module, source, "adam<float>", options))
    assert not fma.search(_ptx(module, source, "adam<float>", (*options, "--fmad=false")))
    host_build = (Path(__file__).parent / "kernel_host" / "__init__.py").read_text()
    assert '"-ffp-contract=off"' in host_build


def test_every_kernel_instance_is_listed():
    # A kernel added to a .cu file but not to kernels.KERNELS would never be compiled or tested.
    for filename in kernels.source_files():
        source = kernels.read_source(filename)
        defined = {line.split("(")[0].split()[-1] for line in source.splitlines()
                   if line.startswith("__global__")}
        listed = {name for name, file in kernels.KERNELS.items() if file == filename}
        assert defined == listed


def test_kernels_use_64_bit_grid_stride_loops():
    common = kernels.read_source("common.cuh")
    assert "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x" in common
    assert "i += (long long)blockDim.x * gridDim.x" in common
    for filename in kernels.source_files():
        loops = re.findall(r"^ +GPUNN_GRID_STRIDE_LOOP\(\w+, \w+\) \{$",
                           kernels.read_source(filename), re.M)
        typed = [name for name, file in kernels.KERNELS.items()
                 if file == filename and name not in kernels.UNTYPED]
        assert len(loops) == len(typed), filename


def test_kernel_files_are_self_contained_with_the_shared_header_pasted_in():
    for filename in kernels.source_files():
        source = kernels.read_source(filename)
        # only CUDA's own headers, and only in the low-precision compile
        includes = re.findall(r"^#include .*$", source, re.M)
        assert includes == ["#include <cuda_bf16.h>", "#include <cuda_fp16.h>"], filename
        guarded = source.split("#ifdef GPUNN_LOW_PRECISION\n", 1)[1].split("#endif", 1)[0]
        assert all(include in guarded for include in includes)
        assert source.count("#define GPUNN_GRID_STRIDE_LOOP") == 1, filename


def test_tally_slots_are_the_same_in_python_and_cuda():
    slots = dict(re.findall(r"^ +(TALLY_\w+) = (\d+)", kernels.read_source("common.cuh"), re.M))
    assert {name: int(value) for name, value in slots.items()} == {
        name: getattr(kernels, name) for name in
        ("TALLY_LOSS", "TALLY_CORRECT", "TALLY_NONFINITE", "TALLY_SKIPPED", "TALLY_ITERATIONS",
         "TALLY_SCALE", "TALLY_GOOD_STEPS", "TALLY_FOUND_INF", "TALLY_SIZE")}
    # the training loop zeroes the slots below TALLY_ITERATIONS every epoch: per-epoch counts
    assert kernels.TALLY_SKIPPED < kernels.TALLY_ITERATIONS < kernels.TALLY_SCALE


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


# ---- the fused training-step kernels on the host ------------------------------------------------

def tally():
    return np.zeros(kernels.TALLY_SIZE)


def assert_close(result, expected, dtype, *, rtol32=1e-5, atol32=1e-7):
    """Equal to float rounding (NaN matches NaN): exp, log and the order of a row's sum differ
    between the kernel and NumPy; float32 compared as CUDA computes it (subnormals as zero)."""
    rtol, atol = (rtol32, atol32) if dtype == np.float32 else (1e-12, 1e-15)
    np.testing.assert_allclose(flush_subnormals(result), flush_subnormals(expected), rtol=rtol,
                               atol=atol)


def _softmax_ce_both(host, logits, labels, scale_rows=None, **geometry):
    """The kernel's and the twin's (probs, dlogits, tally); float32 inputs flushed for the twin."""
    kernel_tally, twin_tally = tally(), tally()
    probs, dlogits = host.softmax_ce(logits, labels, kernel_tally, scale_rows=scale_rows,
                                     **geometry)
    twin = reference.softmax_ce(flush_subnormals(logits), labels, twin_tally,
                                scale_rows=scale_rows)
    return (probs, dlogits, kernel_tally), (*twin, twin_tally)


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (7, 10), (33, 300), (257, 3), (300, 10)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_softmax_ce_matches_numpy(host, dtype, shape, geometry):
    rows, cols = shape
    logits = (_random(shape, dtype) * 4).astype(dtype)
    labels = np.random.default_rng(3).integers(0, cols, rows)
    labels[0], labels[-1] = 0, cols - 1  # the edge classes
    logits[-1, -1] = logits[-1].max() + 1  # at least one prediction right
    (probs, dlogits, got), (expected_probs, expected_dlogits, expected) = _softmax_ce_both(
        host, logits, labels, scale_rows=rows * 3, **geometry)
    assert probs.dtype == dlogits.dtype == dtype
    assert_close(probs, expected_probs, dtype)
    assert_close(dlogits, expected_dlogits, dtype)
    assert_close(got, expected, np.float64 if dtype == np.float64 else np.float32)
    assert got[kernels.TALLY_CORRECT] == expected[kernels.TALLY_CORRECT] >= 1
    assert got[kernels.TALLY_NONFINITE] == got[kernels.TALLY_ITERATIONS] == 0


@pytest.mark.compiler
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_softmax_ce_on_non_finite_logits_and_bad_labels(host, dtype):
    big = np.finfo(dtype).max
    logits = np.array([
        [1.0, 2.0, 3.0],            # finite
        [np.nan, 0.0, 1.0],         # NaN: all probabilities NaN
        [0.0, np.inf, 1.0],         # inf - inf: NaN
        [-np.inf, -np.inf, -np.inf],
        [-np.inf, 0.0, 1.0],        # a probability of exactly 0, clipped: finite loss
        [big, -big, 0.0],           # x - max overflows to -inf: exp 0
        [0.0, 0.0, 0.0],            # a tie: argmax takes the first
        [1.0, 2.0, 3.0],            # label -1: no class
        [1.0, 2.0, 3.0],            # label 3: no class
    ], dtype=dtype)
    labels = np.array([2, 0, 1, 0, 0, 1, 0, -1, 3])
    (probs, dlogits, got), (expected_probs, expected_dlogits, expected) = _softmax_ce_both(
        host, logits, labels, grid=2, block=4)
    assert_close(probs, expected_probs, dtype)
    assert_close(dlogits, expected_dlogits, dtype)
    assert np.isnan(got[kernels.TALLY_LOSS]) and np.isnan(expected[kernels.TALLY_LOSS])
    # Right: rows 0, 6 (the first of a tie) and 1, 3 (all NaN: argmax is 0, as numpy's).
    # Non-finite losses: rows 1, 2, 3 (NaN probabilities), 7 and 8 (no such class).
    assert list(got[1:]) == list(expected[1:]) == [4, 5, 0, 0, 0, 0, 0]


@pytest.mark.compiler
def test_host_softmax_ce_flushes_float32_subnormal_probabilities(host):
    # exp(-100) is a float32 subnormal: zero under CUDA's flush-to-zero, kept in float64.
    logits = np.array([[0.0, -100.0]])
    probs32, _ = host.softmax_ce(logits.astype(np.float32), np.array([0]), tally())
    probs64, _ = host.softmax_ce(logits, np.array([0]), tally())
    assert probs32[0, 1] == 0.0 and 0 < probs64[0, 1] < np.finfo(np.float32).tiny


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_dropout_matches_numpy_bit_for_bit(host, dtype, size, geometry):
    x = _random(size, dtype)
    u = np.random.default_rng(4).random(size, dtype=dtype)
    for keep in (0.5, 0.85, 1 / 3):  # 0.85: float32(1 / keep) != 1 / float32(keep)
        if size:  # the edges of floor(u + keep): u = 1 - keep and its neighbours
            edge = dtype(1 - keep)
            u[: min(size, 4)] = [np.nextafter(edge, 0, dtype=dtype), edge,
                                 np.nextafter(edge, 1, dtype=dtype), 0][: min(size, 4)]
        mask, y = host.dropout(x, u, keep, **geometry)
        assert_twin(mask, lambda x, u, keep=keep: reference.dropout(x, u, keep)[0], x, u)
        assert_twin(y, lambda x, u, keep=keep: reference.dropout(x, u, keep)[1], x, u)
        assert set(np.unique(mask)) <= {0, dtype(1 / keep)}


OPTIMIZERS = {  # update rule -> an optimizer with non-default settings and decay
    "sgd": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01),
    "sgd_momentum": lambda: gpunn.SGD(learning_rate=0.5, decay=0.01, momentum=0.9),
    "adagrad": lambda: gpunn.Adagrad(learning_rate=0.3, decay=0.02, epsilon=1e-6),
    "rmsprop": lambda: gpunn.RMSprop(learning_rate=0.01, decay=0.03, epsilon=1e-6, rho=0.8),
    "adam": lambda: gpunn.Adam(learning_rate=0.02, decay=0.05, epsilon=1e-5, beta_1=0.8,
                               beta_2=0.99),
}


def _twin_steps(optimizer, parameters, gradients, first_iteration):
    """What gpunn/optimizers.py does in NumPy for each gradient in turn, from
    ``first_iteration`` (pre_update_params, _update, post_update_params)."""
    optimizer.iterations = first_iteration
    optimizer.state = {name: np.zeros_like(parameters) for name in optimizer.STATE}
    optimizer.state["scratch"] = np.empty_like(parameters)
    for grads in gradients:
        optimizer.pre_update_params()
        optimizer._update(parameters, grads, np)
        optimizer.post_update_params()
    return parameters, optimizer.state


def _kernel_steps(host, rule, optimizer, parameters, gradients, first_iteration, **geometry):
    """The same steps by the rule's kernel and advance, the step count in the tally."""
    state_names, _ = kernels.OPTIMIZER_RULES[rule]
    state = {name: np.zeros_like(parameters) for name in state_names}
    counts = tally()
    counts[kernels.TALLY_ITERATIONS] = first_iteration
    for grads in gradients:
        host.optimizer_step(rule, parameters, grads, state, optimizer.config(), counts,
                            **geometry)
        host.advance(counts)
    assert counts[kernels.TALLY_ITERATIONS] == first_iteration + len(gradients)
    return parameters, state


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("size", [0, 1, 257, 4099])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", OPTIMIZERS)
def test_host_optimizer_kernels_match_the_optimizers(host, rule, dtype, size, geometry):
    parameters = _random(size, dtype)
    gradients = [_random(size, dtype, seed=10 + step) for step in range(4)]
    optimizer = OPTIMIZERS[rule]()
    assert optimizer.decay and rule.startswith(type(optimizer).__name__.lower())
    # Same operations, same order and precision, no FMA on the host: equal bit for bit (not on a
    # GPU, where NVRTC fuses multiply-adds: see kernels/optimizers.cu).
    expected, expected_state = _twin_steps(optimizer, parameters.copy(), gradients, 5)
    got, state = _kernel_steps(host, rule, optimizer, parameters.copy(), gradients, 5,
                               **geometry)
    assert_twin(got, lambda: expected)
    for name in kernels.OPTIMIZER_RULES[rule][0]:
        assert_twin(state[name], lambda name=name: expected_state[name])
    if size:
        assert not np.array_equal(got, parameters)


@pytest.mark.compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", OPTIMIZERS)
@pytest.mark.parametrize("flag", ["non-finite loss", "gradients overflowed"])
def test_host_optimizer_kernels_change_nothing_after_a_non_finite_loss_or_an_overflow(
        host, rule, dtype, flag):
    parameters = _random(300, dtype)
    state = {name: _random(300, dtype, seed=5) ** 2 for name in kernels.OPTIMIZER_RULES[rule][0]}
    before = parameters.copy(), {name: array.copy() for name, array in state.items()}
    counts = tally()
    slot = kernels.TALLY_NONFINITE if flag == "non-finite loss" else kernels.TALLY_FOUND_INF
    counts[slot], counts[kernels.TALLY_ITERATIONS] = 1, 7
    host.optimizer_step(rule, parameters, _random(300, dtype, seed=6), state,
                        OPTIMIZERS[rule]().config(), counts, grid=2, block=32)
    np.testing.assert_array_equal(parameters, before[0])
    for name, array in state.items():
        np.testing.assert_array_equal(array, before[1][name])
    if flag == "non-finite loss":
        host.advance(counts)
        assert list(counts) == [0, 0, 1, 0, 7, 0, 0, 0]


@pytest.mark.compiler
@pytest.mark.parametrize("grid, block", [(1, 1), (3, 7), (2, 256)])
def test_host_advance_counts_one_step_whatever_the_launch(host, grid, block):
    counts = np.array([2.5, 3.0, 0.0, 1.0, 41.0, 8.0, 1.0, 0.0])
    host.advance(counts, 2.0, 0.5, 2, 1.0, grid=grid, block=block)
    assert list(counts) == [2.5, 3.0, 0.0, 1.0, 42.0, 16.0, 0.0, 0.0]


# ---- float16 and bfloat16 on the host -----------------------------------------------------------

HALVES = [np.float16, ml_dtypes.bfloat16]


@pytest.fixture(scope="module")
def half_host(host, tmp_path_factory):
    require(nvrtc.cuda_include_dir() is not None,
            f"CUDA's cuda_fp16.h not found for the float16 and bfloat16 kernels: "
            f"{nvrtc.HEADERS_HINT}")
    return HostKernels(host.module, build(tmp_path_factory.mktemp("half"), low_precision=True))


def assert_half_twin(result, expected, dtype):
    """The same dtype and the same values (NaN matches NaN); bfloat16 as CUDA computes it in
    float32 under -ftz=true (values below float32's smallest normal count as zero)."""
    assert result.dtype == expected.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(flush_subnormals(result).astype(np.float32),
                                  flush_subnormals(expected).astype(np.float32))


def _flushed(twin, *inputs):
    """``twin`` on the inputs as a GPU's half-precision kernels see them under -ftz=true
    (bfloat16 and float32 values below float32's smallest normal as zero)."""
    return twin(*(flush_subnormals(x) for x in inputs))


def _half_specials(dtype):
    info = ml_dtypes.finfo(dtype)
    return np.array([0.0, -0.0, np.nan, np.inf, -np.inf, float(info.smallest_subnormal),
                     -float(info.smallest_subnormal), float(info.tiny), float(info.max),
                     -float(info.max), 1.0, -1.0, 0.5, -2.5], dtype=dtype)


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 3), (33, 10), (130, 64)])
@pytest.mark.parametrize("dtype", HALVES)
def test_host_half_elementwise_kernels_match_numpy(half_host, dtype, shape, geometry):
    x, dy = (_random(shape, np.float32) * 3).astype(dtype), _random(shape, dtype, seed=1)
    x.flat[: x.size // 2] = _half_specials(dtype).repeat(x.size)[: x.size // 2]
    biases = _random((1, shape[1]), np.float32, seed=2) * 100  # float32: the master biases
    with np.errstate(invalid="ignore", over="ignore"):
        assert_half_twin(half_host.relu(x, **geometry), _flushed(reference.relu, x), dtype)
        assert_half_twin(half_host.relu_backward(dy, x, **geometry),
                         _flushed(reference.relu_backward, dy, x), dtype)
        assert_half_twin(half_host.bias_add(x, biases, **geometry),
                         _flushed(reference.bias_add, x, biases), dtype)
        assert_half_twin(half_host.bias_relu(x, biases, **geometry),
                         _flushed(reference.bias_relu, x, biases), dtype)


@pytest.mark.compiler
@pytest.mark.parametrize("dtype", HALVES)
def test_host_half_kernels_on_special_values(half_host, dtype):
    specials = _half_specials(dtype)
    rows = np.repeat(specials[:, None], len(specials), axis=1)
    bias = specials.astype(np.float32)[None, :]  # inf + -inf and max + max, on purpose
    with np.errstate(invalid="ignore", over="ignore"):
        for name in ("bias_add", "bias_relu"):
            assert_half_twin(getattr(half_host, name)(rows, bias),
                             _flushed(getattr(reference, name), rows, bias), dtype)
        assert_half_twin(half_host.relu(rows.ravel()), _flushed(reference.relu, rows.ravel()),
                         dtype)
        assert_half_twin(half_host.relu_backward(rows.T.ravel(), rows.ravel()),
                         _flushed(reference.relu_backward, rows.T.ravel(), rows.ravel()), dtype)


@pytest.mark.compiler
def test_host_float16_sums_round_once_and_overflow_to_inf(half_host):
    x = np.array([[65504.0, 65504.0, 1.0]], dtype=np.float16)
    # 65504 + 15 = 65519 rounds down to float16's max; 65504 + 16 = 65520 is the tie that rounds
    # to inf; 1 + (2^-11 + 2^-22) (exact in float32): just above the tie 1 + 2^-11, so up to
    # 1 + 2^-10, where a bias rounded to float16 first (2^-11) would tie and round to even, 1.
    biases = np.array([[15.0, 16.0, 2.0**-11 + 2.0**-22]], dtype=np.float32)
    got = half_host.bias_add(x, biases)
    assert got.tolist() == [[65504.0, np.inf, 1.0 + 2.0**-10]]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, reference.bias_add(x, biases))


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", HALVES)
def test_host_half_dropout_matches_numpy_with_the_rounded_mask(half_host, dtype, size, geometry):
    x = (_random(size, np.float32) * 7).astype(dtype)
    u = np.random.default_rng(4).random(size, dtype=np.float32)  # float32 draws, as CuPy's
    for keep in (0.5, 0.85, 1 / 3):
        mask, y = half_host.dropout(x, u, keep, **geometry)
        expected_mask, expected_y = reference.dropout(x, u, keep)
        assert_half_twin(mask, expected_mask, dtype)
        assert_half_twin(y, expected_y, dtype)
        scale = np.float32(1 / keep).astype(dtype)  # 1 / keep rounded to float32, then to T
        assert set(mask.astype(np.float32).tolist()) <= {0.0, float(scale)}
        # y is x times the rounded mask, so the backward pass (dvalues * mask) matches it
        product = (x.astype(np.float32) * mask.astype(np.float32)).astype(dtype)
        np.testing.assert_array_equal(y.astype(np.float32), product.astype(np.float32))
    if size >= 1000:  # and the unrounded 1 / keep would give other values for such data
        keep = 0.85
        mask, y = half_host.dropout(x, u, keep, **geometry)
        unrounded = (x.astype(np.float32) * np.float32(1 / keep)).astype(dtype)
        kept = mask != 0
        assert not np.array_equal(y[kept].astype(np.float32), unrounded[kept].astype(np.float32))


# ---- the loss scaler on the host ----------------------------------------------------------------

class Scaler:
    """GradScaler's settings as NumpyBackend.advance reads them."""

    def __init__(self, growth_factor=2.0, backoff_factor=0.5, growth_interval=3, min_scale=1.0):
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval, self.min_scale = growth_interval, min_scale

    def settings(self):
        return self.growth_factor, self.backoff_factor, self.growth_interval, self.min_scale


@pytest.mark.compiler
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("scale", [65536.0, 3.0, 0.125, 1e-30])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_unscale_matches_numpy(host, dtype, scale, geometry):
    gradients = _random(1000, dtype) * 1e4
    for planted in ([], [np.inf], [np.nan], [-np.inf, np.nan]):
        grads = gradients.copy()
        grads[5: 5 + len(planted)] = planted
        got_tally, expected_tally = tally(), tally()
        got_tally[kernels.TALLY_SCALE] = expected_tally[kernels.TALLY_SCALE] = scale
        got, expected = grads.copy(), grads.copy()
        host.unscale(got, got_tally, **geometry)
        with np.errstate(over="ignore", invalid="ignore"):
            reference.unscale(expected, expected_tally)
        assert_twin(got, lambda expected=expected: expected)
        assert got_tally[kernels.TALLY_FOUND_INF] == expected_tally[kernels.TALLY_FOUND_INF] \
            == (1.0 if planted else 0.0)
        np.testing.assert_array_equal(got_tally, expected_tally)


@pytest.mark.compiler
@pytest.mark.parametrize("scaler", [Scaler(), Scaler(3.0, 0.25, 1, 2.0**-3),
                                    Scaler(growth_interval=0), None])
def test_host_advance_matches_numpy(host, scaler):
    overflowed = np.random.default_rng(8).random(60) < 0.3
    got, expected = tally(), tally()
    got[kernels.TALLY_SCALE] = expected[kernels.TALLY_SCALE] = 2.0**100  # near float32's top
    settings = scaler.settings() if scaler else ()
    for step, found_inf in enumerate(overflowed):
        got[kernels.TALLY_FOUND_INF] = expected[kernels.TALLY_FOUND_INF] = found_inf
        host.advance(got, *settings)
        reference.advance(expected, scaler)
        np.testing.assert_array_equal(got, expected, err_msg=f"step {step}")
    if scaler is None:  # no scaling: the first overflow is a divergence, not a skipped step
        assert expected[kernels.TALLY_NONFINITE] == 1 and expected[kernels.TALLY_SKIPPED] == 0
    else:
        assert expected[kernels.TALLY_FOUND_INF] == 0 and expected[kernels.TALLY_NONFINITE] == 0
        assert expected[kernels.TALLY_SKIPPED] == overflowed.sum()
        assert expected[kernels.TALLY_ITERATIONS] == len(overflowed) - overflowed.sum()


@pytest.mark.compiler
def test_host_advance_keeps_the_scale_within_float32(host):
    counts = tally()
    counts[kernels.TALLY_SCALE] = float(np.finfo(np.float32).max) / 1.5
    host.advance(counts, 2.0, 0.5, 1, 1.0)  # doubling would pass float32's max: kept
    assert counts[kernels.TALLY_SCALE] == float(np.finfo(np.float32).max) / 1.5
    assert counts[kernels.TALLY_GOOD_STEPS] == 0 and counts[kernels.TALLY_ITERATIONS] == 1
    counts[kernels.TALLY_SCALE] = 3.0
    host.advance(counts, 1.1, 0.5, 1, 1.0)  # 3.3 as a float32
    assert counts[kernels.TALLY_SCALE] == float(np.float32(3.3))


@pytest.mark.compiler
@pytest.mark.parametrize("use", ["kernels", "twin"])
def test_the_scale_floor_turns_overflow_into_divergence(host, use):
    counts = tally()
    counts[kernels.TALLY_SCALE] = 8.0
    scaler = Scaler(min_scale=1.0)
    scales = []
    for _ in range(6):  # every step overflows: 8, 4, 2, 1, then at the floor the run diverged
        counts[kernels.TALLY_FOUND_INF] = 1.0
        if use == "kernels":
            host.advance(counts, *scaler.settings())
        else:
            reference.advance(counts, scaler)
        scales.append(counts[kernels.TALLY_SCALE])
    assert scales == [4.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert counts[kernels.TALLY_NONFINITE] == 1
    # 3 skipped (8, 4, 2 halved); the 4th overflow, at the floor, is the diverging step, and
    # after it nothing more is counted
    assert counts[kernels.TALLY_SKIPPED] == 3
    assert counts[kernels.TALLY_ITERATIONS] == 0


def _grad_scaler_run(torch, gradients, init_scale, growth_interval):
    """GradScaler("cpu") over ``gradients`` (scaled float32 gradients, one array per step):
    the unscaled gradients, the scale after each update and the steps taken."""
    parameter = torch.nn.Parameter(torch.zeros(gradients[0].size))
    optimizer = torch.optim.SGD([parameter], lr=0.0)
    taken = []
    optimizer.step = lambda *args, **kwargs: taken.append(1)  # GradScaler.step calls it or not
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_factor=2.0,
                                  backoff_factor=0.5, growth_interval=growth_interval)
    unscaled, scales = [], []
    for grads in gradients:
        scaler.scale(torch.ones(()))  # what a training step scales its loss with
        parameter.grad = torch.from_numpy(grads.copy())
        scaler.unscale_(optimizer)
        unscaled.append(parameter.grad.numpy().copy())
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    return unscaled, scales, len(taken)


@pytest.mark.compiler
@pytest.mark.parametrize("use", ["kernels", "twin"])
def test_loss_scaling_matches_torch_grad_scaler(host, use):
    try:
        import torch
    except ImportError:
        torch = None
    require(torch is not None, "PyTorch is not installed (pip install torch) for the reference run")
    rng = np.random.default_rng(9)
    gradients = [(rng.standard_normal(257) * 3e3).astype(np.float32) for _ in range(30)]
    for step, value in {4: np.inf, 5: np.nan, 6: -np.inf, 13: np.nan, 22: np.inf}.items():
        gradients[step][step * 7] = value  # overflowed steps, two and three in a row
    gradients[27][:] = 3e38  # finite, though near float32's top
    expected_unscaled, expected_scales, expected_taken = _grad_scaler_run(
        torch, gradients, 2.0**16, 3)
    counts = tally()
    counts[kernels.TALLY_SCALE] = 2.0**16
    scaler = Scaler(2.0, 0.5, 3, min_scale=0.0)
    for step, grads in enumerate(gradients):
        grads = grads.copy()
        if use == "kernels":
            host.unscale(grads, counts)
            host.advance(counts, *scaler.settings())
        else:
            with np.errstate(invalid="ignore"):
                reference.unscale(grads, counts)
            reference.advance(counts, scaler)
        np.testing.assert_array_equal(grads, expected_unscaled[step], err_msg=f"step {step}")
        assert counts[kernels.TALLY_SCALE] == expected_scales[step], f"step {step}"
    assert counts[kernels.TALLY_SKIPPED] == 30 - expected_taken == 5
    assert counts[kernels.TALLY_ITERATIONS] == expected_taken
    assert len(set(expected_scales)) > 3  # the scale grew and backed off along the way


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
    # 2^31 threads, each over neighbouring elements (a few seconds; a grid of 1024 blocks strides
    # 1 MiB per step and took minutes); the first three go round the loop past 2^31.
    host.relu(x, out=x, grid=2**23, block=256)
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
