"""Deletion, insertion and ROAD against hand-computed values and pytorch-grad-cam's ROAD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from clxai_utils.evaluate import faithfulness as FA
from clxai_utils.evaluate import metrics as M

road_ref = pytest.importorskip("pytorch_grad_cam.metrics.road")
perturbation_ref = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
targets_ref = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

W = torch.tensor([[1.0, 4.0], [3.0, 2.0]])
# pytorch-grad-cam's imputer calls numpy on torch tensors, which numpy 2 warns about.
QUIET_REFERENCE = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")


class _LinearToy(nn.Module):
    """logits = [sum(w * x), 1] on a 1x2x2 image: every curve can be computed on paper."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * W).flatten(1).sum(1)
        return torch.stack([score, torch.ones_like(score)], dim=1)


def _sigmoid_vs_one(s: float) -> float:
    """p(class 0) of the toy: softmax of [s, 1]."""
    return 1 / (1 + math.exp(1 - s))


def _small_cnn(channels: int, classes: int, size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * size * size, classes)
    ).eval()


def _tie_free_maps(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    maps = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (maps / maps.flatten(1).amax(1).view(n, 1, 1)).float()


TOY = dict(x=torch.ones(1, 1, 2, 2), maps=W[None] / 4, targets=torch.tensor([0]))
# baseline -0.5: each pixel moves the logit by 1.5 w; ranked w = 4, 3, 2, 1
DELETION_LOGITS = [10.0, 4.0, -0.5, -3.5, -5.0]
INSERTION_LOGITS = [-5.0, 1.0, 5.5, 8.5, 10.0]


@pytest.mark.parametrize(("insertion", "logits"), [(False, DELETION_LOGITS), (True, INSERTION_LOGITS)])
def test_curves_hand_computed_on_linear_toy(insertion, logits):
    res = FA.perturbation_curves(
        _LinearToy().eval(), **TOY, insertion=insertion, pixels_per_step=1, baseline=torch.tensor([-0.5])
    )
    probs = [_sigmoid_vs_one(s) for s in logits]
    np.testing.assert_allclose(res.logit[0].numpy(), logits, atol=1e-12)
    np.testing.assert_allclose(res.probability[0].numpy(), probs, atol=1e-12)
    np.testing.assert_allclose(res.normalised[0].numpy(), np.array(probs) / _sigmoid_vs_one(10.0), atol=1e-12)
    np.testing.assert_allclose(res.fractions.numpy(), [0, 0.25, 0.5, 0.75, 1])


def test_scores_are_hand_computed_areas_with_uneven_steps():
    """3 pixels per step: points after 0, 3, 4 pixels (x = 0, 0.75, 1)."""
    res = FA.score_faithfulness(
        _LinearToy().eval(),
        **TOY,
        measures=["deletion_logit", "deletion_normalised", "insertion_logit", "insertion_probability"],
        pixels_per_step=3,
        baseline=torch.tensor([-0.5]),
    )

    def area(curve: list[float]) -> float:
        return 0.75 * (curve[0] + curve[1]) / 2 + 0.25 * (curve[1] + curve[2]) / 2

    p10 = _sigmoid_vs_one(10.0)
    expected = {
        "deletion_logit": area([10.0, -3.5, -5.0]),
        "deletion_normalised": area([1.0, _sigmoid_vs_one(-3.5) / p10, _sigmoid_vs_one(-5.0) / p10]),
        "insertion_logit": area([-5.0, 8.5, 10.0]),
        "insertion_probability": area([_sigmoid_vs_one(s) for s in (-5.0, 8.5, 10.0)]),
    }
    for name, value in expected.items():
        assert res.scores[name].dtype == torch.float64
        assert res.scores[name].item() == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(res.fractions["insertion_logit"].numpy(), [0, 0.75, 1])


def test_insertion_starts_at_the_baseline_image_and_ends_at_the_intact_one():
    n, c, size = 3, 3, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, size, size, generator=g)
    model = _small_cnn(c, 4, size, seed=1)
    targets = torch.tensor([0, 2, 3])
    baseline = torch.tensor([-1.0, 0.5, 2.0])
    res = FA.perturbation_curves(
        model, x, _tie_free_maps(n, size, size, 2), targets, insertion=True, pixels_per_step=4, baseline=baseline
    )
    with torch.no_grad():
        blank = model(baseline.view(1, c, 1, 1).expand(n, c, size, size)).double()
        intact = model(x).double()
    rows = torch.arange(n)
    np.testing.assert_allclose(res.logit[:, 0].numpy(), blank[rows, targets].numpy(), atol=1e-6)
    np.testing.assert_allclose(res.probability[:, 0].numpy(), blank.softmax(1)[rows, targets].numpy(), atol=1e-6)
    np.testing.assert_allclose(res.logit[:, -1].numpy(), intact[rows, targets].numpy(), atol=1e-6)
    np.testing.assert_allclose(res.normalised[:, -1].numpy(), 1.0)


