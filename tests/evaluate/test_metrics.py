"""Metrics against quantus 0.6.0, scikit-image, loop references and hand-computed values."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from clxai_utils.core.config import MetricsConfig
from clxai_utils.evaluate import metrics as M

quantus = pytest.importorskip("quantus")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _random_maps(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Tie-free maps in [0, 1] with max exactly 1 (like min-max normalised CAMs)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, h, w, generator=g, dtype=torch.float64)
    return (maps / maps.flatten(1).amax(1).view(n, 1, 1)).float()


def _small_cnn(channels: int, classes: int, size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * size * size, classes),
    )
    return model.eval()


# ------------------------------------------------------------------- pixel flipping


@pytest.mark.parametrize("quantus_baseline", ["black", -1.5])
def test_pixel_flipping_equals_quantus(quantus_baseline):
    """C = 1 and tie-free maps: quantus's channel-element flipping = our whole-pixel flipping.

    "black" in quantus is the current image's minimum; every image has min -2 (pixel 0),
    which stays the minimum after flipping, so it equals our constant baseline -2.
    """
    n, size, step = 6, 8, 4
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, size, size, generator=g)
    if quantus_baseline == "black":
        x[:, 0, 0, 0] = -2.0
        baseline = torch.tensor([-2.0])
    else:
        baseline = torch.tensor([quantus_baseline])
    maps = _random_maps(n, size, size, seed=2)
    model = _small_cnn(1, 3, size, seed=0)
    targets = model(x).argmax(1)

    ours = M.pixel_flipping(model, x, maps, targets, pixels_per_step=step, baseline=baseline, batch_size=20)

    kwargs = dict(
        model=model,
        x_batch=x.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        channel_first=True,
        softmax=True,
        device="cpu",
    )
    settings = dict(
        features_in_step=step, perturb_baseline=quantus_baseline, abs=False, normalise=True, disable_warnings=True
    )
    q_curves = np.array(quantus.PixelFlipping(**settings)(**kwargs))
    q_auc = np.array(quantus.PixelFlipping(return_auc_per_sample=True, **settings)(**kwargs))

    n_steps = size * size // step
    assert ours.curves.shape == (n, n_steps + 1)
    assert q_curves.shape == (n, n_steps)  # quantus omits the intact image
    np.testing.assert_allclose(ours.curves[:, 1:].numpy(), q_curves, atol=1e-5)
    # quantus: np.trapz(curve[1:], dx=1); ours: x in [0, 1] (dx = 1/S) including point 0.
    c = ours.curves.numpy()
    np.testing.assert_allclose(n_steps * ours.auc.numpy() - (c[:, 0] + c[:, 1]) / 2, q_auc, atol=1e-5)
    # point 0 is the intact image's probability
    intact = model(x).softmax(1).gather(1, targets[:, None])[:, 0].detach()
    np.testing.assert_allclose(c[:, 0], intact, atol=1e-6)


class _LinearToy(torch.nn.Module):
    """logits = (sum w * x, 0): the target-0 softmax is sigmoid(sum w * x)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


W = torch.tensor([[1.0, 4.0], [3.0, 2.0]])


