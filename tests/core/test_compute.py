"""`resolve_compute`: the device and the precision of a run, with every device query faked."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from clxai_utils.core import compute as C
from clxai_utils.core import precision as P
from clxai_utils.core.validate import ConfigError


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """A fake machine: `machine(cuda=..., mps=..., cpu_bf16=..., cuda_bf16=...)` sets what torch reports."""
    monkeypatch.delenv(C.DEVICE_ENV, raising=False)
    monkeypatch.delenv(P.PRECISION_ENV, raising=False)

    def fake(cuda: bool = False, mps: bool = False, cpu_bf16: bool = False, cuda_bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: cuda_bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(P, "cpu_computes_bf16", lambda: cpu_bf16)

    return fake


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_is_cuda_then_mps_then_cpu(machine, cuda: bool, mps: bool, expected: str) -> None:
    machine(cuda=cuda, mps=mps)
    assert C.resolve_compute().device == torch.device(expected)
    assert C.resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize(
    ("cuda", "mps", "cpu_bf16", "cuda_bf16", "expected"),
    [
        (True, False, False, True, "bf16"),  # CUDA with native bf16 (Ampere and later)
        (True, False, True, False, "float32"),  # an older GPU: no native bf16, and fp16 is never automatic there
        (False, True, True, False, "fp16"),  # MPS: fp16 autocast is its fast path
        (False, False, True, False, "bf16"),  # a CPU with AVX-512 BF16 or AMX
        (False, False, False, True, "float32"),  # a CPU that would emulate bf16
    ],
)
def test_auto_precision_is_what_the_device_computes_natively(
    machine, cuda: bool, mps: bool, cpu_bf16: bool, cuda_bf16: bool, expected: str
) -> None:
    machine(cuda=cuda, mps=mps, cpu_bf16=cpu_bf16, cuda_bf16=cuda_bf16)
    assert C.resolve_compute().precision == C.resolve_compute(precision="auto").precision == expected


def test_explicit_choices_and_where_each_is_refused(machine) -> None:
    machine(cuda=True, mps=True, cpu_bf16=False)
    assert C.resolve_compute("cpu", "float32") == C.Compute(torch.device("cpu"), "float32") == C.CPU_FLOAT32
    assert C.resolve_compute("cuda", "fp16") == C.Compute(torch.device("cuda"), "fp16")
    assert C.resolve_compute(torch.device("cuda", 1), "bf16").device == torch.device("cuda", 1)
    assert C.resolve_compute("mps", "fp16").precision == "fp16"
    assert C.resolve_compute("mps", "float32").precision == "float32"
    with pytest.raises(ConfigError, match=r"precision='fp16' is for CUDA and MPS devices .*not cpu"):
        C.resolve_compute("cpu", "fp16")
    with pytest.raises(ConfigError, match=r"precision='bf16' needs a CPU with native bf16"):
        C.resolve_compute("cpu", "bf16")


def test_the_environment_is_used_without_an_argument_and_the_argument_wins(
    machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine(cuda=True, cpu_bf16=True)
    monkeypatch.setenv(C.DEVICE_ENV, "cpu")
    monkeypatch.setenv(P.PRECISION_ENV, "float32")
    assert C.resolve_compute() == C.CPU_FLOAT32
    assert C.resolve_compute("cuda", "bf16") == C.Compute(torch.device("cuda"), "bf16")
    monkeypatch.setenv(C.DEVICE_ENV, "auto")
    monkeypatch.setenv(P.PRECISION_ENV, "auto")
    assert C.resolve_compute() == C.Compute(torch.device("cuda"), "bf16")


def test_bad_values_name_their_source_and_the_allowed_values(machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(cuda=False, mps=False)
    with pytest.raises(ConfigError, match=r"device='tpu' is not allowed; choose one of: auto, cuda, mps, cpu"):
        C.resolve_compute("tpu")
    with pytest.raises(ConfigError, match=r"device='cpu:1' is not allowed"):
        C.resolve_compute("cpu:1")
    with pytest.raises(ConfigError, match=r"device='cuda', but this machine has no CUDA device"):
        C.resolve_compute("cuda")
    with pytest.raises(ConfigError, match=r"device='mps', but this machine has no MPS device"):
        C.resolve_compute("mps")
    with pytest.raises(ConfigError, match=r"precision='half' is not allowed; choose one of: auto, float32, bf16, fp16"):
        C.resolve_compute("cpu", "half")
    monkeypatch.setenv(C.DEVICE_ENV, "gpu")
    with pytest.raises(ConfigError, match=r"CLXAI_DEVICE='gpu' is not allowed; choose one of: auto, cuda, mps, cpu"):
        C.resolve_compute()
    monkeypatch.setenv(C.DEVICE_ENV, "cpu")
    monkeypatch.setenv(P.PRECISION_ENV, "fp32")
    with pytest.raises(ConfigError, match=r"CLXAI_PRECISION='fp32' is not allowed"):
        C.resolve_compute()


def test_a_compute_is_frozen_checked_and_recorded() -> None:
    compute = C.Compute(torch.device("cuda", 3), "bf16")
    assert compute.to_dict() == {"device": "cuda", "precision": "bf16"}  # the type, not the index
    assert compute.describe() == "cuda:3 bf16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        compute.precision = "float32"  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"Compute.precision='auto' is not a resolved precision"):
        C.Compute(torch.device("cpu"), "auto")
    with pytest.raises(ConfigError, match=r"Compute.precision='fp16' runs on CUDA or MPS only"):
        C.Compute(torch.device("cpu"), "fp16")
    with pytest.raises(ConfigError, match=r"Compute.device must be a torch.device"):
        C.Compute("cpu", "float32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"compute must be a Compute"):
        C.compute_or_resolve("cpu")  # type: ignore[arg-type]


def test_the_model_is_placed_and_comes_back() -> None:
    """`placed` and `inference` put the model on the device and back; float32 is the model's own output."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 8, 8)
    with C.CPU_FLOAT32.placed(model) as placed:
        assert placed is model and next(model.parameters()).device == torch.device("cpu")
    with torch.no_grad(), C.CPU_FLOAT32.inference(model) as fast:
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)
