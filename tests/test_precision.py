"""Precision policies (gpunn/precision.py): float32, tf32, bfloat16 and float16 with its loss
scaler. What is checked where:

- against PyTorch: one bfloat16 training step on the CPU only (torch.autocast("cpu")), loss and
  parameters; no CUDA policy is compared with PyTorch here (benchmarks/gpu_speed.py runs them
  side by side on a GPU, for speed);
- on every device under test: the policies are accepted or refused as the device allows, the
  spiral model's loss falls by a tenth under each (on CUDA with its step captured), float16's
  scaler skips overflowing steps and ends a run that
  overflows at its floor, and saved weights stay float32;
- on CUDA (a GPU, or with --cupy-double the simulated cuda-sim devices: not a GPU): no policy
  adds a synchronisation or an uncaptured step (counted on the double only), bfloat16 needs a
  CuPy with bfloat16 arrays. On the double the 16-bit products are the nvmath double's NumPy
  arithmetic and the 16-bit kernels a host build, so the policies' numbers there say nothing of
  a GPU's rounding; tests/test_blas.py bounds the products, tests/test_backend.py compares the
  16-bit kernels with their twins.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_model

import gpunn as gn
from gpunn import precision


def _spiral():
    return gn.datasets.spiral_data(60, 3, seed=0)


def _supported(backend):
    return precision.supported(backend)


def _model(backend, policy, *, sizes=(2, 32, 32, 3), dropout=0.0, head="softmax", lr=0.05):
    gn.seed(5)
    model = build_model(backend, sizes, head=head, learning_rate=lr)
    if dropout:
        model.layers.insert(2, gn.Dropout(dropout))
    model.set(precision=policy)
    model.finalize()
    return model


# ---- the policy object and its errors ----------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("float8", "precision must be one of float32, tf32, bfloat16, float16"),
    (16, "precision must be one of"),
])
def test_unknown_policies_are_refused(spec, message):
    with pytest.raises(gn.GpunnError, match=message):
        gn.Model(device="cpu", precision=spec)


def test_only_float16_scales_the_loss():
    assert precision.policy("float16").scaler.scale == 2.0**16
    assert precision.policy("float16").scaler.growth_interval == 2000  # GradScaler's defaults
    assert precision.policy("bfloat16").scaler is None
    with pytest.raises(gn.GpunnError, match="Only the float16 policy scales the loss"):
        precision.policy("bfloat16", scaler=precision.LossScaler())
    with pytest.raises(gn.GpunnError, match="backoff_factor"):
        precision.LossScaler(backoff_factor=1.5)


def test_a_float64_model_refuses_a_low_precision_policy():
    model = gn.Model(device="cpu", dtype="float64", precision="bfloat16")
    model.add(gn.Dense(2, 3))
    with pytest.raises(gn.GpunnError, match="needs float32 master weights.*float64"):
        model.finalize()


@pytest.mark.parametrize("name", ["float16", "tf32"])
def test_the_cpu_refuses_float16_and_tf32_and_says_why(name):
    model = gn.Model(device="cpu", precision=name)
    model.add(gn.Dense(2, 3))
    with pytest.raises(gn.GpunnError, match=r"CUDA only.*bfloat16"):
        model.finalize()
    assert precision.supported(gn.device("cpu")) == ["float32", "bfloat16"]


# ---- against PyTorch's autocast ----------------------------------------------------------------

def _one_step(policy, X, y, lr):
    """Parameters before and after one full-batch SGD step of an 8-64-64-5 network, and the
    step's data loss."""
    model = _model("cpu", policy, sizes=(8, 64, 64, 5))
    model.set(optimizer=gn.SGD(learning_rate=lr))
    model.finalize()
    before = model.get_parameters()
    history = model.train(X, y, epochs=1, batch_size=len(X), shuffle=False, verbose=False)
    return before, model.get_parameters(), history["data_loss"][0]


def _torch_autocast_step(torch, before, X, y, lr):
    linears = []
    for weights, biases in before:
        linear = torch.nn.Linear(*weights.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights.T))
            linear.bias.copy_(torch.from_numpy(biases[0]))
        linears.append(linear)
    network = torch.nn.Sequential(linears[0], torch.nn.ReLU(), linears[1], torch.nn.ReLU(),
                                  linears[2])
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = network(torch.from_numpy(X))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))  # in float32
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    optimizer.step()
    after = [(linear.weight.detach().numpy().T.copy(), linear.bias.detach().numpy()[None])
             for linear in linears]
    return after, loss.item()