def test_pixel_flipping_hand_computed_2x2():
    model = _LinearToy(W).eval()
    x = torch.ones(1, 1, 2, 2)
    kw = dict(maps=W[None] / 4, targets=torch.tensor([0]), baseline=torch.zeros(1))
    res = M.pixel_flipping(model, x, pixels_per_step=1, **kw)
    # remove w = 4, 3, 2, 1 in turn: sum w*x = 10, 6, 3, 1, 0
    expected = [1 / (1 + math.exp(-s)) for s in (10, 6, 3, 1, 0)]
    np.testing.assert_allclose(res.curves[0].numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(res.fractions.numpy(), [0, 0.25, 0.5, 0.75, 1])
    by_hand = 0.25 * (expected[0] / 2 + sum(expected[1:4]) + expected[4] / 2)
    assert res.auc.item() == pytest.approx(by_hand, abs=1e-7)

    # uneven steps: 3 pixels then the last one; x axis = fraction removed (0, 0.75, 1)
    res3 = M.pixel_flipping(model, x, pixels_per_step=3, **kw)
    s10, s1, s0 = (1 / (1 + math.exp(-s)) for s in (10, 1, 0))
    np.testing.assert_allclose(res3.curves[0].numpy(), [s10, s1, s0], atol=1e-7)
    assert res3.auc.item() == pytest.approx(0.75 * (s10 + s1) / 2 + 0.25 * (s1 + s0) / 2, abs=1e-7)


def test_pixel_flipping_ideal_order_is_best_and_reversed_worst():
    """All 24 pixel orderings of the 2x2 toy in one batch: map order = w order has the lowest AUC."""
    model = _LinearToy(W).eval()
    perms = list(itertools.permutations(range(4)))
    maps = torch.tensor([[4 - r for r in p] for p in perms], dtype=torch.float32).view(-1, 2, 2) / 4
    ideal = (W.flatten().argsort(descending=True).argsort()).tolist()  # rank of each pixel by w
    res = M.pixel_flipping(
        model,
        torch.ones(24, 1, 2, 2),
        maps,
        torch.zeros(24, dtype=torch.long),
        pixels_per_step=1,
        baseline=torch.zeros(1),
        batch_size=7,
    )
    best, worst = res.auc.argmin().item(), res.auc.argmax().item()
    assert list(perms[best]) == ideal
    assert list(perms[worst]) == [3 - r for r in ideal]
    assert torch.unique(res.auc).numel() > 2


def _pixel_flipping_loop(model, x, maps, targets, step, baseline):
    """Straightforward per-image, per-step reference with an explicit (value desc, index asc) order."""
    n, c, h, w = x.shape
    n_steps = math.ceil(h * w / step)
    curves = np.zeros((n, n_steps + 1))
    for i in range(n):
        flat = maps[i].flatten().tolist()
        order = sorted(range(h * w), key=lambda p: (-flat[p], p))
        for k in range(n_steps + 1):
            xi = x[i].clone()
            for p in order[: min(k * step, h * w)]:
                xi[:, p // w, p % w] = baseline
            with torch.no_grad():
                curves[i, k] = model(xi[None]).softmax(1)[0, targets[i]].item()
    return curves


def test_pixel_flipping_multichannel_ties_and_chunking_match_loop():
    n, c, size, step = 4, 3, 6, 5  # 36 pixels, 8 steps, last one uneven
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, c, size, size, generator=g)
    maps = (torch.randint(0, 4, (n, size, size), generator=g) / 3).float()  # many ties
    maps[:, 0, 0] = 1.0
    model = _small_cnn(c, 5, size, seed=4)
    targets = torch.tensor([0, 1, 2, 4])
    baseline = M.black_baseline(CIFAR_MEAN, CIFAR_STD)

    expected = _pixel_flipping_loop(model, x, maps, targets, step, baseline)
    for batch_size in (None, 1, 7):
        res = M.pixel_flipping(model, x, maps, targets, pixels_per_step=step, baseline=baseline, batch_size=batch_size)
        np.testing.assert_allclose(res.curves.numpy(), expected, atol=1e-6)
    fractions = np.minimum(np.arange(9) * step, 36) / 36
    np.testing.assert_allclose(res.auc.numpy(), np.trapezoid(expected, fractions, axis=1), atol=1e-6)


def test_pixel_flipping_zero_map_gives_nan_and_leaves_others_unchanged():
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    maps = _random_maps(3, 4, 4, seed=6)
    model = _small_cnn(1, 3, 4, seed=7)
    targets = torch.tensor([0, 1, 2])
    kw = dict(pixels_per_step=2, baseline=torch.zeros(1))
    full = M.pixel_flipping(model, x, maps, targets, **kw)
    maps[1] = 0
    res = M.pixel_flipping(model, x, maps, targets, **kw)
    assert torch.isnan(res.curves[1]).all() and torch.isnan(res.auc[1])
    np.testing.assert_allclose(res.curves[[0, 2]].numpy(), full.curves[[0, 2]].numpy(), atol=1e-7)
    np.testing.assert_allclose(res.auc[[0, 2]].numpy(), full.auc[[0, 2]].numpy(), atol=1e-7)


def test_pixel_flipping_rejects_bad_arguments():
    model = _small_cnn(1, 3, 4, seed=0)
    x, maps, t = torch.zeros(2, 1, 4, 4), _random_maps(2, 4, 4, 0), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="pixels_per_step"):
        M.pixel_flipping(model, x, maps, t, pixels_per_step=0, baseline=torch.zeros(1))
    with pytest.raises(ValueError, match="baseline"):
        M.pixel_flipping(model, x, maps, t, pixels_per_step=1, baseline=torch.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        M.pixel_flipping(model, x, maps, t, pixels_per_step=1, baseline=torch.zeros(1), batch_size=0)
    with pytest.raises(ValueError, match="eval mode"):
        M.pixel_flipping(model.train(), x, maps, t, pixels_per_step=1, baseline=torch.zeros(1))


def test_black_baseline_is_pixel_black():
    b = M.black_baseline(CIFAR_MEAN, CIFAR_STD)
    np.testing.assert_allclose(b.numpy(), [-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)], rtol=1e-6)
    np.testing.assert_allclose((b * torch.tensor(CIFAR_STD) + torch.tensor(CIFAR_MEAN)).numpy(), 0, atol=1e-6)
    assert torch.equal(M.make_baseline("mean", CIFAR_MEAN, CIFAR_STD), torch.zeros(3))
    with pytest.raises(ValueError, match="baseline"):
        M.make_baseline("white", CIFAR_MEAN, CIFAR_STD)


