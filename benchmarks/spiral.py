"""Run: python -m benchmarks --only spiral

Steps per second on the book's small spiral model, where the cost of each call (Python, array
dispatch, allocation) is nearly everything: Dense(2, 64), ReLU, Dense(64, 3), softmax
cross-entropy, Adam(learning_rate=0.05, decay=5e-7), trained at full batch on the 300 samples of
``gpunn.datasets.spiral_data(100, 3)``. gpunn runs ``model.train(X, y, epochs=steps,
batch_size=None, shuffle=False)``, as the book trains it (shuffling one full batch changes
nothing); PyTorch runs the same steps in a loop, from the same initial parameters: the losses agree
to six digits for the first steps, then drift apart slowly as float32 rounding differences
grow (at learning rate 0.05 the path is sensitive to them).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gpunn
from benchmarks import timing
from benchmarks.trainers import GpunnTrainer, TorchTrainer

SIZES = (2, 64, 3)
LEARNING_RATE = 0.05
DECAY = 5e-7


def run(torch: Any, *, device: str, steps: int, repeats: int, warmup_steps: int, adam: str,
        seed: int, cuda_graph_too: bool = False) -> dict[str, Any]:
    """Steps/s of each trainer: ``repeats`` runs of ``steps`` full-batch steps, taking turns.
    ``cuda_graph_too`` adds gpunn without its CUDA graphs (benchmarks/gpu_speed.py)."""
    X, y = gpunn.datasets.spiral_data(100, 3, seed=seed)
    trainers: list[Any] = [GpunnTrainer(SIZES, X, y, device=device, learning_rate=LEARNING_RATE,
                                        decay=DECAY, seed=seed, shuffle=False)]
    if cuda_graph_too:
        plain = GpunnTrainer(SIZES, X, y, device=device, learning_rate=LEARNING_RATE,
                             decay=DECAY, seed=seed, shuffle=False)
        plain.name, plain.cuda_graph = "gpunn, no CUDA graph", False
        trainers.append(plain)
    if torch is not None:
        trainers.append(TorchTrainer(torch, trainers[0].parameters(), X, y, device=device,
                                     learning_rate=LEARNING_RATE, decay=DECAY, shuffle=False,
                                     adam=adam))
    for trainer in trainers:
        trainer.full_batch_steps(max(warmup_steps, 1))
    seconds: dict[str, list[float]] = {trainer.name: [] for trainer in trainers}
    metrics: dict[str, dict[str, float]] = {}
    for repeat in range(repeats):
        for trainer in trainers if repeat % 2 == 0 else trainers[::-1]:
            timing.settle()
            elapsed, metrics[trainer.name] = timing.timed(partial(trainer.full_batch_steps,
                                                                  steps))
            seconds[trainer.name].append(elapsed)
    result: dict[str, Any] = {"sizes": list(SIZES), "samples": len(X), "steps_per_repeat": steps,
                              "warmup_steps": warmup_steps, "trainers": {}}
    for name, values in seconds.items():
        result["trainers"][name] = {"seconds": timing.summary(values),
                                    "steps_per_second": timing.rates(steps, values),
                                    "step_us": 1e6 * timing.summary(values)["median"] / steps,
                                    "last_step": metrics[name]}
    if "PyTorch" in result["trainers"]:
        result["ratio"] = (result["trainers"]["gpunn"]["steps_per_second"]["median"]
                           / result["trainers"]["PyTorch"]["steps_per_second"]["median"])
    return result