def test_a_bfloat16_step_on_the_cpu_agrees_with_torch_autocast():
    from conftest import require

    try:
        import torch
    except ImportError:
        torch = None
    require(torch is not None, "PyTorch is not installed (the dev extra brings it)")
    rng = np.random.default_rng(0)
    X = (2 * rng.standard_normal((256, 8))).astype(np.float32)
    y = rng.integers(0, 5, 256)
    before, after, loss = _one_step("bfloat16", X, y, 1.0)
    torch_after, torch_loss = _torch_autocast_step(torch, before, X, y, 1.0)
    assert loss == pytest.approx(torch_loss, rel=1e-4)

    def worst(after):  # the largest difference of an update from PyTorch's, relative
        return max(np.abs((mine - old) - (theirs - old)).max() / np.abs(theirs - old).max()
                   for pair, torch_pair, old_pair in zip(after, torch_after, before)
                   for mine, theirs, old in zip(pair, torch_pair, old_pair))

    # Measured: 0.0025 (PyTorch rounds the weight gradients to bfloat16, gpunn keeps them in
    # float32); float32 training differs from the same autocast step by 0.13, so the bound
    # tells the two apart.
    assert worst(after) < 0.01
    assert worst(_one_step("float32", X, y, 1.0)[1]) > 0.05


# ---- every policy trains, on every device ------------------------------------------------------

@pytest.mark.parametrize("policy", precision.POLICIES)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_every_policy_trains_the_spiral_model(backend, policy, dropout):
    if policy not in _supported(backend):
        pytest.skip(f"{policy} does not run on {backend.device} (test_the_cpu_refuses_...)")
    X, y = _spiral()
    model = _model(backend, policy, dropout=dropout)
    first = model.evaluate(X, y)[0]
    history = model.train(X, y, epochs=40, batch_size=60, verbose=False)
    assert history["loss"][-1] < 0.9 * first
    compute = {"bfloat16": "bfloat16", "float16": "float16"}.get(policy, "float32")
    assert model.layers[0].compute_weights.dtype == np.dtype(compute)
    assert model.parameters.dtype == model.gradients.dtype == np.float32  # the master copy
    assert model.predict(X[:5]).dtype == np.float32
    if backend.device != "cpu":
        assert history.cuda_graph == "captured"
    if policy == "float16":
        assert history["loss_scale"][-1] == 2.0**16 and history["skipped_steps"] == [0] * 40


def test_a_low_precision_model_saves_float32_weights_and_loads_under_any_policy(tmp_path):
    X, y = _spiral()
    model = _model("cpu", "bfloat16")
    model.train(X, y, epochs=3, batch_size=60, verbose=False)
    model.save(tmp_path / "model.npz")
    loaded = gn.Model.load(tmp_path / "model.npz", device="cpu")
    assert loaded.precision.name == "bfloat16"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for (w, _), (w2, _) in zip(model.get_parameters(), loaded.get_parameters()):
        assert w2.dtype == np.float32
        np.testing.assert_array_equal(w, w2)
    loaded.set(precision="float32")
    loaded.finalize()
    assert np.abs(loaded.predict(X) - model.predict(X)).max() < 0.05


# ---- the float16 loss scaler in training --------------------------------------------------------

def _cuda_only(backend):
    if backend.device == "cpu":
        pytest.skip("float16 runs on CUDA only: a GPU or the double")


def test_float16_overflows_skip_steps_and_lower_the_scale(backend):
    _cuda_only(backend)
    X, y = _spiral()
    model = _model(backend, precision.policy(
        "float16", scaler=precision.LossScaler(scale=2.0**40)))
    before = model.get_parameters()
    # The first steps' scaled gradients overflow float16 (65504): each is skipped and halves
    # the scale, as GradScaler does, until the gradients fit; then training goes on.
    history = model.train(X, y, epochs=4, batch_size=18, verbose=False, shuffle=False)
    skipped = int(sum(history["skipped_steps"]))
    assert 10 <= skipped < 40
    assert history["loss_scale"][-1] == 2.0**40 * 0.5**skipped
    assert model.optimizer.iterations == 4 * 10 - skipped  # skipped steps are not counted
    assert history.cuda_graph == "captured"
    assert all(np.isfinite(history["loss"]))
    assert not np.array_equal(before[0][0], model.get_parameters()[0][0])


def test_float16_gradients_that_overflow_at_the_floor_end_training(backend):
    _cuda_only(backend)
    X, y = _spiral()
    model = _model(backend, precision.policy(
        "float16", scaler=precision.LossScaler(scale=2.0**40, min_scale=2.0**39)))
    before = model.get_parameters()
    with pytest.raises(gn.TrainingDivergedError, match="epoch 1, step 2;"):
        model.train(X, y, epochs=1, batch_size=18, verbose=False, shuffle=False)
    for (w, _), (w2, _) in zip(before, model.get_parameters()):
        np.testing.assert_array_equal(w, w2)


# ---- the command line ---------------------------------------------------------------------------

def test_gpunn_train_precision_bfloat16_on_the_cpu_and_resume_keeps_it(tmp_path, capsys):
    from gpunn import cli

    out = tmp_path / "run"
    argv = ["train", "--device", "cpu", "--epochs", "4", "--precision", "bfloat16", "--out", out]
    assert cli.main([str(arg) for arg in argv]) == 0
    assert "precision bfloat16" in capsys.readouterr().out
    assert gn.Model.load(out / "model.npz", device="cpu").precision.name == "bfloat16"
    assert cli.main(["train", "--resume", "--out", str(out), "--epochs", "6",
                     "--device", "cpu"]) == 0
    assert "precision bfloat16" in capsys.readouterr().out
    status = cli.main(["train", "--resume", "--out", str(out), "--epochs", "8", "--device",
                       "cpu", "--precision", "float32"])
    assert status != 0
    assert "started with --precision bfloat16" in capsys.readouterr().err


