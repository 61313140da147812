"""The CuPy double's own tests: each strictness rule fires, as real CuPy's does.

Collected only in the ``pytest --cupy-double`` session, where ``cupy`` is the double. The
expected messages are CuPy 14.2's (cupy/_core/_kernel.pyx, core.pyx, raw.pyx, function.pyx).
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import subprocess
import sys

import cupy
import numpy as np
import pytest
from conftest import CUPY_DOUBLE, require

import gpunn
from gpunn.backend import kernels

sim = cupy._sim


@pytest.fixture(autouse=True)
def _device_zero_and_clean_counters():
    cupy.cuda.Device(0).use()
    sim.reset_counters()
    yield
    cupy.cuda.Device(0).use()


def _device_array(values=(1.0, -2.0, 3.0), dtype=np.float32):
    return cupy.asarray(np.array(values, dtype=dtype))


# ---- mixing host and device arrays -------------------------------------------------------------

@pytest.mark.parametrize("operation", [
    lambda d, h: d + h,
    lambda d, h: h + d,
    lambda d, h: cupy.maximum(d, h),
    lambda d, h: cupy.where(h > 0, d, 0),
    lambda d, h: cupy.dot(d, h),
    lambda d, h: cupy.add(d, d, out=h),
])
def test_numpy_arrays_mixed_into_device_operations_are_refused(operation):
    device, host = _device_array(), np.ones(3, np.float32)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        operation(device, host)


def test_scalars_mix_in_and_keep_the_array_dtype():
    device = _device_array()
    assert (device * 0.5).dtype == np.float32 and (device + np.float32(1)).dtype == np.float32
    with pytest.raises(TypeError, match="Unsupported type"):
        device + np.array(1.0, np.float32)  # a 0-d host array is not a scalar to CuPy
    assert bool((device > np.array(0.0)).any())  # ...except in a comparison


@pytest.mark.parametrize("conversion", [
    np.asarray,
    lambda d: np.arange(3)[cupy.arange(2)],
    lambda d: np.testing.assert_array_equal(d, [1, -2, 3]),
])
def test_implicit_conversion_to_numpy_is_refused(conversion):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        conversion(_device_array())


def test_host_arrays_cannot_be_assigned_into_device_arrays():
    device = _device_array()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        device[...] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for copyto"):
        cupy.copyto(device, np.zeros(3, np.float32))
    device[np.array([0, 2])] = np.array([5.0, 6.0], np.float32)  # advanced indices copy in
    np.testing.assert_array_equal(device.get(), [5, -2, 6])


def test_numpy_functions_dispatch_to_the_device():
    result = np.isfinite(_device_array())
    assert isinstance(result, cupy.ndarray) and bool(result.all())
    assert not hasattr(cupy.ndarray, "__index__")  # so numpy_array[device_scalar] fails


# ---- names and keyword arguments ----------------------------------------------------------------

def test_keyword_arguments_the_real_cupy_lacks_are_refused():
    device = _device_array()
    with pytest.raises(TypeError, match="unexpected keyword argument 'initial'"):
        cupy.sum(device, initial=0)  # NumPy has it; CuPy 14.2 does not
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cupy.add(device, device, where=device > 0)


def test_a_name_the_real_cupy_lacks_cannot_be_exposed():
    with pytest.raises(AttributeError, match="which CuPy 14.2.0 does not have"):
        cupy._core.verify_namespace("cupy", {"nanfoo": None})
    with pytest.raises(AttributeError, match="cupy.ndarray.__index__"):
        cupy._core.verify_class("cupy.ndarray", type("ndarray", (), {"__index__": None}))


def _parameters(function):
    """(named parameters, takes *args, takes **kwargs) of a double function, self left out."""
    params = list(inspect.signature(function).parameters.values())[1 if inspect.isclass(
        function) is False and function.__qualname__.count(".") else 0:]
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
             and p.name != "self" and not p.name.startswith("_")]
    return (names, any(p.kind == p.VAR_POSITIONAL for p in params),
            any(p.kind == p.VAR_KEYWORD for p in params))


@pytest.mark.parametrize("namespace, owner", [
    ("cupy", cupy), ("cupy.ndarray", cupy.ndarray), ("cupy.random.Generator",
                                                     cupy.random.Generator),
    ("cupy.RawModule", cupy.RawModule), ("cupy.cuda.Device", cupy.cuda.Device),
    ("cupy.cuda.runtime", cupy.cuda.runtime), ("cupy.random", cupy.random),
    ("cupy.cuda.MemoryPointer", cupy.cuda.MemoryPointer),
])
def test_every_parameter_the_double_takes_the_real_cupy_takes(namespace, owner):
    """Functions written out in the double take no parameter, *args or **kwargs that the real
    CuPy function lacks (the ones that are NumPy's behind check_call are checked per call)."""
    api = cupy._core.API["namespaces"][namespace]
    checked = 0
    for name, value in vars(owner).items():
        if (name.startswith("_") or not inspect.isfunction(value) or name not in api
                or getattr(value, "checked_at_call", False)):
            continue
        real = api[name]
        if real["params"] is None or real.get("var_keyword") and real.get("var_positional"):
            continue
        names, star_args, star_kwargs = _parameters(value)
        assert set(names) <= set(real["params"]), (name, names, real["params"])
        assert not star_args or real["var_positional"], name
        assert not star_kwargs or real["var_keyword"], name
        checked += 1
    assert checked > 0


@pytest.mark.slow
def test_the_api_list_is_what_the_real_cupy_has_now(tmp_path):
    """Regenerate cupy_api.json from the real CuPy (installed beside, by .ci/run, in the folder
    named by GPUNN_REAL_CUPY) and compare."""
    folder = os.environ.get("GPUNN_REAL_CUPY", "")
    require(bool(folder) and os.path.isdir(folder),
            "the real CuPy is not installed for comparison: pip install --target DIR --no-deps "
            "cupy-cuda12x==14.2.0 cuda-pathfinder==1.9.1, then GPUNN_REAL_CUPY=DIR")
    output = tmp_path / "api.json"
    result = subprocess.run([sys.executable, str(CUPY_DOUBLE / "generate_api.py"), str(output)],
                            env={**os.environ, "PYTHONPATH": folder}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fresh = json.loads(output.read_text())
    committed = json.loads((CUPY_DOUBLE / "cupy_api.json").read_text())
    assert fresh["cupy_version"] == committed["cupy_version"]
    assert fresh["namespaces"] == committed["namespaces"], (
        "cupy_api.json is stale: regenerate it with tests/cupy_double/generate_api.py")


# ---- devices ------------------------------------------------------------------------------------

def test_devices_are_simulated_and_named_so():
    assert cupy.cuda.runtime.getDeviceCount() >= 2
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    assert "simulated" in name and "not a GPU" in name
    assert "cuda-sim:1" in repr(cupy.cuda.Device(1))


def test_the_current_device_is_a_stack():
    with cupy.cuda.Device(1):
        assert cupy.cuda.runtime.getDevice() == 1
        with cupy.cuda.Device(0):
            assert cupy.cuda.get_device_id() == 0
        assert _device_array().device.id == 1
    assert cupy.cuda.runtime.getDevice() == 0
    cupy.cuda.Device(1).use()
    assert cupy.cuda.Device().id == 1


def test_operations_across_devices_are_refused():
    with cupy.cuda.Device(1):
        on_one = _device_array()
    on_zero = _device_array()
    for operation in (lambda: on_one + on_zero, lambda: on_one.sum(), lambda: on_one * 2,
                      lambda: cupy.dot(on_one, on_zero)):
        with pytest.raises(ValueError, match=r"resides \(1\) is different from the current "
                                             r"device \(0\)"):
            operation()
    copied = cupy.asarray(on_one)  # asarray copies to the current device, as CuPy does
    assert copied.device.id == 0 and copied is not on_one
    np.testing.assert_array_equal(on_one.get(), copied.get())  # get() works from anywhere


def test_random_generators_are_bound_to_their_device():
    with cupy.cuda.Device(1):
        generator = cupy.random.default_rng(0)
        assert generator.random(3, dtype=np.float32).device.id == 1
    with pytest.raises(RuntimeError, match="allocated in a different device"):
        generator.random(3)


@pytest.mark.parametrize("value, expected", [(None, [0, 1, 2]), ("2", [2]), ("2,0", [2, 0]),
                                             ("0,7,1", [0]), ("1,1", [1]), ("", [])])
def test_a_process_sees_the_gpus_cuda_visible_devices_names(value, expected):
    assert sim.visible_devices(value, 3) == expected


def test_a_process_shown_one_gpu_calls_it_device_0():
    # As Slurm's srun --gpus-per-task=1 shows rank 1 the machine's second GPU.
    code = ("import cupy; r = cupy.cuda.runtime; "
            "print(r.getDeviceCount(), r.getDeviceProperties(0)['pciBusID'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "GPUNN_CUPY_DOUBLE_VISIBLE_DEVICES": "1",
                                             "PYTHONPATH": str(CUPY_DOUBLE)})
    assert result.stdout.split() == ["1", "1"], result.stderr


def test_xorwow_keeps_a_state_per_thread_of_its_kernels():
    sms = cupy.cuda.Device(0).attributes["MultiProcessorCount"]
    assert cupy.random.default_rng(0).bit_generator._state_size() == 8 * 256 * sms  # CuPy's
    gc.collect()
    before = sim.devices[0].allocated
    bits = cupy.random.XORWOW(0, size=512)
    assert bits._state_size() == 512 and sim.devices[0].allocated == before + 512 * 48
    with pytest.raises(ValueError, match="multiple of 256"):
        cupy.random.XORWOW(0, size=300)
    with cupy.cuda.Device(1):
        on_one = cupy.random.XORWOW(0, size=256)
    with pytest.raises(RuntimeError, match="allocated in a different device"):
        cupy.random.Generator(on_one).random(3)


def test_out_of_memory_past_the_capacity_and_memory_comes_back(monkeypatch):
    gc.collect()  # what earlier tests left on the device is freed, or counted below
    monkeypatch.setattr(sim.devices[1], "capacity", sim.devices[1].allocated + 10_000)
    with cupy.cuda.Device(1):
        free_before, total = cupy.cuda.runtime.memGetInfo()
        assert free_before == 10_000 and total == sim.devices[1].capacity
        kept = cupy.zeros(1000, dtype=np.float32)
        assert cupy.cuda.runtime.memGetInfo()[0] == free_before - 4000
        with pytest.raises(cupy.cuda.memory.OutOfMemoryError, match="Out of memory allocating "
                                                                    "8,000 bytes"):
            cupy.zeros(1000, dtype=np.float64)
        del kept
        gc.collect()
        assert cupy.cuda.runtime.memGetInfo()[0] == free_before


def test_a_full_device_fails_cublas_with_its_own_error(monkeypatch):
    from cupy_backends.cuda.libs.cublas import CUBLASError

    a = cupy.ones((4, 4), dtype=np.float32)
    monkeypatch.setattr(sim.devices[0], "capacity", sim.devices[0].allocated + 1000)
    with pytest.raises(CUBLASError, match="CUBLAS_STATUS_ALLOC_FAILED") as raised:
        cupy.dot(a, a)
    assert raised.value.status == 3


def test_an_older_gpu_reports_its_compute_capability_as_cupy_does(monkeypatch):
    monkeypatch.setattr(sim, "compute_capability", "52")
    properties = cupy.cuda.runtime.getDeviceProperties(1)
    assert cupy.cuda.Device(1).compute_capability == "52"
    assert (properties["major"], properties["minor"]) == (5, 2)


def test_no_driver_looks_as_it_does_to_cupy(monkeypatch):
    monkeypatch.setattr(sim, "driver_version", 0)
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="cudaErrorInsufficientDriver"):
        cupy.cuda.runtime.getDeviceCount()
    assert cupy.cuda.runtime.driverGetVersion() == 0


