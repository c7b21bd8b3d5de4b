"""F-Fidelity: the masking distribution by hand, scores computed on paper, fine-tuning on a toy problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clxai_utils.evaluate import ffidelity as FF


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class _Recorder(nn.Module):
    """Logits [sum(x), 0] for a 1-channel image; keeps every input it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        z = x.flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([z, torch.zeros_like(z)], dim=1)


def _toy_cnn(seed: int) -> nn.Module:
    """Conv + BatchNorm + linear head on 1x4x4 images, 2 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 2)
    )


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 bright on the left half, class 1 on the right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 1, 4, 4, generator=g)
    x[labels == 0, :, :, :2] += 1.0
    x[labels == 1, :, :, 2:] += 1.0
    return x, labels


# ------------------------------------------------------------------ fine-tuning masks


def test_mask_counts_are_round_u_beta_pixels_for_the_u_drawn():
    masks = FF.random_removal_masks(64, (8, 8), 0.3, torch.Generator().manual_seed(5))
    u = torch.rand(64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # drawn first
    expected = torch.round(u * 0.3 * 64).long()
    assert masks.dtype == torch.bool and masks.shape == (64, 8, 8)
    assert torch.equal(masks.flatten(1).sum(dim=1), expected)
    assert expected.max() > 10 and expected.min() < 5  # the counts really vary over [0, 0.3 * 64]


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_every_pixel_is_masked_equally_often(beta):
    """Pixel p is masked in image i with probability q = E[round(u * beta * 16)] / 16, independently over images.

    round(v * u) for u ~ U(0, 1) and an integer v takes 0 and v with probability 1/(2v) and each of
    1..v-1 with probability 1/v: mean v/2. So q = beta/2, and each pixel's count over n images is
    Binomial(n, q); 5 standard deviations bound all 16 pixels (two-sided 5.7e-7 each).
    """
    n, q = 20000, beta / 2
    counts = FF.random_removal_masks(n, (4, 4), beta, torch.Generator().manual_seed(0)).sum(dim=0).double()
    sd = math.sqrt(n * q * (1 - q))
    assert (counts - n * q).abs().max() < 5 * sd
    assert abs(counts.sum().item() / (16 * n) - q) < 5 * sd / n  # the mean fraction too


@pytest.mark.parametrize("beta", [0, 0.0, -0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_refused(beta):
    with pytest.raises(ValueError, match="beta"):
        FF.random_removal_masks(4, (4, 4), beta, torch.Generator())


# ---------------------------------------------------------------------- evaluation


def _line_case():
    """One 1x2x2 image x = [2, 1, 0.5, -1] ranked by its map in raster order, target 0 of [sum(x), 0]."""
    x = torch.tensor([2.0, 1.0, 0.5, -1.0]).view(1, 1, 2, 2)
    maps = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 2, 2) / 4
    return x, maps, torch.tensor([0])


def test_whole_ranked_set_removed_gives_the_score_on_paper():
    """alpha = 1 and s <= beta: every draw removes the whole ranked set (k = m), so the mean is exact.

    The model's target probability is sigmoid(sum(x)); removing (setting to 0) the top-1 pixel
    leaves 0.5, the top-2 -0.5; the bottom-1 pixel 3.5, the bottom-2 3.0.
    """
    x, maps, targets = _line_case()
    result = FF.f_fidelity(
        _Recorder().eval(), x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator().manual_seed(0),
        fractions=(0.25, 0.5), alpha=1.0, beta=0.5, n_samples=3,
    )  # fmt: skip
    p = _sigmoid(2.5)
    plus = [p - _sigmoid(0.5), p - _sigmoid(-0.5)]
    minus = [p - _sigmoid(3.5), p - _sigmoid(3.0)]
    torch.testing.assert_close(result.plus_curve, torch.tensor([plus], dtype=torch.float64))
    torch.testing.assert_close(result.minus_curve, torch.tensor([minus], dtype=torch.float64))
    torch.testing.assert_close(result.ffid_plus, torch.tensor([sum(plus) / 2], dtype=torch.float64))
    torch.testing.assert_close(result.ffid_minus, torch.tensor([sum(minus) / 2], dtype=torch.float64))
    assert result.intact.item() == pytest.approx(p) and result.removed.tolist() == [1, 2]


def test_label_score_and_zero_maps():
    x, maps, targets = _line_case()
    x, maps, targets = x.repeat(2, 1, 1, 1), torch.cat([maps, torch.zeros_like(maps)]), targets.repeat(2)
    result = FF.f_fidelity(
        _Recorder().eval(), x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator(),
        fractions=(0.25, 0.5), alpha=1.0, beta=0.5, n_samples=2, score="label",
    )  # fmt: skip
    # only removing the top two pixels (sum -0.5) flips the prediction away from class 0
    assert result.plus_curve[0].tolist() == [0.0, 1.0] and result.minus_curve[0].tolist() == [0.0, 0.0]
    assert result.ffid_plus[0].item() == 0.5 and result.ffid_minus[0].item() == 0.0
    assert all(t[1].isnan().all() for t in (result.plus_curve, result.minus_curve, result.intact[:, None]))


def test_stochastic_removal_takes_exactly_m_pixels_inside_the_ranked_set():
    """8x8 image of ones, map = raster order reversed; s = 0.25 -> k = 16, m = round(min(0.5 * 16, 0.1 * 64)) = 6.

    Every copy must have exactly 6 baseline pixels, all among the 16 best (FFid+) or worst
    (FFid-) ranked; over 2000 draws each of the 16 is removed with frequency 6/16.
    """
    model = _Recorder().eval()
    maps = torch.arange(64, 0, -1, dtype=torch.float32).view(1, 8, 8) / 64  # pixel 0 ranks first
    n_samples = 2000
    result = FF.f_fidelity(
        model, torch.ones(1, 1, 8, 8), maps, torch.tensor([0]), baseline=torch.zeros(1),
        generator=torch.Generator().manual_seed(1), fractions=(0.25,), n_samples=n_samples, batch_size=512,
    )  # fmt: skip
    assert result.removed.tolist() == [6]
    copies = torch.cat(model.seen[1:]).flatten(1) == 0  # seen[0]: the intact image
    assert copies.shape == (2 * n_samples, 64) and (copies.sum(dim=1) == 6).all()
    top, bottom = copies[:n_samples], copies[n_samples:]
    assert not top[:, 16:].any() and not bottom[:, :48].any()
    sd = math.sqrt(n_samples * (6 / 16) * (10 / 16))
    for inside in (top[:, :16], bottom[:, 48:]):
        assert (inside.sum(dim=0).double() - n_samples * 6 / 16).abs().max() < 5 * sd


def test_scores_are_deterministic_and_do_not_depend_on_batch_size():
    g = torch.Generator().manual_seed(3)
    x, maps = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64), torch.rand(5, 4, 4, generator=g)
    targets = torch.randint(0, 2, (5,), generator=g)
    model = _toy_cnn(0).double().eval()  # float64: float32 convolutions round differently per batch size

    def run(seed: int, batch_size: int | None) -> FF.FFidelityResult:
        return FF.f_fidelity(
            model, x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator().manual_seed(seed),
            fractions=(0.25, 0.5), alpha=0.5, beta=0.25, n_samples=4, batch_size=batch_size,
        )  # fmt: skip

    a, b, c = run(7, None), run(7, 3), run(8, None)
    for name in ("ffid_plus", "ffid_minus", "plus_curve", "minus_curve", "intact"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)
    assert not torch.equal(a.plus_curve, c.plus_curve)  # another seed, other draws


@pytest.mark.parametrize("fractions", [(), (0.0,), (-0.1,), (1.5,), (0.1, 2.0)])
def test_fractions_outside_unit_interval_are_refused(fractions):
    x, maps, targets = _line_case()
    with pytest.raises(ValueError, match="fractions"):
        FF.f_fidelity(
            _Recorder().eval(), x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator(),
            fractions=fractions,
        )  # fmt: skip


@pytest.mark.parametrize(("name", "value"), [("alpha", 0.0), ("beta", 1.01), ("n_samples", 0), ("score", "auc")])
def test_other_bad_evaluation_arguments(name, value):
    x, maps, targets = _line_case()
    with pytest.raises(ValueError, match=name):
        FF.f_fidelity(
            _Recorder().eval(), x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator(),
            **{name: value},
        )  # fmt: skip


def test_training_mode_model_is_refused():
    x, maps, targets = _line_case()
    with pytest.raises(ValueError, match="eval mode"):
        FF.f_fidelity(_Recorder().train(), x, maps, targets, baseline=torch.zeros(1), generator=torch.Generator())


# --------------------------------------------------------------------- fine-tuning


def _masked_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Cross-entropy on one fixed draw of fine-tuning masks (beta 0.5), in eval mode."""
    removed = FF.random_removal_masks(len(x), (4, 4), 0.5, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return F.cross_entropy(model.eval()(torch.where(removed[:, None], 0.0, x)), labels).item()


def _tune(model: nn.Module, batches, seed: int, steps: int) -> nn.Module:
    return FF.fine_tune_masked(
        model, batches, steps=steps, baseline=torch.zeros(1), generator=torch.Generator().manual_seed(seed),
        beta=0.5, lr=0.05,
    )  # fmt: skip


def test_fine_tuning_lowers_the_masked_loss_and_leaves_the_model_alone():
    model = _toy_cnn(1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, labels = _separable(256, 0)
    batches = [(x[i : i + 32], labels[i : i + 32]) for i in range(0, 256, 32)]  # 8 batches, started over
    loss_before = _masked_loss(model, x, labels)
    tuned = _tune(model, batches, seed=0, steps=10)  # 0.685 -> 0.073
    assert tuned is not model and not tuned.training and not any(m.training for m in tuned.modules())
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert _masked_loss(tuned, x, labels) < 0.5 * loss_before
    bn = tuned[1]  # BatchNorm ran in train mode: its running statistics moved
    assert bn.num_batches_tracked.item() == 10 and not torch.equal(bn.running_mean, before["1.running_mean"])


def test_fine_tuning_trains_frozen_parameters_of_the_copy_only():
    model = _toy_cnn(2).requires_grad_(False)
    x, labels = _separable(64, 1)
    tuned = _tune(model, [(x, labels)], seed=0, steps=2)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in tuned.parameters())
    assert not torch.equal(tuned[0].weight, model[0].weight)


def test_fine_tuning_is_deterministic_under_a_seed():
    x, labels = _separable(64, 2)
    batches = [(x[:32], labels[:32]), (x[32:], labels[32:])]
    torch.manual_seed(123)  # the global RNG must play no part
    a = _tune(_toy_cnn(3), batches, seed=4, steps=5).state_dict()
    torch.manual_seed(456)
    b = _tune(_toy_cnn(3), batches, seed=4, steps=5).state_dict()
    c = _tune(_toy_cnn(3), batches, seed=5, steps=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("steps", [0, -1, 2.5, "x", True, None])
def test_steps_must_be_a_positive_whole_number(steps):
    x, labels = _separable(8, 0)
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1"):
        _tune(_toy_cnn(0), [(x, labels)], seed=0, steps=steps)


@pytest.mark.parametrize("lr", [0, -0.1, float("inf")])
def test_lr_must_be_positive(lr):
    x, labels = _separable(8, 0)
    with pytest.raises(ValueError, match="lr"):
        FF.fine_tune_masked(
            _toy_cnn(0), [(x, labels)], steps=1, baseline=torch.zeros(1), generator=torch.Generator(), lr=lr
        )


def test_a_one_shot_iterator_that_runs_out_is_refused():
    x, labels = _separable(8, 0)
    with pytest.raises(ValueError, match="ran out after 1 of steps=3"):
        _tune(_toy_cnn(0), iter([(x, labels)]), seed=0, steps=3)