def test_deletion_probability_is_pixel_flipping_and_batching_changes_nothing():
    n, c, size = 4, 3, 6
    x = torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(3))
    maps = _tie_free_maps(n, size, size, 4)
    model = _small_cnn(c, 5, size, seed=5)
    targets = torch.tensor([0, 1, 4, 2])
    kw = dict(pixels_per_step=5, baseline=torch.zeros(c))
    pf = M.pixel_flipping(model, x, maps, targets, **kw)
    full = FA.score_faithfulness(model, x, maps, targets, **kw)
    np.testing.assert_allclose(full.scores["deletion_probability"].numpy(), pf.auc.numpy(), atol=1e-12)
    np.testing.assert_allclose(full.curves["deletion_probability"].numpy(), pf.curves.numpy(), atol=1e-12)
    chunked = FA.score_faithfulness(model, x, maps, targets, batch_size=7, **kw)
    for name, score in full.scores.items():
        np.testing.assert_allclose(chunked.scores[name].numpy(), score.numpy(), atol=1e-6, err_msg=name)


def test_zero_map_gives_nan_rows_and_leaves_others_unchanged():
    n, size = 3, 4
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(6))
    maps = _tie_free_maps(n, size, size, 7)
    model = _small_cnn(1, 3, size, seed=8)
    targets = torch.tensor([0, 1, 2])
    kw = dict(pixels_per_step=3, baseline=torch.zeros(1), fractions=[0.25, 0.5])
    full = FA.score_faithfulness(model, x, maps, targets, **kw)
    maps[1] = 0
    res = FA.score_faithfulness(model, x, maps, targets, **kw)
    assert set(res.scores) == set(FA.MEASURES)
    for name, score in res.scores.items():
        assert torch.isnan(score[1]), name
        np.testing.assert_allclose(score[[0, 2]].numpy(), full.scores[name][[0, 2]].numpy(), atol=1e-12)
    for name, curve in res.curves.items():
        assert torch.isnan(curve[1]).all(), name
        np.testing.assert_allclose(res.mean_curves[name].numpy(), curve[[0, 2]].mean(0).numpy(), atol=1e-12)


# ------------------------------------------------------------------------------- ROAD


def test_linear_impute_hand_computed_3x3():
    x = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3) ** 2  # 0, 1, 4 / 9, 16, 25 / 36, 49, 64
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    out = FA.linear_impute(x, centre)
    direct, diagonal = 1 + 9 + 25 + 49, 0 + 4 + 36 + 64
    assert out[0, 0, 1, 1].item() == pytest.approx(direct / 6 + diagonal / 12, abs=1e-12)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True  # neighbours (0,1), (1,0) at 1/6 and (1,1) at 1/12, weights renormalised
    out = FA.linear_impute(x, corner)
    assert out[0, 0, 0, 0].item() == pytest.approx((1 / 6 + 9 / 6 + 16 / 12) / (5 / 12), abs=1e-12)
    assert torch.equal(out[0, 0].flatten()[1:], x[0, 0].flatten()[1:])
    everything = FA.linear_impute(x, torch.ones(1, 3, 3, dtype=torch.bool))
    assert torch.equal(everything, torch.zeros_like(x))  # nothing kept: the minimum-norm solution


class _MaskSpy:
    """Stands in for pytorch-grad-cam's imputer to record which pixels its percentile removes."""

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.removed = mask == 0
        return img


@QUIET_REFERENCE
@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("percentile", [10, 30, 80])
def test_road_masks_and_imputation_equal_pytorch_grad_cam(order, percentile):
    """pytorch-grad-cam's percentile p removes n - ceil(p / 100 * (n - 1)) pixels of a tie-free map:
    our fraction count / n gives the same mask, and noiseless imputed images agree to float precision."""
    n, c, h, w = 3, 3, 8, 6
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(9))
    maps = _tie_free_maps(n, h, w, 10)
    count = h * w - math.ceil(percentile / 100 * (h * w - 1))
    fraction = count / (h * w)
    assert FA.removal_counts([fraction], h * w).item() == count

    remove = perturbation_ref.RemoveMostRelevantFirst if order == "morf" else perturbation_ref.RemoveLeastRelevantFirst
    spy = _MaskSpy()
    reference = road_ref.NoisyLinearImputer(noise=0.0)
    rank = M._attribution_rank(maps if order == "morf" else -maps)
    ours = rank.view(n, h, w) < count
    imputed = FA.linear_impute(x, ours)
    for i in range(n):
        remove(percentile, spy)(x[i], maps[i])
        assert torch.equal(spy.removed, ours[i])
        expected = reference(x[i], (~ours[i]).float())
        np.testing.assert_allclose(imputed[i].numpy(), expected.numpy(), atol=1e-6)