def test_gpunn_train_refuses_float16_on_the_cpu_before_writing_anything(tmp_path, capsys):
    from gpunn import cli

    out = tmp_path / "run"
    status = cli.main(["train", "--device", "cpu", "--precision", "float16", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert "float16' runs on CUDA only" in err
    assert not out.exists()


def test_no_policy_adds_a_synchronisation_or_an_uncaptured_step(backend):
    _cuda_only(backend)
    import cupy

    sim = getattr(cupy, "_sim", None)
    if sim is None:
        pytest.skip("synchronisations are counted by the CuPy double")
    X, y = _spiral()
    counts = {}
    for policy in precision.POLICIES:
        for batch_size in (60, 20):  # 3 and 9 steps an epoch
            model = _model(backend, policy, dropout=0.1)
            sim.reset_counters()
            history = model.train(X, y, epochs=6, batch_size=batch_size, verbose=False)
            assert history.cuda_graph == "captured"
            counts[policy, batch_size] = {key: sim.counters.get(key, 0)
                                          for key in ("sync", "graph_launch")}
    # Every step but the first is a launch of the graph (captured at the second), under every
    # policy; and three times the steps take no more synchronisations: none is per step.
    for policy in precision.POLICIES:
        assert counts[policy, 60]["graph_launch"] == 6 * 3 - 1, counts
        assert counts[policy, 20]["graph_launch"] == 6 * 9 - 1, counts
        assert counts[policy, 20]["sync"] == counts[policy, 60]["sync"], counts
        assert counts[policy, 60]["sync"] == counts["float32", 60]["sync"], counts


class _OldGpu:
    """A backend's face as gpunn.precision sees it, for a GPU of compute capability 7.5."""

    fused, device = True, "cuda:0"

    def compute_capability(self):
        return (7, 5)

    def low_precision_error(self, dtype="float16"):
        return None


def test_a_gpu_without_the_tensor_cores_a_policy_needs_refuses_it():
    old = _OldGpu()
    assert precision.supported(old) == ["float32", "float16"]
    reason = precision.why_not(precision.policy("bfloat16"), old, "float32")
    assert "compute capability 8.0" in reason and "7.5" in reason and "float16" in reason


def test_the_onnx_export_of_a_bfloat16_model_is_its_float32_graph(tmp_path):
    from conftest import require

    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    require(onnxruntime is not None, "onnxruntime is not installed (the dev extra brings it)")
    X, y = _spiral()
    model = _model("cpu", "bfloat16")
    model.train(X, y, epochs=3, batch_size=60, verbose=False)
    model.to_onnx(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    served = session.run(None, {"features": X})[0]
    model.set(precision="float32")  # the same float32 weights, products in float32
    model.finalize()
    np.testing.assert_allclose(served, model.predict(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "bfloat16"])
def test_model_forward_takes_a_list_under_a_policy(policy):
    model = _model("cpu", policy)
    output = model.forward([[0.1, 0.2], [0.3, -0.4]], training=False)
    assert output.shape == (2, 3) and output.dtype == np.float32


def test_bfloat16_on_cuda_needs_a_cupy_with_bfloat16_arrays(backend, monkeypatch):
    # CuPy 14 has bfloat16 arrays only with ml_dtypes and NumPy 2.1.2 or newer
    # (cupy/_core/_scalar.pyx); the double models it, and the policy is refused with the fix
    # while float16 still runs.
    _cuda_only(backend)
    import cupy

    if not hasattr(cupy, "_sim"):
        pytest.skip("models an older NumPy on the CuPy double")
    monkeypatch.setattr(cupy._core, "HAS_BFLOAT16", False)
    with pytest.raises(ValueError, match="Unsupported dtype bfloat16"):
        cupy.empty(3, dtype="bfloat16")
    reason = precision.why_not(precision.policy("bfloat16"), backend, "float32")
    assert "no bfloat16 arrays" in reason and "NumPy 2.1.2" in reason
    assert precision.why_not(precision.policy("float16"), backend, "float32") is None
    with pytest.raises(gn.GpunnError, match="no bfloat16 arrays"):
        _model(backend, "bfloat16")


def test_the_products_copy_of_the_parameters_is_made_per_call_not_per_batch(monkeypatch):
    X, y = _spiral()
    model = _model("cpu", "bfloat16")
    casts = []
    original = type(model.backend).cast

    def spy(self, x, dtype=None, out=None):
        if out is model.compute_parameters:
            casts.append(len(x))
        return original(self, x, dtype, out=out)

    monkeypatch.setattr(type(model.backend), "cast", spy)
    model.predict(X, batch_size=18)  # 10 batches
    model.evaluate(X, y, batch_size=18)
    assert len(casts) == 2
    model.train(X, y, epochs=2, batch_size=60, verbose=False)  # 6 steps: one each
    assert len(casts) == 2 + 6