# ----------------------------------------------------------------------------- ssim


def _blob_maps(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth CAM-like maps (upsampled 4x4 noise), min-max normalised."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    maps = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")[:, 0]
    lo, hi = maps.flatten(1).amin(1).view(n, 1, 1), maps.flatten(1).amax(1).view(n, 1, 1)
    return (maps - lo) / (hi - lo)


@pytest.mark.parametrize("size", [32, 64])
def test_ssim_equals_skimage(size):
    a = torch.cat([_random_maps(3, size, size, seed=8), _blob_maps(3, size, seed=9)])
    b = torch.cat([_random_maps(3, size, size, seed=10), (_blob_maps(3, size, seed=9) * 0.9 + 0.05)])
    ours = M.ssim(a, b)
    a64, b64 = a.double().numpy(), b.double().numpy()
    ref = [structural_similarity(ai, bi, data_range=1.0) for ai, bi in zip(a64, b64)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    # skimage on the float32 arrays computes in float32: still within 1e-5
    ref32 = [structural_similarity(ai, bi, data_range=1.0) for ai, bi in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours.numpy(), ref32, atol=1e-5)
    assert ours.min() < 0.5  # the random pairs are dissimilar: the check is not vacuous
    ours5 = M.ssim(a, b, win_size=5, k1=0.02, k2=0.05)
    ref5 = [structural_similarity(ai, bi, data_range=1.0, win_size=5, K1=0.02, K2=0.05) for ai, bi in zip(a64, b64)]
    np.testing.assert_allclose(ours5.numpy(), ref5, atol=1e-6)


def test_ssim_identical_and_constant_maps():
    a = _blob_maps(2, 32, seed=11)
    np.testing.assert_allclose(M.ssim(a, a).numpy(), 1.0, atol=1e-12)
    zero, half = torch.zeros(1, 16, 16), torch.full((1, 16, 16), 0.5)
    for p, q in [(zero, zero), (zero, half), (zero, a[:1, :16, :16])]:
        ref = structural_similarity(p[0].double().numpy(), q[0].double().numpy(), data_range=1.0)
        assert M.ssim(p, q).item() == pytest.approx(ref, abs=1e-9)
    assert M.ssim(zero, zero).item() == 1.0
    c1 = 0.01**2  # constant maps: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    assert M.ssim(zero, half).item() == pytest.approx(c1 / (0.25 + c1))


def test_ssim_rejects_bad_inputs():
    a = _random_maps(1, 8, 8, 0)
    with pytest.raises(ValueError, match="win_size"):
        M.ssim(a, a, win_size=9)
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(a, _random_maps(2, 8, 8, 0))
    with pytest.raises(ValueError, match="data_range"):
        M.ssim(a * 2, a)


def test_add_input_noise_is_unclamped_gaussian_in_normalised_space():
    x = torch.full((4, 3, 32, 32), -1.5)
    noisy = M.add_input_noise(x, 0.02, torch.Generator().manual_seed(0))
    expected = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, expected)
    diff = noisy - x
    assert abs(diff.mean().item()) < 1e-3 and diff.std().item() == pytest.approx(0.02, rel=0.03)
    assert (noisy < 0).all()  # the authors' clamp to [0, 1] would have made these 0
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            M.add_input_noise(x, bad, torch.Generator())


