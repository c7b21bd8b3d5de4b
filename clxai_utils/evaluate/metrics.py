"""Batched explanation-quality metrics for the five facets (docs/method.md, "The five facets").

Every function scores a whole batch of saliency maps at once: maps are float tensors of
shape (N, H, W), min-max normalised to [0, 1] upstream, so they are non-negative and
|E| = E. All scores are float64 tensors of shape (N,), computed in double precision so
that they agree with the references (quantus 0.6.0, scikit-image) to ~1e-6.

All-zero maps (Grad-CAM gives one when the ReLU removes everything) carry no ranking and
no mass, so the metrics that need either are undefined for them and return NaN:
Pixel Flipping (no pixel order), Sparseness and Complexity (no distribution |E|/sum|E|),
Pointing Game (every pixel is "the maximum") and Attribution Localisation (0/0).
Callers record `zero_maps(maps)` as a boolean `zero_map` column next to the scores.
SSIM stays defined: two constant maps give SSIM 1 by its formula, as scikit-image does.
quantus 0.6.0 instead scores a zero map Gini 0, a Pointing Game hit and localisation 0
(only Complexity gives NaN), which would silently mix "no explanation" into the averages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.core.config import BASELINES
from clxai_utils.core.seeding import splitmix64
from clxai_utils.core.validate import check_choice, check_positive, check_positive_int, check_seed

Model = Callable[[Tensor], Tensor]

#: Offset quantus 0.6.0 `Sparseness` adds to every |E| before the Gini index.
GINI_OFFSET = 1e-7


# ----------------------------------------------------------------------------- checks


def _check_maps(maps: Tensor, name: str = "maps") -> None:
    """Maps must be a finite, non-negative float batch (N, H, W)."""
    if not isinstance(maps, Tensor) or not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if (maps < 0).any():
        raise ValueError(f"{name} must be non-negative (min-max normalised to [0, 1])")


def _check_masks(masks: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
    """(inside, scored) bool (N, H, W) tensors of a mask batch; (N, 1, H, W) masks (quantus layout) are accepted.

    A pixel is inside the object where the mask is positive (1, or True). -1 marks pixels to
    ignore (ImageNet-S's "annotators could not decide"): neither object nor background, they
    are left out of the evaluation (`scored` is False there).
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != maps.shape:
        raise ValueError(
            f"masks must have shape (N, H, W) or (N, 1, H, W) matching maps {tuple(maps.shape)}, "
            f"got {tuple(masks.shape)}"
        )
    if masks.dtype == torch.bool:
        return masks, torch.ones_like(masks)
    return masks > 0, masks >= 0


def zero_maps(maps: Tensor) -> Tensor:
    """Bool (N,): which maps are all zero, i.e. explain nothing (see the module docstring)."""
    _check_maps(maps)
    return (maps.flatten(1) == 0).all(dim=1)


# ----------------------------------------------------------------------- faithfulness


@dataclass(frozen=True)
class PixelFlippingResult:
    """Pixel Flipping output: one curve and one AUC per image (NaN rows for zero maps)."""

    curves: Tensor  # (N, S+1) softmax probability of the target after k steps, k = 0..S
    auc: Tensor  # (N,) trapezoid area under `curves` against `fractions`
    fractions: Tensor  # (S+1,) fraction of pixels removed at each step: the x axis, 0..1


def black_baseline(mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-channel value of a black pixel (0 in pixel space) after `(x - mean) / std`.

    quantus's "black" is the minimum of the normalised image over all channels instead,
    which is neither black nor the same for every image.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32)
    std_t = torch.as_tensor(std, dtype=torch.float32)
    if mean_t.dim() != 1 or mean_t.shape != std_t.shape:
        raise ValueError(
            f"mean and std must be 1-D of equal length, got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
        )
    if (std_t <= 0).any():
        raise ValueError(f"std must be positive, got {std_t.tolist()}")
    return (0.0 - mean_t) / std_t


def make_baseline(name: str, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Baseline vector (C,) in normalised space by name: "black" or "mean" (the data set's mean colour, 0)."""
    check_choice("baseline", name, BASELINES)
    black = black_baseline(mean, std)
    return black if name == "black" else torch.zeros_like(black)  # "mean": the mean colour is 0 once normalised


def _attribution_rank(maps: Tensor) -> Tensor:
    """Rank (N, H*W) of every pixel, 0 = most attributed; ties keep raster order (stable sort)."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _quantus_element_rank(maps: Tensor, channels: int) -> Tensor:
    """Rank (N, C*H*W) of every channel element in the order quantus 0.6 `PixelFlipping` flips them.

    quantus divides each map by its maximum (float32), broadcasts the (1, H, W) map over
    the C channels and orders the C*H*W elements by numpy's default (unstable) argsort of
    the negated values; the same numpy call on the whole batch gives each row that order,
    ties included, which a stable torch sort would not.
    """
    a = maps.detach().cpu().float().numpy()
    a = a / np.abs(a).max(axis=(1, 2), keepdims=True)
    flat = np.broadcast_to(a[:, None], (a.shape[0], channels, *a.shape[1:])).reshape(a.shape[0], -1)
    order = torch.from_numpy(np.argsort(-flat, axis=1)).to(maps.device)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


Readout = Callable[[Tensor, Tensor], Tensor]


def _target_probability(logits: Tensor, targets: Tensor) -> Tensor:
    """Softmax probability (B, 1) of each copy's target, in float64: Pixel Flipping's read-out."""
    return logits.double().softmax(dim=1).gather(1, targets[:, None])


def _score_in_chunks(
    model: Model,
    total: int,
    build: Callable[[Tensor], tuple[Tensor, Tensor]],
    batch_size: int | None,
    readout: Readout,
    device: torch.device,
) -> Tensor:
    """`readout` (total, R) of the model on `total` copies, at most `batch_size` per forward pass.

    `build(job)` turns the copy indices `job` into (images, targets), so callers build
    copies on the fly and memory stays O(batch_size) images.
    """
    chunk = total if batch_size is None else batch_size
    parts = []
    with torch.no_grad():
        for start in range(0, total, chunk):
            images, chunk_targets = build(torch.arange(start, min(start + chunk, total), device=device))
            parts.append(readout(model(images), chunk_targets))
    return torch.cat(parts)


def _flip_and_score(
    model: Model,
    x: Tensor,
    rank: Tensor,
    targets: Tensor,
    removed: Tensor,
    fills: Tensor,
    batch_size: int | None,
    readout: Readout = _target_probability,
) -> Tensor:
    """`readout` (N, S, R) of `targets` for every (image, step) copy, in chunks of `batch_size` copies.

    Copy (i, k) sets the `removed[k]` best-ranked features of image i to `fills[i]`: one
    value per channel (`fills` (N, C)) or a whole image (`fills` (N, C, H, W), e.g. the
    intact image when `x` is the baseline, which turns deletion into insertion). A feature
    is a pixel (all channels, `rank` (N, H*W)) or one channel element (`rank` (N, C*H*W)).
    Copies are built on the fly from the rank so memory stays O(batch_size).
    """
    n, c, h, w = x.shape
    depth = rank.shape[1] // (h * w)  # 1: pixels, c: channel elements
    n_points = removed.numel()
    fills = fills.to(device=x.device, dtype=x.dtype)
    removed = removed.to(x.device)

    def build(job: Tensor) -> tuple[Tensor, Tensor]:
        image, step = job // n_points, job % n_points
        flipped = (rank[image] < removed[step, None]).view(-1, depth, h, w)
        fill = fills[image]
        fill = fill.view(-1, c, 1, 1) if fill.dim() == 2 else fill
        return torch.where(flipped, fill, x[image]), targets[image]

    out = _score_in_chunks(model, n * n_points, build, batch_size, readout, x.device)
    return out.view(n, n_points, -1)


def _check_perturbation_inputs(model: Model, x: Tensor, maps: Tensor, targets: Tensor) -> None:
    """An eval-mode model, x (N, C, H, W), maps (N, H, W) and one LongTensor target per image."""
    if getattr(model, "training", False):
        raise ValueError("model must be in eval mode (call model.eval()): batch statistics would mix copies")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    _check_maps(maps)
    n, _, h, w = x.shape
    if maps.shape != (n, h, w):
        raise ValueError(f"maps must have shape {(n, h, w)} to match x, got {tuple(maps.shape)}")
    if targets.shape != (n,) or targets.dtype != torch.long:
        raise ValueError(f"targets must be a LongTensor of shape ({n},), got {targets.dtype} {tuple(targets.shape)}")


def _step_grid(n_features: int, pixels_per_step: int) -> Tensor:
    """Features removed after k = 0..S steps, S = ceil(n_features / pixels_per_step); the last step may be short."""
    n_steps = math.ceil(n_features / pixels_per_step)
    return (torch.arange(n_steps + 1) * pixels_per_step).clamp(max=n_features)


def pixel_flipping(
    model: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    pixels_per_step: int,
    baseline: Tensor,
    batch_size: int | None = None,
    min_baseline: bool = False,
    channel_elements: bool = False,
    first_point: bool = True,
) -> PixelFlippingResult:
    """Pixel Flipping (Bach et al. 2015): lower AUC = removing top-ranked pixels hurts sooner = more faithful.

    Pixels (all channels at once) are removed in descending attribution order,
    `pixels_per_step` at a time, for S = ceil(H*W / pixels_per_step) steps; point k = 0 is
    the intact image. The AUC is the trapezoid area against the fraction of pixels removed,
    so it lies in [0, 1] whatever the step size. `targets` must be the class each map
    explains. `batch_size` bounds the copies per forward pass (None: all in one).

    Three switches reproduce the authors' quantus 0.6 call (`evaluate.protocol`):
    `min_baseline` fills with the minimum of the normalised image over all channels instead
    of `baseline`; `channel_elements` flips `pixels_per_step` channel elements per step in
    quantus's order (`_quantus_element_rank`), C times as many steps; `first_point=False`
    drops the intact image and takes the AUC on an x axis spread evenly over [0, 1]
    (`trapz(curve) / (S - 1)`), the authors' formula, whatever the last step removed.
    """
    _check_perturbation_inputs(model, x, maps, targets)
    n, c, h, w = x.shape
    if baseline.shape != (c,):
        raise ValueError(f"baseline must have shape ({c},), one per channel, got {tuple(baseline.shape)}")
    pixels_per_step = check_positive_int("pixels_per_step", pixels_per_step)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)

    n_features = h * w * (c if channel_elements else 1)
    removed = _step_grid(n_features, pixels_per_step)
    if not first_point:
        if removed.numel() < 3:
            raise ValueError(f"a curve without its first point needs >= 2 steps, got {removed.numel() - 1}")
        removed = removed[1:]
    fractions = (removed.double() / n_features).to(x.device)

    curves = torch.full((n, removed.numel()), float("nan"), dtype=torch.float64, device=x.device)
    keep = torch.nonzero(~zero_maps(maps)).squeeze(1).to(x.device)
    if keep.numel():
        kept_maps, kept_x = maps.to(x.device)[keep], x[keep]
        rank = _quantus_element_rank(kept_maps, c) if channel_elements else _attribution_rank(kept_maps)
        fills = kept_x.amin(dim=(1, 2, 3))[:, None].expand(-1, c) if min_baseline else baseline.expand(len(keep), c)
        kept_targets = targets.to(x.device)[keep]
        curves[keep] = _flip_and_score(model, kept_x, rank, kept_targets, removed, fills, batch_size)[..., 0]
    if first_point:
        auc = torch.trapezoid(curves, fractions, dim=1)
    else:
        auc = torch.trapezoid(curves, dx=1.0, dim=1) / (removed.numel() - 1)
    return PixelFlippingResult(curves=curves, auc=auc, fractions=fractions)


# -------------------------------------------------------------------------- continuity


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> Tensor:
    """Mean SSIM (N,) per pair, equal to scikit-image `structural_similarity(a_i, b_i, data_range=...)`.

    Defaults are scikit-image's: uniform win_size x win_size window, sample covariance
    (NP / (NP - 1)), mean over the window centres at least (win_size - 1) / 2 pixels from
    the border. Averaging only valid windows makes an un-padded `avg_pool2d` exact.
    Computed in float64 (scikit-image uses float32 for float32 inputs).
    """
    _check_maps(a, "a")
    _check_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    win_size = check_positive_int("win_size", win_size)
    if win_size % 2 == 0 or win_size > min(a.shape[1:]):
        raise ValueError(f"win_size must be odd and <= min(H, W) = {min(a.shape[1:])}, got {win_size}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if (a > data_range).any() or (b > data_range).any():
        raise ValueError(f"maps must lie in [0, data_range={data_range}]")

    x, y = a.double().unsqueeze(1), b.double().unsqueeze(1)
    mean = partial(F.avg_pool2d, kernel_size=win_size, stride=1)
    n_window = win_size**2
    cov_norm = n_window / (n_window - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def add_input_noise(x: Tensor, sigma: float, generator: torch.Generator, clamp: bool = False) -> Tensor:
    """x + N(0, sigma^2) in NORMALISED input space, never clamped.

    The authors clamped the normalised tensor to [0, 1], which zeroes every negative
    value; here the noise is the only change. Noise is drawn on the generator's device and
    moved to x's, so a CPU generator gives the same noise whatever device x is on.
    `clamp=True` is the authors' bug, kept as a protocol switch (`clamped_noise`): the noisy
    normalised tensor clamped to [0, 1].
    """
    check_positive("sigma", sigma)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    noisy = x + sigma * noise.to(x.device)
    return noisy.clamp(0.0, 1.0) if clamp else noisy


# ----------------------------------------------------------------------- contrastivity


def contrast_classes(predictions: Tensor, image_ids: Tensor, num_classes: int, seed: int) -> Tensor:
    """One class per image, uniform over the classes other than its prediction, keyed by (seed, image_id).

    The draw is r = hash(seed, id) mod (num_classes - 1), shifted past the prediction
    (c = r + [r >= prediction]), so it depends only on the seed, the image id and the
    prediction: not on batch composition, order or which metrics ran before (the authors'
    draw from the global RNG did). Modulo bias is < num_classes / 2**64.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 to have a contrast class, got {num_classes}")
    seed = check_seed(seed)
    for name, t in (("predictions", predictions), ("image_ids", image_ids)):
        if not isinstance(t, Tensor) or t.dim() != 1 or t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must be a 1-D integer tensor")
    if predictions.shape != image_ids.shape:
        raise ValueError(
            f"predictions and image_ids must have equal lengths, got {len(predictions)} and {len(image_ids)}"
        )
    if ((predictions < 0) | (predictions >= num_classes)).any():
        raise ValueError(f"predictions must lie in [0, {num_classes - 1}]")
    if (image_ids < 0).any():
        raise ValueError("image_ids must be >= 0")

    ids = image_ids.cpu().numpy().astype(np.uint64)
    key = splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    draw = splitmix64(key ^ ids) % np.uint64(num_classes - 1)
    r = torch.from_numpy(draw.astype(np.int64)).to(predictions.device)
    return r + (r >= predictions).long()


# -------------------------------------------------------------------------- complexity


def sparseness_gini(maps: Tensor) -> Tensor:
    """Gini index (N,) of the sorted |E|, as quantus 0.6.0 `Sparseness` (abs=True). Higher = sparser.

    Like quantus: 1e-7 is added to every value, then
    G = sum_i (2i - n - 1) a_(i) / (n sum_i a_(i)) with a_(1) <= ... <= a_(n). The offset
    makes a one-hot map score (n - 1) / (n (1 + n 1e-7)), not exactly (n - 1) / n. quantus
    first divides by max |E| (normalise=True), a no-op on min-max normalised maps.
    """
    zero = zero_maps(maps)
    flat = maps.flatten(1).double()
    n = flat.shape[1]
    a = torch.sort(flat + GINI_OFFSET, dim=1).values
    weight = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=a.device) - n - 1
    gini = (weight * a).sum(dim=1) / (n * a.sum(dim=1))
    return gini.masked_fill(zero, float("nan"))


def complexity_entropy(maps: Tensor) -> Tensor:
    """Shannon entropy (N,), natural log, of p = |E| / sum |E|, as quantus `Complexity`. Lower = simpler.

    0 log 0 = 0 exactly (quantus adds 1e-12 inside the log, a < 1e-8 difference).
    Bounds: 0 for a one-hot map, log(H*W) for a uniform one.
    """
    zero = zero_maps(maps)
    flat = maps.flatten(1).double()
    p = flat / flat.sum(dim=1, keepdim=True)
    entropy = -torch.special.xlogy(p, p).sum(dim=1)
    return entropy.masked_fill(zero, float("nan"))


# --------------------------------------------------------------------------- coherence


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """1.0 where the map's maximum falls inside the mask, else 0.0 (N,); higher = more coherent.

    Ties as quantus 0.6.0 `PointingGame`: a hit if ANY pixel attaining the maximum lies in
    the mask. Ignored pixels (mask -1) take no part: the maximum is taken over the scored
    pixels. NaN for maps that are zero there (every pixel ties) and empty masks (quantus
    intends NaN there but writes it into a bool array, which turns it into a hit).
    """
    _check_maps(maps)
    inside, scored = (m.flatten(1) for m in _check_masks(masks, maps))
    flat = maps.flatten(1).masked_fill(~scored, -1.0)  # maps are >= 0: an ignored pixel is never the maximum
    top = flat.amax(dim=1, keepdim=True)
    hit = ((flat == top) & inside).any(dim=1).double()
    undefined = (top.squeeze(1) <= 0) | ~inside.any(dim=1)
    return hit.masked_fill(undefined, float("nan"))


def attribution_localisation(maps: Tensor, masks: Tensor) -> Tensor:
    """Share (N,) of the attribution on the scored pixels that falls inside the mask; higher = more coherent.

    As quantus 0.6.0 `AttributionLocalisation` (weighted=False) without its +1e-9 in the
    denominator, over the pixels not ignored (mask -1); NaN for maps that are zero there
    (0/0) and empty masks.
    """
    _check_maps(maps)
    inside, scored = (m.flatten(1) for m in _check_masks(masks, maps))
    flat = maps.flatten(1).double() * scored
    total = flat.sum(dim=1)
    share = (flat * inside).sum(dim=1) / total
    undefined = (total == 0) | ~inside.any(dim=1)
    return share.masked_fill(undefined, float("nan"))