# ---- kernels ------------------------------------------------------------------------------------

@pytest.fixture
def relu_module():
    return cupy.RawModule(code=kernels.read_source("elementwise.cu"),
                          options=kernels.NVRTC_OPTIONS,
                          name_expressions=kernels.name_expressions("elementwise.cu"))


def test_raw_kernels_run_for_real(relu_module):
    relu = relu_module.get_function("relu<float>")
    x = _device_array((-1.0, 2.0, -0.5))
    y = cupy.empty_like(x)
    relu((1,), (32,), (x, y, np.int64(3)))
    np.testing.assert_array_equal(y.get(), [0, 2, 0])
    assert sim.counters["raw_launch"] == 1


@pytest.mark.parametrize("args, error, message", [
    (lambda x, y: (x, y), TypeError, "takes 3 arguments"),
    (lambda x, y: (x, y, np.int32(3)), TypeError, "needs a int64 scalar"),
    (lambda x, y: (x, y, 3.0), TypeError, "needs a int64 scalar"),
    (lambda x, y: (x, np.empty(3, np.float32), 3), TypeError, "numpy.ndarray of shape"),
    (lambda x, y: (x.astype(np.float64), y, 3), TypeError, "points to float but"),
    (lambda x, y: (x, y, 3, 4), TypeError, "takes 3 arguments"),
    (lambda x, y: [x, y, 3], TypeError, "args must be a tuple"),
])
def test_kernel_arguments_are_checked_against_the_signature(relu_module, args, error, message):
    relu = relu_module.get_function("relu<float>")
    x = _device_array()
    with pytest.raises(error, match=message):
        relu((1,), (32,), args(x, cupy.empty_like(x)))