# -------------------------------------------------------------------- contrastivity


def test_contrast_classes_uniform_and_never_the_prediction():
    ids = torch.arange(18_000)
    preds = ids % 10
    c = M.contrast_classes(preds, ids, num_classes=10, seed=0)
    assert c.dtype == torch.long and ((c >= 0) & (c < 10)).all()
    assert not (c == preds).any()
    # For one prediction value, the 9 other classes are equally likely: chi-square, df 8,
    # 0.999 quantile 26.12.
    for p in (0, 9):
        counts = torch.bincount(c[preds == p], minlength=10).double()
        others = counts[torch.arange(10) != p]
        expected = others.sum() / 9
        assert ((others - expected) ** 2 / expected).sum() < 26.12
        assert counts[p] == 0


def test_contrast_classes_independent_of_batch_composition():
    ids = torch.tensor([5, 17, 3, 1000, 42, 7, 99999])
    preds = torch.tensor([0, 3, 9, 2, 2, 5, 1])
    full = M.contrast_classes(preds, ids, 10, seed=3)
    perm = torch.tensor([6, 2, 0, 5, 1, 4, 3])
    assert torch.equal(M.contrast_classes(preds[perm], ids[perm], 10, seed=3), full[perm])
    assert torch.equal(M.contrast_classes(preds[2:4], ids[2:4], 10, seed=3), full[2:4])
    many = torch.arange(200)
    a = M.contrast_classes(many % 10, many, 10, seed=3)
    b = M.contrast_classes(many % 10, many, 10, seed=4)
    assert (a != b).float().mean() > 0.5  # another seed: another draw


