"""Sanity checks (evaluate.randomisation) against quantus 0.6.0's MPRT, scipy, metrics.ssim and hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from clxai_utils.evaluate import metrics as M
from clxai_utils.evaluate import randomisation as R
from clxai_utils.explain.cams import explain
from clxai_utils.train.models import Backbone, ExplainableClassifier, resnet18_cifar

quantus = pytest.importorskip("quantus")

#: scipy warns for every constant (all-zero) map; NaN there is the expected answer.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")


def _resnet(seed: int, width: float = 0.125, classes: int = 10) -> ExplainableClassifier:
    """An untrained CIFAR ResNet-18 classifier in eval mode."""
    torch.manual_seed(seed)
    backbone = resnet18_cifar(width)
    return ExplainableClassifier(backbone, nn.Linear(backbone.feature_dim, classes), normalize_features=False).eval()


def _one_conv_per_layer(seed: int) -> ExplainableClassifier:
    """stem, layer1..4 and head each hold exactly one module with `reset_parameters`, so quantus's
    per-module top-down order (head, layer4.0, ..., stem.0) is `DEFAULT_ORDER` step for step."""
    torch.manual_seed(seed)

    def block(c_in: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, 32, 3, padding=1), nn.ReLU())

    backbone = Backbone(block(3), [block(32) for _ in range(4)], feature_dim=32)
    return ExplainableClassifier(backbone, nn.Linear(32, 3), normalize_features=False).eval()


def _images(n: int, seed: int, size: int = 32, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.fixture(scope="module")
def resnet_cascade() -> tuple[ExplainableClassifier, torch.Tensor, torch.Tensor, R.CascadeResult]:
    """One Grad-CAM cascade on a tiny untrained ResNet-18, all maps kept."""
    model, (x, targets) = _resnet(0), _images(6, seed=1)
    return model, x, targets, R.cascading_randomisation(model, x, targets, "gradcam", batch_size=4, n_figure_maps=6)


# --------------------------------------------------------------------------- quantus


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_cascade_equals_quantus_model_parameter_randomisation(method, monkeypatch):
    """Same model, order, re-initialisation and explain function: quantus's per-step Spearman = ours.

    quantus 0.6.0 `ModelParameterRandomisation` (= `MPRT`, layer_order="top_down") walks every
    named module with `reset_parameters` in reverse order, cumulatively, calling
    `torch.manual_seed(seed + 1)` before each reset, and scores each step with `similarity_func`
    between the original and the randomised maps. Its default (scipy's `spearmanr` on the whole
    batch at once) crashes when a map is constant (scipy then returns one NaN, not a matrix), and
    all-zero Grad-CAM maps occur in the cascade, so we pass scipy's `spearmanr` pair by pair.
    Our layers are coarser (head, backbone.layer4, ...); in a model whose layers each hold one
    such module the two orders coincide, and patching our per-layer seed to quantus's
    constant `seed + 1` makes the weights coincide. Its "original" (maps recomputed on the
    untouched model) is our step 0. abs/normalise are off: maps are already in [0, 1].
    """
    model, (x, targets) = _one_conv_per_layer(2), _images(5, seed=2, size=12, classes=3)
    seed = 7
    monkeypatch.setattr(R, "_layer_seed", lambda s, name: s + 1)
    ours = R.cascading_randomisation(model, x, targets, method, seed=seed, batch_size=5)

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
        return explain(model, torch.from_numpy(inputs), method, torch.from_numpy(targets).long(), 5).numpy()

    def similarity_func(a: np.ndarray, b: np.ndarray, batched: bool) -> np.ndarray:
        assert batched
        return np.array([scipy.stats.spearmanr(ai, bi)[0] for ai, bi in zip(a, b)])

    metric = quantus.ModelParameterRandomisation(
        similarity_func=similarity_func, layer_order="top_down", seed=seed, abs=False, normalise=False
    )
    theirs = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=targets.numpy(),
        a_batch=None,
        channel_first=True,
        explain_func=explain_func,
        batch_size=5,
    )
    assert list(theirs) == ["original", "head", "backbone.layer4.0", "backbone.layer3.0", "backbone.layer2.0"] + [
        "backbone.layer1.0",
        "backbone.stem.0",
    ]
    expected = np.array([theirs[key] for key in theirs])
    got = ours.scores.pivot(index="step", columns="image", values="spearman").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)  # NaN (a constant map) where quantus has NaN
    assert np.isnan(got).sum() <= 2 and np.nanmax(got[-1]) < 0.9  # the maps did change: not just 1 == 1
    if method == "eigencam":  # class-agnostic: a random head leaves it exactly as it was
        assert (got[1] == 1.0).all()


# --------------------------------------------------------------------------- similarities


def test_spearman_equals_scipy_with_ties_and_constant_maps():
    """Ties (quantised values, zero plateaus like ReLU'd CAMs) share their mean rank; constant maps give NaN."""
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(7, 9, 11, generator=g) * 5).floor() / 4
    b = torch.rand(7, 9, 11, generator=g).clamp_min(0.5)
    b[1] = a[1]
    b[2] = 1 - a[2]
    a[3] = 0.0
    got = R.spearman(a, b)
    with pytest.warns(scipy.stats.ConstantInputWarning):
        expected = [scipy.stats.spearmanr(ai.flatten(), bi.flatten())[0] for ai, bi in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert got[1] == 1.0 and got[2] == -1.0 and math.isnan(got[3])


def test_scores_equal_metrics_ssim_and_scipy_on_the_returned_maps(resnet_cascade):
    """Every step's columns are metrics.ssim, metrics.zero_maps and scipy's Spearman of the trained maps
    and that step's maps."""
    _, _, _, result = resnet_cascade
    maps = result.maps
    assert maps.shape == (7, 6, 32, 32)
    for step in range(maps.shape[0]):
        rows = result.scores[result.scores["step"] == step]
        assert rows["layer"].iloc[0] == result.layers[step]
        np.testing.assert_array_equal(rows["ssim"].to_numpy(), M.ssim(maps[0], maps[step]).numpy())
        np.testing.assert_array_equal(rows["zero_map"].to_numpy(), M.zero_maps(maps[step]).numpy())
        expected = [scipy.stats.spearmanr(a.flatten(), b.flatten())[0] for a, b in zip(maps[0].numpy(), maps[step])]
        np.testing.assert_allclose(rows["spearman"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_step_zero_is_one_and_the_full_cascade_changes_gradcam(resnet_cascade):
    """Nothing randomised: exactly 1; everything randomised: the maps no longer match the trained ones."""
    _, _, _, result = resnet_cascade
    scores = result.scores
    assert result.layers == (R.UNRANDOMISED, *R.DEFAULT_ORDER)
    assert list(scores.columns) == ["step", "layer", "image", "image_id", "zero_map", "ssim", "spearman"]
    assert len(scores) == 7 * 6 and scores["image_id"].tolist() == list(range(6)) * 7
    first, last = scores[scores["step"] == 0], scores[scores["step"] == 6]
    assert (first["ssim"] == 1.0).all() and (first["spearman"] == 1.0).all()
    assert (last["ssim"] < 1.0).all() and not (last["spearman"] >= 1.0).any()  # NaN: a constant (all-zero) map
    assert last["spearman"].notna().sum() >= 4
    assert last["ssim"].mean() < 0.5
    torch.testing.assert_close(
        result.maps[0], explain(resnet_cascade[0], resnet_cascade[1], "gradcam", resnet_cascade[2], 6)
    )


def test_model_and_global_rng_are_unchanged():
    """The caller's weights, buffers, modes, gradients and the global RNG state are as before."""
    model, (x, targets) = _resnet(4), _images(3, seed=5)
    model.head.weight.grad = torch.ones_like(model.head.weight)
    model.backbone.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    R.cascading_randomisation(model, x, targets, "gradcam", batch_size=3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert torch.equal(model.head.weight.grad, torch.ones_like(model.head.weight))
    assert not any(p.requires_grad for p in model.backbone.parameters()) and model.head.weight.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)


def test_deterministic_given_the_seed_and_reset_batchnorm():
    """Same seed, same numbers; another seed, other weights. BatchNorm comes back as freshly built."""
    model, (x, _) = _resnet(6), _images(4, seed=7)
    order = ["backbone.layer4", "backbone.stem"]
    runs = [R.cascading_randomisation(model, x, None, "eigencam", order=order, seed=s, batch_size=2) for s in (3, 3, 4)]
    pd.testing.assert_frame_equal(runs[0].scores, runs[1].scores)
    assert torch.equal(runs[0].maps, runs[1].maps)
    assert not runs[0].scores["ssim"].equals(runs[2].scores["ssim"])

    model.get_buffer("backbone.layer1.0.bn1.running_mean").fill_(3.0)
    copy = _resnet(6)
    copy.load_state_dict(model.state_dict())
    R.randomise_layer(copy, "backbone.layer1", seed=0)
    bn = "backbone.layer1.0.bn1"
    assert (copy.get_buffer(f"{bn}.running_mean") == 0).all() and (copy.get_buffer(f"{bn}.running_var") == 1).all()
    assert (copy.get_parameter(f"{bn}.weight") == 1).all()
    for name, randomised in (("backbone.layer1.0.conv1.weight", True), ("backbone.layer2.0.conv1.weight", False)):
        assert torch.equal(copy.get_parameter(name), model.get_parameter(name)) != randomised


def test_custom_order_and_image_ids():
    """A user order runs only those layers, in that order; image ids label the rows."""
    model, (x, targets) = _resnet(8), _images(3, seed=9)
    result = R.cascading_randomisation(
        model, x, targets, "gradcam", order=["backbone.stem", "head"], image_ids=[10, 20, 30], n_figure_maps=2
    )
    assert result.layers == ("none", "backbone.stem", "head")
    assert result.maps.shape == (3, 2, 32, 32)
    assert result.scores["image_id"].tolist() == [10, 20, 30] * 3


# --------------------------------------------------------------------------- verdict


def _table(final: list[float]) -> pd.DataFrame:
    rows = [(0, "none", 1.0), (0, "none", 1.0)] + [(1, "head", v) for v in final]
    return pd.DataFrame(rows, columns=["step", "layer", "ssim"])


def test_verdict_summary_and_threshold():
    """mean/std/n by hand; the flag compares the last step's mean with the threshold; NaN is left out."""
    summary, fails = R.randomisation_verdict(_table([0.2, 0.6, float("nan")]))
    assert summary["layer"].tolist() == ["none", "head"] and summary["n"].tolist() == [2, 2]
    assert summary["mean"].tolist() == pytest.approx([1.0, 0.4]) and summary["std"].iloc[1] == pytest.approx(0.08**0.5)
    assert not fails
    assert R.randomisation_verdict(_table([0.2, 0.6]), threshold=0.3).fails
    assert not R.randomisation_verdict(_table([0.2, 0.6]), threshold=0.4).fails


def test_verdict_errors():
    with pytest.raises(ValueError, match=r"threshold must be in \[-1.0, 1.0\]"):
        R.randomisation_verdict(_table([0.2]), threshold=1.5)
    with pytest.raises(ValueError, match="metric='hog' is not allowed; choose one of: ssim, spearman"):
        R.randomisation_verdict(_table([0.2]), metric="hog")
    with pytest.raises(ValueError, match="no defined ssim at the last step"):
        R.randomisation_verdict(_table([float("nan")]))
    with pytest.raises(ValueError, match="columns step, layer, spearman"):
        R.randomisation_verdict(_table([0.2]), metric="spearman")


# --------------------------------------------------------------------------- random logit


def test_random_logit_check_by_hand():
    """Identical pair: SSIM 1, Spearman 1; mirrored ramp: Spearman -1 exactly; share and flag follow."""
    ramp = torch.linspace(0, 1, 64).view(8, 8)
    class_maps = torch.stack([ramp, ramp, ramp.T])
    contrast_maps = torch.stack([ramp, ramp.flip(0, 1), ramp.T])
    result = R.random_logit_check(class_maps, contrast_maps)
    assert result.ssim[0] == 1.0 and result.ssim[2] == 1.0 and result.ssim[1] < 0
    assert result.spearman.tolist() == [1.0, -1.0, 1.0]
    assert result.near_identical.tolist() == [True, False, True]
    assert result.share == pytest.approx(2 / 3) and result.fails
    assert not R.random_logit_check(class_maps, contrast_maps, max_share=0.7).fails
    assert R.random_logit_check(class_maps, contrast_maps, threshold=-1.0).share == 1.0


def test_class_agnostic_eigencam_fails_the_random_logit_check():
    """Eigen-CAM ignores the class: its map for a random other class is the same map."""
    model, (x, targets) = _resnet(10), _images(4, seed=11)
    other = (targets + 1) % 10
    maps = [explain(model, x, "eigencam", t, 4) for t in (targets, other)]
    result = R.random_logit_check(*maps)
    assert result.fails and result.share == 1.0 and (result.ssim == 1.0).all()


def test_random_logit_errors():
    maps = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match=r"threshold must be in \[-1.0, 1.0\]"):
        R.random_logit_check(maps, maps, threshold=-1.5)
    with pytest.raises(ValueError, match=r"max_share must be in \[0.0, 1.0\]"):
        R.random_logit_check(maps, maps, max_share=2.0)
    with pytest.raises(ValueError, match="same shape"):
        R.random_logit_check(maps, maps[:1])


# --------------------------------------------------------------------------- bad input


def test_cascade_errors():
    model, (x, targets) = _resnet(12), _images(2, seed=13)
    allowed = "head, backbone.layer4, backbone.layer3, backbone.layer2, backbone.layer1, backbone.stem"
    with pytest.raises(ValueError, match=f"an entry of order='layer5' is not allowed; choose one of: {allowed}"):
        R.cascading_randomisation(model, x, targets, "gradcam", order=["head", "layer5"])
    with pytest.raises(ValueError, match="order must be a non-empty list of distinct values"):
        R.cascading_randomisation(model, x, targets, "gradcam", order=[])
    with pytest.raises(ValueError, match="order must be a non-empty list of distinct values"):
        R.cascading_randomisation(model, x, targets, "gradcam", order=["head", "head"])
    with pytest.raises(ValueError, match="image_ids must have one id per image"):
        R.cascading_randomisation(model, x, targets, "gradcam", image_ids=[1])
    with pytest.raises(ValueError, match="targets must be given for method 'gradcam'"):
        R.cascading_randomisation(model, x, None, "gradcam")
    model.train()
    with pytest.raises(ValueError, match=r"model must be in eval mode \(call model.eval\(\)\)"):
        R.cascading_randomisation(model, x, targets, "gradcam")


def test_layer_without_reset_parameters_is_an_error():
    """A parameter no `reset_parameters` covers would stay trained unnoticed."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

    model = _resnet(14)
    stem = model.get_submodule("backbone.stem")
    assert isinstance(stem, nn.Sequential)
    stem.append(Scale())
    with pytest.raises(TypeError, match=r"backbone.stem.3 \(Scale\) has parameters but no reset_parameters"):
        R.randomise_layer(model, "backbone.stem", seed=0)