def test_kernel_launches_need_tuples_and_their_own_device(relu_module):
    relu = relu_module.get_function("relu<float>")
    x = _device_array()
    with pytest.raises(TypeError, match="Argument 'grid' has incorrect type"):
        relu(1, (32,), (x, x, 3))
    with cupy.cuda.Device(1), pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_HANDLE"):
        relu((1,), (32,), (x, x, 3))


def test_kernels_flush_float32_subnormals_as_cupy_compiles_them(relu_module):
    tiny = np.finfo(np.float32).tiny
    x = _device_array((tiny * 1.5,))
    b = _device_array((-tiny,))
    y = cupy.empty_like(x)
    relu_module.get_function("bias_add<float>")((1,), (32,), (x, b, y, 1, 1))
    assert float(y[0]) == 0.0  # a subnormal sum flushes to zero on a GPU
    x64, b64 = x.astype(np.float64), b.astype(np.float64)
    y64 = cupy.empty_like(x64)
    relu_module.get_function("bias_add<double>")((1,), (32,), (x64, b64, y64, 1, 1))
    assert float(y64[0]) == np.float64(np.float32(tiny)) / 2


def test_get_function_makes_a_new_kernel_every_call(relu_module):
    first, second = (relu_module.get_function("relu<float>") for _ in range(2))
    assert first is not second and sim.counters["get_function"] == 2