def test_contrast_classes_rejects_bad_arguments():
    ids = torch.arange(3)
    with pytest.raises(ValueError, match="num_classes"):
        M.contrast_classes(torch.zeros(3, dtype=torch.long), ids, 1, seed=0)
    with pytest.raises(ValueError, match="predictions"):
        M.contrast_classes(torch.tensor([0, 1, 10]), ids, 10, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        M.contrast_classes(torch.zeros(3, dtype=torch.long), ids, 10, seed=-1)


# ----------------------------------------------------------------------- complexity


def test_complexity_closed_forms():
    h = w = 8
    n = h * w
    uniform = torch.full((1, h, w), 0.7)
    one_hot = torch.zeros(1, h, w)
    one_hot[0, 3, 5] = 1.0
    assert M.sparseness_gini(uniform).item() == pytest.approx(0.0, abs=1e-12)
    assert M.complexity_entropy(uniform).item() == pytest.approx(math.log(n), abs=1e-12)
    assert M.complexity_entropy(one_hot).item() == 0.0
    # quantus's +1e-7 offset: (n - 1) / (n (1 + n 1e-7)), within 1e-5 of (n - 1) / n
    assert M.sparseness_gini(one_hot).item() == pytest.approx((n - 1) / (n * (1 + n * 1e-7)), abs=1e-12)
    assert M.sparseness_gini(one_hot).item() == pytest.approx((n - 1) / n, abs=1e-5)


def test_gini_equals_mean_absolute_difference_formula():
    """Independent definition: G = sum_ij |x_i - x_j| / (2 n^2 mean x)."""
    maps = _random_maps(3, 5, 5, seed=12).double()
    a = maps.flatten(1) + M.GINI_OFFSET
    n = a.shape[1]
    mad = (a[:, :, None] - a[:, None, :]).abs().sum((1, 2)) / (2 * n * a.sum(1))
    np.testing.assert_allclose(M.sparseness_gini(maps.float()).numpy(), mad.numpy(), atol=1e-6)


def test_complexity_metrics_equal_quantus():
    maps = torch.cat([_random_maps(4, 16, 16, seed=13), _blob_maps(4, 16, seed=14)])
    maps[0, :8] = 0  # sparse rows: many exact zeros
    a = maps[:, None].double().numpy()
    x = np.zeros((8, 1, 16, 16), dtype=np.float32)
    y = np.zeros(8, dtype=int)
    kw = dict(model=None, x_batch=x, y_batch=y, channel_first=True)
    q_gini = quantus.Sparseness(disable_warnings=True)(a_batch=a.copy(), **kw)
    q_ent = quantus.Complexity(disable_warnings=True)(a_batch=a.copy(), **kw)
    np.testing.assert_allclose(M.sparseness_gini(maps).numpy(), q_gini, atol=1e-6)
    np.testing.assert_allclose(M.complexity_entropy(maps).numpy(), q_ent, atol=1e-6)
    # quantus divides by the max first; both scores are scale-free up to the 1e-7 offset
    np.testing.assert_allclose(M.sparseness_gini(maps * 0.3).numpy(), q_gini, atol=1e-6)
    np.testing.assert_allclose(M.complexity_entropy(maps * 0.3).numpy(), q_ent, atol=1e-6)


# ------------------------------------------------------------------------ coherence


def test_coherence_equals_quantus_on_random_maps_and_masks():
    n, size = 30, 8
    g = torch.Generator().manual_seed(15)
    maps = _random_maps(n, size, size, seed=16)
    maps[:10] = (maps[:10] * 1.05).clamp(max=1.0)  # ~3 pixels tie for the maximum
    masks = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    kw = dict(
        model=None,
        x_batch=np.zeros((n, 1, size, size), np.float32),
        y_batch=np.zeros(n, int),
        a_batch=maps[:, None].double().numpy(),
        s_batch=masks.numpy(),
        channel_first=True,
    )
    q_pg = np.array(quantus.PointingGame(disable_warnings=True)(**kw), dtype=float)
    q_al = np.array(quantus.AttributionLocalisation(disable_warnings=True)(**kw), dtype=float)
    pg, al = M.pointing_game(maps, masks), M.attribution_localisation(maps, masks)
    np.testing.assert_array_equal(pg.numpy(), q_pg)
    assert 0 < pg.sum() < n  # both outcomes occur
    first_max_hit = masks.flatten(1).gather(1, maps.flatten(1).argmax(1, keepdim=True))[:, 0].double()
    assert (first_max_hit != pg).any()  # ties decide some outcomes: "any maximum" is tested
    np.testing.assert_allclose(al.numpy(), q_al, atol=1e-6)
    assert torch.equal(M.pointing_game(maps, masks[:, 0]), pg)  # (N, H, W) masks too


def test_coherence_hand_made_cases():
    maps = torch.tensor(
        [
            [[1.0, 0.5], [0.25, 0.25]],  # max top-left
            [[0.0, 1.0], [1.0, 0.0]],  # two maxima: the first (raster order) outside the mask, one inside
            [[0.0, 0.0], [0.0, 0.0]],  # zero map
            [[0.2, 0.2], [1.0, 0.6]],  # empty mask below
        ]
    )
    top_row = torch.tensor([[1, 1], [0, 0]])
    bottom_row = 1 - top_row
    masks = torch.stack([top_row, bottom_row, top_row, torch.zeros(2, 2, dtype=torch.long)])
    pg = M.pointing_game(maps, masks)
    al = M.attribution_localisation(maps, masks)
    assert pg[:2].tolist() == [1.0, 1.0]
    assert al[:2].tolist() == pytest.approx([1.5 / 2.0, 0.5])
    assert torch.isnan(pg[2:]).all() and torch.isnan(al[2:]).all()
    assert M.pointing_game(maps[:1], bottom_row[None]).item() == 0.0
    assert M.attribution_localisation(maps[:1], bottom_row[None]).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="masks"):
        M.pointing_game(maps, masks[:, :1])


