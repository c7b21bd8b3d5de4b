"""Numeric precision of training: one switch, recorded with every model it trains.

`precision` is one of:

- ``auto`` (default): bf16 autocast and channels-last on CUDA, plain float32 on CPU, which is
  what every committed run used, so its numbers stay the reference;
- ``float32``: plain float32 on any device (the tests' reference);
- ``bf16``: bf16 autocast with channels-last memory on any device; on a CPU only where it
  computes bf16 natively (AVX-512 BF16 or AMX), since elsewhere it is emulated and slower.

The argument wins; without it, ``$CLXAI_PRECISION`` (so a sweep or a papermill batch can
switch every training notebook without editing one); without that, ``auto``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

import torch
from torch import nn

from clxai_utils.core.validate import ConfigError, check_choice

PRECISIONS = ("auto", "float32", "bf16")
PRECISION_ENV = "CLXAI_PRECISION"


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (oneDNN's own test: AVX-512 BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``float32`` or ``bf16``: what `precision` (else $CLXAI_PRECISION, else ``auto``) means on `device`."""
    name, source = (precision, "precision") if precision is not None else (os.environ.get(PRECISION_ENV), PRECISION_ENV)
    name = check_choice(source, name or "auto", PRECISIONS)
    if name == "auto":
        return "bf16" if device.type == "cuda" else "float32"
    if name == "bf16" and device.type == "cpu" and not cpu_computes_bf16():
        raise ConfigError(
            f"{source}='bf16' needs a CPU with native bf16 (AVX-512 BF16 or AMX), and this one has none: "
            "emulated bf16 is slower than float32 here; use 'float32' or 'auto'"
        )
    return name


def autocast(precision: str, device: torch.device) -> AbstractContextManager[None]:
    """The autocast context of a resolved `precision` (a no-op for float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_layout(value: torch.Tensor, precision: str) -> torch.Tensor:
    """Images in channels-last memory under bf16 (oneDNN's and cuDNN's fast layout), else as they are."""
    if precision == "bf16" and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def model_to_layout(model: nn.Module, precision: str) -> nn.Module:
    """`model` with channels-last weights under bf16 (same values, other strides), else unchanged."""
    return model.to(memory_format=torch.channels_last) if precision == "bf16" else model
