"""Precision policies: in which type a model's matrix products and activations run.

A policy is what Keras calls a dtype policy and PyTorch's ``autocast`` applies per op:

- ``float32`` (the default): everything in the model's dtype (float32 or float64).
- ``tf32``: float32 storage; matrix products on TF32 tensor cores (a 10-bit mantissa for the
  inputs, float32 accumulation). CUDA only, compute capability 8.0+.
- ``bfloat16``: products, bias additions, ReLU and dropout in bfloat16 with float32
  accumulation; the master weights, the optimizer's state, the gradients, the output layer,
  the loss and the metrics in float32. No loss scaling: bfloat16 has float32's range.
  On CUDA (compute capability 8.0+) for speed; on the CPU for correctness only (NumPy has no
  bfloat16 arithmetic: each product's inputs and output are rounded, the product runs in
  float32, so it is slower than float32).
- ``float16``: as bfloat16 with float16, whose range ends at 65504, so the loss is scaled
  before the backward pass and the gradients unscaled before the update, with PyTorch's
  ``GradScaler`` rules (``LossScaler``). CUDA only (tensor cores from compute capability 7.0).

Example: ``gn.Model(device="cuda", precision="bfloat16")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpunn import _checks
from gpunn.errors import InvalidArgumentError

POLICIES = ("float32", "tf32", "bfloat16", "float16")
# The compute capability each policy's tensor cores need (CUDA).
COMPUTE_CAPABILITY = {"float32": (0, 0), "tf32": (8, 0), "bfloat16": (8, 0), "float16": (7, 0)}


@dataclass
class LossScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s rules and defaults: the loss is
    multiplied by ``scale`` before the backward pass and the gradients divided by it before the
    update; a step whose gradients hold an inf or NaN is skipped and the scale multiplied by
    ``backoff_factor``; after ``growth_interval`` steps in a row without one it is multiplied by
    ``growth_factor``. All of it runs on the device, in the training step (no host read per
    step, so the step stays one CUDA graph); ``scale`` and ``good_steps`` here are the values at
    the end of the last epoch, kept in checkpoints.

    A non-finite *loss* is not an overflow of the scaled gradients (the scale does not enter the
    forward pass), so it ends training with the divergence error as in float32; and gradients
    that overflow even at a scale of ``min_scale`` or less mean the run itself diverged: that
    too ends training, instead of halving the scale forever.
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 1.0
    good_steps: int = 0

    def __post_init__(self) -> None:
        self.scale = _checks.number("scale", self.scale, above_minimum=True)
        self.growth_factor = _checks.number("growth_factor", self.growth_factor, minimum=1.0)
        self.backoff_factor = _checks.number("backoff_factor", self.backoff_factor,
                                             above_minimum=True, below=1.0)
        self.growth_interval = _checks.integer("growth_interval", self.growth_interval,
                                               minimum=1)
        self.min_scale = _checks.number("min_scale", self.min_scale)
        self.good_steps = _checks.integer("good_steps", self.good_steps)

    def state(self) -> dict[str, Any]:
        """Everything that rebuilds this scaler (JSON, for model files and checkpoints)."""
        return {"scale": self.scale, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "min_scale": self.min_scale, "good_steps": self.good_steps}


@dataclass
class Policy:
    """A precision policy (see the module docstring): ``name``, the ``compute`` dtype of
    products and activations, whether float32 products use ``tf32``, and the ``scaler``."""

    name: str
    compute: str | None = None  # None: the model's own dtype
    tf32: bool = False
    scaler: LossScaler | None = field(default=None)

    @property
    def low(self) -> bool:
        """Whether products and activations run in a 16-bit type."""
        return self.compute is not None

    def compute_dtype(self, dtype: str) -> str:
        """The dtype products and activations run in, for a model of ``dtype``."""
        return self.compute or dtype

    def state(self) -> dict[str, Any]:
        """The policy as saved in a model file."""
        return {"name": self.name,
                "scaler": None if self.scaler is None else self.scaler.state()}


def policy(spec: Any = "float32", *, scaler: LossScaler | dict | None = None) -> Policy:
    """The Policy for ``spec``: a name in POLICIES, or a Policy (returned as is).

    Example: ``gn.precision.policy("float16").scaler.scale`` is 65536.0.
    """
    if isinstance(spec, Policy):
        return spec
    name = getattr(spec, "name", spec)  # a NumPy dtype such as numpy.float16 works too
    if isinstance(name, str):
        name = name.strip().lower()
    if name not in POLICIES:
        raise InvalidArgumentError(f"precision must be one of {', '.join(POLICIES)}; "
                                   f"received precision={spec!r}.")
    if name == "bfloat16":
        import ml_dtypes  # noqa: F401 (registers numpy.dtype("bfloat16"), for NumPy and CuPy)
    if name == "float16":
        if isinstance(scaler, dict):
            scaler = LossScaler(**scaler)
        return Policy(name, compute="float16", scaler=scaler or LossScaler())
    if scaler is not None:
        raise InvalidArgumentError(f"Only the float16 policy scales the loss (bfloat16 has "
                                   f"float32's range); received a scaler for {name!r}.")
    return Policy(name, compute="bfloat16" if name == "bfloat16" else None,
                  tf32=name == "tf32")


def why_not(chosen: Policy, backend: Any, dtype: str) -> str | None:
    """Why a model of ``dtype`` on ``backend`` cannot train under ``chosen``, or None."""
    if chosen.name == "float32":
        return None
    if dtype != "float32":
        return (f"precision={chosen.name!r} needs float32 master weights, but the model's dtype "
                f"is {dtype}: use Model(dtype='float32') or precision='float32'.")
    if not backend.fused:  # the CPU
        if chosen.name == "bfloat16":
            return None
        return (f"precision={chosen.name!r} runs on CUDA only: the CPU has no "
                f"{'TF32' if chosen.tf32 else 'float16'} arithmetic (as PyTorch's CPU autocast, "
                f"which is bfloat16 only). Use precision='bfloat16' or 'float32' on the CPU, or "
                f"device='cuda'.")
    found = backend.compute_capability()
    needed = COMPUTE_CAPABILITY[chosen.name]
    if found < needed:
        return (f"precision={chosen.name!r} needs compute capability "
                f"{needed[0]}.{needed[1]} or newer; {backend.device} has "
                f"{found[0]}.{found[1]}. Use precision='float32'"
                f"{' or float16' if found >= (7, 0) and chosen.name != 'float16' else ''}.")
    if chosen.low:
        return backend.low_precision_error(chosen.compute)
    return None


def supported(backend: Any) -> list[str]:
    """The policies ``backend`` can train float32 models with (for ``gpunn info``)."""
    return [name for name in POLICIES if why_not(policy(name), backend, "float32") is None]