def test_zero_maps_and_undefined_metrics():
    maps = _random_maps(3, 4, 4, seed=17)
    maps[1] = 0
    assert M.zero_maps(maps).tolist() == [False, True, False]
    for score in (M.sparseness_gini(maps), M.complexity_entropy(maps)):
        assert torch.isnan(score).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="non-negative"):
        M.zero_maps(maps - 0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        M.zero_maps(maps[0])


# --------------------------------------------------------------------------- params


def test_metrics_config_validation_and_record():
    p = MetricsConfig(pixels_per_step=32, batch_size=1024)
    d = p.to_dict()
    assert d == {
        "pixels_per_step": 32,
        "batch_size": 1024,
        "baseline": "black",
        "noise_sigma": 0.02,
        "ssim_win_size": 7,
        "ssim_k1": 0.01,
        "ssim_k2": 0.03,
        "ssim_data_range": 1.0,
    }
    assert MetricsConfig(**d) == p
    assert p.ssim_kwargs() == {"win_size": 7, "k1": 0.01, "k2": 0.03, "data_range": 1.0}
    assert torch.equal(M.make_baseline(p.baseline, CIFAR_MEAN, CIFAR_STD), M.black_baseline(CIFAR_MEAN, CIFAR_STD))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.batch_size = 1  # type: ignore[misc]
    bad = [
        ({"noise_sigma": 0.0}, "noise_sigma"),
        ({"noise_sigma": -0.02}, "noise_sigma"),
        ({"pixels_per_step": 0}, "pixels_per_step"),
        ({"pixels_per_step": 1.5}, "pixels_per_step"),
        ({"batch_size": 0}, "batch_size"),
        ({"baseline": "white"}, "baseline"),
        ({"ssim_win_size": 6}, "ssim_win_size"),
        ({"ssim_k1": 0}, "ssim_k1"),
    ]
    for change, name in bad:
        with pytest.raises(ValueError, match=name):
            MetricsConfig(**{"pixels_per_step": 32, "batch_size": 1024, **change})


def test_ignored_pixels_are_neither_object_nor_background():
    """-1 (ImageNet-S's "ignore") leaves a pixel out: by hand on 2x2 maps."""
    maps = torch.tensor(
        [
            [[1.0, 0.5], [0.25, 0.25]],  # the maximum lies on an ignored pixel: the next one (0.5) is on the object
            [[0.2, 0.6], [0.2, 0.0]],  # attribution on the ignored pixel is left out of the denominator
            [[1.0, 0.0], [0.0, 0.0]],  # positive only on an ignored pixel: nothing to score
        ]
    )
    masks = torch.tensor(
        [
            [[-1, 1], [0, 0]],
            [[1, -1], [0, 0]],
            [[-1, 1], [0, 0]],
        ],
        dtype=torch.int8,
    )
    pg, al = M.pointing_game(maps, masks), M.attribution_localisation(maps, masks)
    assert pg[:2].tolist() == [1.0, 1.0]  # map 2: the scored maximum 0.2 ties on the object and the background
    assert al[0].item() == pytest.approx(0.5 / (0.5 + 0.25 + 0.25))
    assert al[1].item() == pytest.approx(0.2 / (0.2 + 0.2 + 0.0))
    assert torch.isnan(pg[2]) and torch.isnan(al[2])
    # Without ignore labels the int8 masks give quantus's binary results.
    binary = masks.clamp(min=0)
    assert M.pointing_game(maps[:1], binary[:1]).item() == 0.0
