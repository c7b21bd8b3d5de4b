"""Numeric precision: one switch for training, the linear probe, the maps and Pixel Flipping.

`precision` is one of:

- ``auto`` (default): bf16 wherever it is computed natively (a CUDA GPU that supports it,
  or a CPU with AVX-512 BF16 or AMX), fp16 autocast on Apple's MPS (its fast path), float32
  elsewhere;
- ``float32``: plain float32 on any device (the tests' reference);
- ``bf16``: bf16 autocast with channels-last memory on any device; on a CPU only where it
  computes bf16 natively, since elsewhere it is emulated and slower than float32;
- ``fp16``: fp16 autocast (with a gradient scaler in training) on CUDA or MPS; refused on a CPU.

The argument wins; without it, ``$CLXAI_PRECISION`` (so a sweep or a papermill batch can
switch every notebook without editing one); without that, ``auto``. The stages do not call
`resolve_precision` themselves: `clxai_utils.core.compute.resolve_compute` resolves the
device and, through it, the precision once per run. Every stage records the precision it
resolved with its artefacts (model and probe files, stored maps, the facets sidecar), and
stored artefacts of another precision are recomputed or refused, never mixed.
bf16 changes values in their third significant digit: the notebooks measure by how much
against float32 on the same model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn

from clxai_utils.core.validate import ConfigError, check_choice

PRECISIONS = ("auto", "float32", "bf16", "fp16")
#: What `resolve_precision` returns: the names the stages compute in and artefacts record.
RESOLVED_PRECISIONS = ("float32", "bf16", "fp16")
PRECISION_ENV = "CLXAI_PRECISION"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (oneDNN's own test: AVX-512 BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cuda_computes_bf16() -> bool:
    """Whether the current CUDA GPU has native bf16 arithmetic (Ampere and later)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``float32``, ``bf16`` or ``fp16``: what `precision` (else $CLXAI_PRECISION, else ``auto``) means on `device`.

    The precision half of `clxai_utils.core.compute.resolve_compute`, which the stages call.
    """
    name, source = (precision, "precision") if precision is not None else (os.environ.get(PRECISION_ENV), PRECISION_ENV)
    name = check_choice(source, name or "auto", PRECISIONS)
    if name == "auto":
        native = {"cuda": cuda_computes_bf16, "cpu": cpu_computes_bf16}.get(device.type, lambda: False)
        return "bf16" if native() else "fp16" if device.type == "mps" else "float32"
    if name == "fp16" and device.type not in ("cuda", "mps"):
        raise ConfigError(
            f"{source}='fp16' is for CUDA and MPS devices (fp16 autocast), not {device.type}: "
            "use 'float32', 'bf16' or 'auto'"
        )
    if name == "bf16" and device.type == "cpu" and not cpu_computes_bf16():
        raise ConfigError(
            f"{source}='bf16' needs a CPU with native bf16 (AVX-512 BF16 or AMX), and this one has none: "
            "emulated bf16 is slower than float32 here; use 'float32' or 'auto'"
        )
    return name


def autocast(precision: str, device: torch.device) -> AbstractContextManager[None]:
    """The autocast context of a resolved `precision` (a no-op for float32)."""
    return torch.autocast(device.type, dtype=_DTYPES.get(precision, torch.bfloat16), enabled=precision in _DTYPES)


def to_layout(value: torch.Tensor, precision: str) -> torch.Tensor:
    """Images in channels-last memory under bf16 (oneDNN's and cuDNN's fast layout), else as they are.

    Views (N, V, C, H, W) are laid out so that `flatten(0, 1)`, which the contrastive losses
    feed to the network, is channels-last too: a plain NCHW batch into channels-last weights
    takes oneDNN's slow path (about 3x slower training steps).
    """
    if precision != "bf16" or value.dim() not in (4, 5):
        return value
    if value.dim() == 5:
        return value.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(value.shape)
    return value.contiguous(memory_format=torch.channels_last)


def model_to_layout(model: nn.Module, precision: str) -> nn.Module:
    """`model` with channels-last weights under bf16 (same values, other strides), else unchanged."""
    return model.to(memory_format=torch.channels_last) if precision == "bf16" else model


class InferenceModel(nn.Module):
    """A classifier evaluated in a resolved precision, with the interface the CAM methods read.

    Under bf16 the input goes channels-last into an autocast forward (fp16: autocast only) and
    the logits come back in float32, on the input's device (the model may sit on another). The explained layer's output is cast to float32 by a forward hook registered
    before any CAM hook, so Grad-CAM's activations and gradients at that layer are float32
    (pytorch-grad-cam reads them through numpy, which has no bf16; fp16 likewise). Use `inference_model`,
    which removes the hook again.
    """

    def __init__(self, model: nn.Module, precision: str) -> None:
        super().__init__()
        self.model = model_to_layout(model, precision)
        self.precision = check_choice("precision", precision, RESOLVED_PRECISIONS)
        self.train(model.training)  # the wrapper is in the mode of the model it wraps

    @property
    def target_layer(self) -> nn.Module:
        return self.model.target_layer  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return self.model.num_classes  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in float32, on the device of `x`; the model computes on its own device."""
        device = next(self.model.parameters()).device
        with autocast(self.precision, device):
            return self.model(to_layout(x.to(device), self.precision)).float().to(x.device)


@contextlib.contextmanager
def inference_model(model: nn.Module, precision: str) -> Iterator[InferenceModel]:
    """`model` wrapped as an `InferenceModel` of a resolved `precision` inside the block."""
    wrapped = InferenceModel(model, precision)
    layer = getattr(model, "target_layer", None)
    handle = None
    if precision in _DTYPES and isinstance(layer, nn.Module):
        handle = layer.register_forward_hook(lambda _m, _i, out: out.float())
    try:
        yield wrapped
    finally:
        if handle is not None:
            handle.remove()