def test_options_nvrtc_rejects_are_refused():
    with pytest.raises(ValueError, match="NVRTC would reject"):
        cupy.RawModule(code="", options=("-fast",))
    with pytest.raises(TypeError, match="options must be a tuple"):
        cupy.RawModule(code="", options=["--std=c++14"])


# ---- counting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sync", [float, int, bool, lambda d: d.item(), lambda d: d.get(),
                                  cupy.asnumpy, lambda d: cupy.cuda.Device().synchronize(),
                                  lambda d: repr(d)])
def test_every_synchronisation_is_counted(sync):
    device = cupy.asarray(np.float32(2.5))
    sim.reset_counters()
    sync(device)
    assert sim.counters["sync"] == 1


def test_launches_are_counted_and_views_are_free():
    device = _device_array()
    sim.reset_counters()
    view = device.reshape(3, 1)[1:]
    assert sim.counters["launch"] == 0 and view.shape == (2, 1)
    (device * 2).sum()
    assert sim.counters["launch"] == 2 and sim.counters["sync"] == 0


def test_gpunn_on_the_double_says_it_is_simulated():
    backend = gpunn.device("cuda:0")
    assert backend.xp is cupy and "cuda-sim" in repr(cupy.cuda.Device(0))


# ---- copies from pinned memory ------------------------------------------------------------------

def _copy_from_pinned(stream):
    """A device array and the pinned host array copied into it on ``stream``."""
    memory = cupy.cuda.alloc_pinned_memory(12)
    host = np.frombuffer(memory, np.float32, 3)
    host[...] = (1.0, 2.0, 3.0)
    device = cupy.zeros(3, dtype=np.float32)
    device.set(host, stream=stream)
    return device, host


def _get_on(stream, device):
    with stream:
        device.get()


@pytest.mark.parametrize("wait", [lambda stream, device: stream.synchronize(),
                                  lambda stream, device: stream.record().synchronize(),
                                  lambda stream, device: cupy.cuda.Device(0).synchronize(),
                                  _get_on],
                         ids=["stream", "event-after", "device", "get-on-its-stream"])
def test_pinned_memory_may_be_freed_once_its_copies_were_waited_for(wait):
    stream = cupy.cuda.Stream(non_blocking=True)
    device, host = _copy_from_pinned(stream)
    wait(stream, device)
    del host
    assert sim.take_hazards() == [] and device.get().tolist() == [1.0, 2.0, 3.0]


def test_pinned_memory_freed_while_a_copy_from_it_may_run_is_a_hazard():
    stream = cupy.cuda.Stream(non_blocking=True)
    before = stream.record()
    device, host = _copy_from_pinned(stream)
    before.synchronize()  # recorded before the copy: does not wait for it
    device.get()  # on the default stream, not the copy's
    del host
    hazards = sim.take_hazards()
    assert len(hazards) == 1 and "12 bytes of pinned host memory were freed while a copy" \
        in hazards[0]


# ---- CUDA graphs --------------------------------------------------------------------------------

