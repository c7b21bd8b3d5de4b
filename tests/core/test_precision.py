"""The precision switch: what each name means where, its errors, and bf16 against float32."""

from __future__ import annotations

import pytest
import torch

from clxai_utils.core import precision as P
from clxai_utils.core.validate import ConfigError
from clxai_utils.train.models import ModelSpec, build_training_model

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_where_it_is_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.delenv(P.PRECISION_ENV, raising=False)
    monkeypatch.setattr(P, "cpu_computes_bf16", lambda: native)
    monkeypatch.setattr(P, "cuda_computes_bf16", lambda: native)
    expected = "bf16" if native else "float32"
    assert P.resolve_precision(None, CPU) == P.resolve_precision("auto", CPU) == expected
    assert P.resolve_precision(None, CUDA) == expected
    assert P.resolve_precision("float32", CUDA) == "float32"
    assert P.resolve_precision(None, MPS) == "fp16"  # MPS's fast path


def test_the_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P.PRECISION_ENV, "bf16")
    assert P.resolve_precision("float32", CPU) == "float32"
    assert P.resolve_precision(None, CUDA) == "bf16"
    monkeypatch.setenv(P.PRECISION_ENV, "half")
    with pytest.raises(
        ConfigError, match=r"CLXAI_PRECISION='half' is not allowed; choose one of: auto, float32, bf16, fp16"
    ):
        P.resolve_precision(None, CPU)
    with pytest.raises(ConfigError, match=r"precision='fp16' is for CUDA and MPS devices .*not cpu"):
        P.resolve_precision("fp16", CPU)
    assert P.resolve_precision("fp16", CUDA) == P.resolve_precision("fp16", MPS) == "fp16"


def test_bf16_is_refused_on_a_cpu_that_would_emulate_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "cpu_computes_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"precision='bf16' needs a CPU with native bf16.*use 'float32' or 'auto'"):
        P.resolve_precision("bf16", CPU)
    assert P.resolve_precision("bf16", CUDA) == "bf16"  # CUDA's own check is the device's


def test_bf16_predicts_like_float32_on_a_fixed_model() -> None:
    """Autocast bf16 + channels-last changes values, not decisions: >= 99 % equal argmax on 512 images.

    The model is seeded and its BatchNorm statistics come from the images themselves (train-mode
    pass), so its logits are spread like a trained model's rather than tied near zero.
    """
    torch.manual_seed(0)
    model = build_training_model(ModelSpec("resnet18_cifar", 0.125, 10, "ce"))
    images = torch.randn(512, 3, 32, 32)
    with torch.no_grad():
        model.train()(images)  # running statistics of these images
        model.eval()
        reference = model(images)
        fast_model = P.model_to_layout(model, "bf16")
        with P.autocast("bf16", CPU):
            fast = fast_model(P.to_layout(images, "bf16"))
    assert fast.dtype == torch.bfloat16 and P.to_layout(images, "bf16").is_contiguous(memory_format=torch.channels_last)
    agreement = (fast.float().argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= 0.99, agreement
    relative = ((fast.float() - reference).norm() / reference.norm()).item()
    assert 0 < relative < 0.05, relative  # bf16 does change the values (8 bits of mantissa), by a few per cent at most


def test_channels_last_float32_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = build_training_model(ModelSpec("resnet18_cifar", 0.125, 10, "ce")).eval()
    images = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
        other = model.to(memory_format=torch.channels_last)(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(other, reference, rtol=1e-5, atol=1e-5)


def test_views_are_laid_out_so_their_flattened_batch_is_channels_last() -> None:
    views = torch.randn(4, 2, 3, 8, 8)
    laid = P.to_layout(views, "bf16")
    assert torch.equal(laid, views) and laid.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert P.to_layout(views, "float32") is views


def trained_like(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_training_model(ModelSpec("resnet18_cifar", 0.125, 10, "ce"))
    with torch.no_grad():
        model.train()(torch.randn(256, 3, 32, 32))
    return model.eval()


def test_inference_model_float32_is_the_model_itself() -> None:
    model, images = trained_like(), torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
        with P.inference_model(model, "float32") as wrapped:
            assert wrapped.num_classes == 10 and wrapped.target_layer is model.backbone.layer4[-1]
            torch.testing.assert_close(wrapped(images), reference, rtol=0, atol=0)


@pytest.mark.skipif(not P.cpu_computes_bf16(), reason="this CPU has no native bf16")
def test_bf16_maps_follow_float32_maps_and_the_hook_is_removed() -> None:
    """Grad-CAM through the bf16 wrapper: float32 activations at the explained layer, maps close to float32's."""
    from clxai_utils.explain.cams import explain

    model, images = trained_like(), torch.randn(64, 3, 32, 32)
    targets = model(images).argmax(1)
    reference = explain(model, images, "gradcam", targets, 32)
    with P.inference_model(model, "bf16") as fast:
        assert len(model.backbone.layer4[-1]._forward_hooks) == 1
        maps = explain(fast, images, "gradcam", targets, 32)
        assert fast(images).dtype == torch.float32
    assert not model.backbone.layer4[-1]._forward_hooks, "the float32 cast hook is removed after the block"
    assert maps.dtype == torch.float32 and maps.shape == reference.shape
    assert (maps - reference).abs().mean() < 0.05, (maps - reference).abs().mean()