@QUIET_REFERENCE
def test_road_scores_equal_pytorch_grad_cam_without_noise():
    n, c, h, w = 4, 3, 8, 8
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(11))
    maps = _tie_free_maps(n, h, w, 12)
    model = _small_cnn(c, 5, h, seed=13)
    targets = torch.tensor([0, 3, 1, 4])
    percentiles = (20, 70)
    fractions = [(h * w - math.ceil(p / 100 * (h * w - 1))) / (h * w) for p in percentiles]
    ours = FA.road(model, x, maps, targets, fractions=fractions, noise=0.0, batch_size=3)
    cams = maps.numpy()
    for order, metric in (("morf", road_ref.ROADMostRelevantFirst), ("lerf", road_ref.ROADLeastRelevantFirst)):
        for j, p in enumerate(percentiles):
            reference = metric(p)
            reference.perturbation.imputer.noise = 0.0
            ref_targets = [targets_ref.ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
            expected = reference(x, cams, ref_targets, model, return_diff=False)
            np.testing.assert_allclose(getattr(ours, order)[:, j].numpy(), expected, atol=1e-5)

    res = FA.score_faithfulness(model, x, maps, targets, measures=["road", "road_morf"], fractions=fractions, noise=0.0)
    np.testing.assert_allclose(res.scores["road_morf"].numpy(), ours.morf.mean(1).numpy(), atol=1e-12)
    combined = ours.lerf.mean(1) - ours.morf.mean(1)
    np.testing.assert_allclose(res.scores["road"].numpy(), combined.numpy(), atol=1e-12)


def test_road_noise_is_seeded_small_and_only_on_imputed_pixels():
    n, c, h, w = 2, 3, 6, 6
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(14))
    removed = torch.rand(n, h, w, generator=torch.Generator().manual_seed(15)) < 0.5
    clean = FA.linear_impute(x, removed)

    def noisy(seed: int) -> torch.Tensor:
        return FA.noisy_linear_impute(x, removed, noise=0.01, generator=torch.Generator().manual_seed(seed))

    first, again, other = noisy(0), noisy(0), noisy(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    diff = first - clean
    mask = removed[:, None].expand_as(x)
    assert torch.equal(diff[~mask], torch.zeros_like(diff[~mask]))
    assert diff[mask].std().item() == pytest.approx(0.01, rel=0.25)

    model = _small_cnn(c, 3, h, seed=16)
    maps, targets = _tie_free_maps(n, h, w, 17), torch.tensor([0, 2])
    kw = dict(fractions=[0.3, 0.6], generator=None)
    both = FA.road(model, x, maps, targets, **kw)
    lerf_only = FA.road(model, x, maps, targets, orders=["lerf"], **kw)
    assert torch.equal(both.lerf, lerf_only.lerf) and torch.isnan(lerf_only.morf).all()


# ------------------------------------------------------------------------ bad input


def test_bad_measures_fractions_and_missing_baseline_are_rejected():
    model = _LinearToy().eval()
    with pytest.raises(ValueError, match=r"measures.*deletion_probability.*road_lerf"):
        FA.score_faithfulness(model, **TOY, measures=["deletion_probability", "faithfulness"])
    for bad in ([0.0], [0.5, 1.5], []):
        with pytest.raises(ValueError, match=r"fractions.*\(0, 1\]"):
            FA.score_faithfulness(model, **TOY, measures=["road"], fractions=bad)
    with pytest.raises(ValueError, match="pixels_per_step and baseline"):
        FA.score_faithfulness(model, **TOY, measures=["insertion_logit"], pixels_per_step=1)
    with pytest.raises(ValueError, match="baseline"):
        FA.perturbation_curves(model, **TOY, insertion=True, pixels_per_step=1, baseline=torch.zeros(3))
    with pytest.raises(ValueError, match="noise"):
        FA.road(model, **TOY, noise=-0.1)


def test_registry_names_directions_and_descriptions():
    assert list(FA.MEASURES) == [
        "deletion_probability",
        "deletion_logit",
        "deletion_normalised",
        "insertion_probability",
        "insertion_logit",
        "insertion_normalised",
        "road_morf",
        "road_lerf",
        "road",
    ]
    better_high = {name for name, m in FA.MEASURES.items() if m.higher_is_better}
    assert better_high == {"insertion_probability", "insertion_logit", "insertion_normalised", "road_lerf", "road"}
    assert all(m.description and m.name == name for name, m in FA.MEASURES.items())