def _capture(work, *, private_pool=True):
    stream = cupy.cuda.Stream(non_blocking=True)
    pool = cupy.cuda.MemoryPool()
    with stream:
        allocator = cupy.cuda.using_allocator(pool.malloc if private_pool else None)
        with allocator:
            stream.begin_capture()
            try:
                work()
            finally:
                graph = stream.end_capture()
    return graph, stream


def test_a_capture_records_work_that_runs_only_when_the_graph_is_launched():
    a = _device_array((1.0, 2.0))
    made = {}

    def work():
        made["b"] = a * 2
        a[...] += made["b"]

    graph, stream = _capture(work)
    assert a.get().tolist() == [1.0, 2.0]  # nothing ran: a GPU records, it does not run
    assert np.isnan(made["b"].get()).all()  # memory made in a capture holds nothing yet
    sim.reset_counters()
    graph.launch(stream)
    graph.launch(stream)
    assert a.get().tolist() == [9.0, 18.0] and made["b"].get().tolist() == [6.0, 12.0]
    assert sim.counters["launch"] == 2 and sim.counters["graph_launch"] == 2


@pytest.mark.parametrize("sync", [lambda a: float(a[0]), lambda a: a.get(),
                                  lambda a: cupy.cuda.Device(0).synchronize()])
def test_synchronising_inside_a_capture_is_refused(sync):
    a = _device_array()
    with pytest.raises((RuntimeError, cupy.cuda.runtime.CUDARuntimeError),
                       match="capturing|StreamCapture"):
        _capture(lambda: sync(a))


def test_host_data_cannot_be_copied_in_during_a_capture():
    a = _device_array()
    with pytest.raises(RuntimeError, match="capturing, so H2D transfers are disallowed"):
        _capture(lambda: a.set(np.zeros(3, np.float32)))


def test_a_capture_must_allocate_from_a_pool_of_its_own():
    a = _device_array()
    with pytest.raises(RuntimeError, match="default memory pool during a CUDA graph capture"):
        _capture(lambda: a * 2, private_pool=False)
    _capture(lambda: a * 2)  # under using_allocator(MemoryPool().malloc): allowed


def test_captures_need_a_stream_of_their_own():
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        cupy.cuda.Stream.null.begin_capture()


def test_a_failed_capture_changes_nothing():
    a = _device_array()

    def work():
        a[...] = 5.0
        float(a[0])

    with pytest.raises(RuntimeError):
        _capture(work)
    assert a.get().tolist() == [1.0, -2.0, 3.0]


def test_events_time_the_host_and_say_so_by_being_no_gpu(capsys):
    # What the GPU check uses on the double (benchmarks/gpu_measure.py, gpu.py): CUDA event
    # times are the host's clock (work runs as it is issued), the profiler range marks and
    # set_allocator exist and change nothing, show_config says it is the double.
    start, stop, never = cupy.cuda.Event(), cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    cupy.cuda.runtime.profilerStart()
    cupy.ones(1000).sum()
    cupy.cuda.runtime.profilerStop()
    stop.record()
    assert cupy.cuda.get_elapsed_time(start, stop) >= 0
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError):
        cupy.cuda.get_elapsed_time(start, never)
    cupy.cuda.set_allocator(None)
    assert float(cupy.ones(3).sum()) == 3
    cupy.show_config()
    assert "the CuPy double" in capsys.readouterr().out


def test_without_the_cuda_headers_no_kernel_compiles(monkeypatch):
    # CuPy 14.2 adds CUDA's include folder to every compile and refuses to compile without it
    # (cupy/_core/core.pyx, assemble_cupy_compiler_options), whatever the source includes: the
    # float32 kernels too.
    from gpunn.backend import nvrtc

    monkeypatch.setattr(nvrtc, "cuda_include_dir", lambda: None)
    module = cupy.RawModule(code=kernels.read_source("elementwise.cu"),
                            options=kernels.NVRTC_OPTIONS,
                            name_expressions=kernels.name_expressions("elementwise.cu"))
    with pytest.raises(RuntimeError, match="Failed to find CUDA headers.*ctk"):
        module.get_function("relu<float>")


def test_where_has_no_bfloat16_loop():
    # CuPy 14.2's where ufunc lists no bfloat16 loop: bfloat16 choices come back float32.
    import ml_dtypes

    x = cupy.asarray(np.array([1.5, -2.0], ml_dtypes.bfloat16))
    chosen = cupy.where(x.astype(np.float32) > 0, x, cupy.zeros((), x.dtype))
    assert chosen.dtype == np.float32
    np.testing.assert_array_equal(chosen.get(), [1.5, 0.0])
    assert cupy.where(x.astype(np.float32) > 0, x.astype(np.float16), 0).dtype == np.float16
