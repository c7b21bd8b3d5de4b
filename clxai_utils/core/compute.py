"""Where and in what precision a stage computes: one `Compute`, resolved once per run, handed to every stage.

`resolve_compute(device, precision)` decides both, each from its argument, else its
environment variable, else ``auto``:

- the device: ``$CLXAI_DEVICE`` (``auto``, ``cuda``, ``cuda:<index>``, ``mps``, ``cpu``);
  ``auto`` is CUDA where available, then Apple's MPS, then the CPU;
- the precision: ``$CLXAI_PRECISION`` (`clxai_utils.core.precision`, which also says what
  each name means on each device); ``auto`` is bf16 where the device computes it natively,
  fp16 autocast on MPS, float32 elsewhere.

Training, the probe, the maps, the metrics, the snapshots, the bf16 diagnostic and the
unit activations take a `compute` argument (None: `resolve_compute()`); they move the
model and the tensors to `compute.device` and bring results back to the CPU for tables.
Every artefact records `compute.to_dict()`: the precision, as it always has, and the device
type (``cpu``, ``cuda``, ``mps``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from clxai_utils.core.precision import (
    RESOLVED_PRECISIONS,
    InferenceModel,
    autocast,
    inference_model,
    model_to_layout,
    resolve_precision,
    to_layout,
)
from clxai_utils.core.validate import ConfigError

DEVICE_ENV = "CLXAI_DEVICE"
DEVICES = ("auto", "cuda", "mps", "cpu")


def mps_available() -> bool:
    """Whether Apple's Metal (MPS) backend can run here."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device `device` (else $CLXAI_DEVICE, else ``auto``) names: auto is CUDA, then MPS, then the CPU."""
    if isinstance(device, torch.device):
        name, source = str(device), "device"
    elif device is not None:
        name, source = device, "device"
    else:
        name, source = os.environ.get(DEVICE_ENV) or "auto", DEVICE_ENV
    if not isinstance(name, str):
        raise ConfigError(f"{source} must be a device name or torch.device, got {type(name).__name__}")
    kind = name.split(":", 1)[0]
    if kind not in DEVICES or (":" in name and kind != "cuda"):
        raise ConfigError(f"{source}={name!r} is not allowed; choose one of: {', '.join(DEVICES)} (or cuda:<index>)")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    available = {"cuda": torch.cuda.is_available, "mps": mps_available}.get(kind, lambda: True)
    if not available():
        raise ConfigError(f"{source}={name!r}, but this machine has no {kind.upper()} device; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"{source}={name!r} is not a device: {error}") from None


@dataclass(frozen=True)
class Compute:
    """A device and a resolved precision (float32, bf16 or fp16): where and how a stage computes.

    Build it with `resolve_compute`; a literal `Compute(torch.device("cpu"), "float32")` (the
    tests' reference) is checked for a known precision only.
    """

    device: torch.device
    precision: str

    def __post_init__(self) -> None:
        if not isinstance(self.device, torch.device):
            raise ConfigError(f"Compute.device must be a torch.device, got {type(self.device).__name__}")
        if self.precision not in RESOLVED_PRECISIONS:
            raise ConfigError(
                f"Compute.precision={self.precision!r} is not a resolved precision; "
                f"choose one of: {', '.join(RESOLVED_PRECISIONS)} (or call resolve_compute)"
            )
        if self.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("Compute.precision='fp16' runs on CUDA or MPS only; on a CPU use 'float32' or 'bf16'")

    def to_dict(self) -> dict[str, str]:
        """What artefacts record: the device type (not its index) and the precision."""
        return {"device": self.device.type, "precision": self.precision}

    def describe(self) -> str:
        """One line for logs and notebooks, e.g. ``cuda float32``."""
        return f"{self.device} {self.precision}"

    def autocast(self) -> AbstractContextManager[None]:
        """The autocast context of this precision on this device (a no-op for float32)."""
        return autocast(self.precision, self.device)

    def to_layout(self, value: torch.Tensor) -> torch.Tensor:
        """`value` on this device, in this precision's memory layout."""
        return to_layout(value.to(self.device, non_blocking=True), self.precision)

    def model_to_layout(self, model: nn.Module) -> nn.Module:
        """`model` (moved in place) on this device, in this precision's memory layout."""
        return model_to_layout(model.to(self.device), self.precision)

    @contextmanager
    def placed(self, model: nn.Module) -> Iterator[nn.Module]:
        """`model` on this device, in this precision's layout, inside the block; back on its device afterwards."""
        home = next(model.parameters()).device
        try:
            yield self.model_to_layout(model)
        finally:
            model.to(home)

    @contextmanager
    def inference(self, model: nn.Module) -> Iterator[InferenceModel]:
        """`model` on this device, evaluated in this precision (`inference_model`) inside the block."""
        with self.placed(model), inference_model(model, self.precision) as wrapped:
            yield wrapped


#: Plain float32 on the CPU: the tests' reference, and the default of the helpers below the stages.
CPU_FLOAT32 = Compute(torch.device("cpu"), "float32")


def resolve_compute(device: str | torch.device | None = None, precision: str | None = None) -> Compute:
    """The run's `Compute`: each of `device` and `precision` from its argument, else its variable, else auto."""
    where = resolve_device(device)
    return Compute(where, resolve_precision(precision, where))


def compute_or_resolve(compute: Compute | None) -> Compute:
    """`compute` itself, or the run's `resolve_compute()` when a stage is called without one."""
    if compute is None:
        return resolve_compute()
    if not isinstance(compute, Compute):
        raise TypeError(f"compute must be a Compute (see resolve_compute), got {type(compute).__name__}")
    return compute
