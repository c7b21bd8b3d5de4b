"""Faithfulness measures that do not reward a model for staying confident on broken images.

Pixel Flipping (`metrics.pixel_flipping`) replaces the most relevant pixels by a constant
and tracks the softmax probability of the explained class: a low area means removing what
the map points at hurts the prediction early. On CIFAR the flipped images soon leave the
training distribution, so a model whose softmax stays high on such images (which is what
SupCon's tighter clusters may give) scores a worse, i.e. higher, area for reasons that have
nothing to do with its maps; and a model whose softmax collapses on any corruption scores
well whatever the map. The measures here separate those two effects:

- deletion_* (lower is better): Pixel Flipping's order, most relevant pixels first, read
  out as the probability, the raw logit of the class (no competition with the other
  classes through the softmax), and the probability divided by the intact image's (the
  curve starts at 1 for every model, so a more confident model is not favoured).
- insertion_* (higher is better): the reverse walk, from the all-baseline image restoring
  the most relevant pixels first; every curve ends on the intact image. A model that
  simply stays confident on out-of-distribution images moves deletion AUC up (worse) and
  insertion AUC up (better), while a better map improves both: if SupCon's maps are more
  faithful, deletion and insertion agree; if it only keeps a more reliable softmax on
  broken images, they disagree.
- road_* (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods"): removed pixels are not set to a constant but imputed from their
  neighbours (noisy linear imputation), so the perturbed images stay close to natural ones
  and the removed pixels' shape is hard to read off; the model must lose the evidence, not
  notice the mask. MoRF (most relevant first, lower is better) and LeRF (least relevant
  first, higher is better) are averaged over removal fractions; `road` = LeRF mean - MoRF
  mean (higher is better) cancels how confident the model is overall.

All read-outs of one walk come from ONE set of forward passes (logits once, the
probabilities from them). Maps are (N, H, W) in [0, 1]; all-zero maps rank nothing and get
NaN rows, as in Pixel Flipping. Scores are float64 (N,) tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
import torch
from torch import Tensor

from clxai_utils.core.config import ROAD_FRACTIONS
from clxai_utils.core.registry import FAITHFULNESS_MEASURES
from clxai_utils.core.validate import check_choices, check_fractions, check_number, check_positive_int
from clxai_utils.evaluate.metrics import (
    Model,
    _attribution_rank,
    _check_perturbation_inputs,
    _flip_and_score,
    _score_in_chunks,
    _step_grid,
    _target_probability,
    zero_maps,
)

#: Std of the Gaussian noise added to imputed pixels (normalised input space), the paper's default.
ROAD_NOISE = 0.01
#: ROAD's removal orders: most relevant first, least relevant first.
ROAD_ORDERS = ("morf", "lerf")
#: (dy, dx, weight) of the 8 neighbours in the imputation: 1/6 direct, 1/12 diagonal (they sum to 1).
NEIGHBOUR_WEIGHTS = tuple(
    (dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
)


@dataclass(frozen=True)
class Measure:
    """A registered faithfulness measure: its family (which walk computes it) and its direction."""

    name: str
    family: str  # "deletion", "insertion" or "road"
    higher_is_better: bool
    description: str


def _measure(name: str) -> Measure:
    """The measure `name` of `core.registry.FAITHFULNESS_MEASURES` (direction, description), with its walk."""
    metric = FAITHFULNESS_MEASURES[name]
    return Measure(name, name.split("_")[0], metric.better == "higher", metric.description)


#: The measures computed here (F-Fidelity's are `evaluate.ffidelity`'s); names, directions and descriptions
#: live in `core.registry`, which the torch-free analysis reads too.
MEASURES = {name: _measure(name) for name in FAITHFULNESS_MEASURES if not name.startswith("ffid")}


# ----------------------------------------------------------------- deletion, insertion


@dataclass(frozen=True)
class ReadoutCurves:
    """Deletion or insertion curves of the explained class, one row per image (NaN for zero maps)."""

    logit: Tensor  # (N, S+1) logit of the target after k steps, k = 0..S
    probability: Tensor  # (N, S+1) its softmax probability
    normalised: Tensor  # (N, S+1) probability / probability of the intact image
    fractions: Tensor  # (S+1,) fraction of pixels removed (deletion) or restored (insertion)


def _target_logit_and_probability(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, 2): the target's logit and its softmax probability, in float64, from one forward pass."""
    return torch.cat([logits.double().gather(1, targets[:, None]), _target_probability(logits, targets)], dim=1)


def _check_baseline(baseline: Tensor | None, channels: int) -> Tensor:
    """The per-channel fill (C,) that deletion and insertion need."""
    if not isinstance(baseline, Tensor) or baseline.shape != (channels,):
        shape = tuple(baseline.shape) if isinstance(baseline, Tensor) else baseline
        raise ValueError(f"baseline must be a tensor of shape ({channels},), one per channel, got {shape}")
    return baseline


def perturbation_curves(
    model: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    insertion: bool,
    pixels_per_step: int,
    baseline: Tensor,
    batch_size: int | None = None,
) -> ReadoutCurves:
    """Deletion (`insertion=False`) or insertion curves on the logit, probability and normalised probability.

    Deletion is `pixel_flipping`'s walk: point k replaces the k * `pixels_per_step` most
    relevant pixels by `baseline` (C,). Insertion starts from the all-baseline image and
    puts those pixels back, so its first point is the baseline image and its last the
    intact one. The normalised curve divides by the intact image's probability: the first
    point of deletion, the last of insertion. `batch_size` bounds copies per forward pass.
    """
    _check_perturbation_inputs(model, x, maps, targets)
    n, c, h, w = x.shape
    baseline = _check_baseline(baseline, c).to(device=x.device, dtype=x.dtype)
    steps = _step_grid(h * w, check_positive_int("pixels_per_step", pixels_per_step))
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)

    out = torch.full((n, steps.numel(), 2), math.nan, dtype=torch.float64, device=x.device)
    keep = torch.nonzero(~zero_maps(maps)).squeeze(1).to(x.device)
    if keep.numel():
        kept_x, rank = x[keep], _attribution_rank(maps.to(x.device)[keep])
        fill = baseline.expand(len(keep), c)
        start, fills = (fill[:, :, None, None].expand_as(kept_x), kept_x) if insertion else (kept_x, fill)
        kept_targets = targets.to(x.device)[keep]
        readout = _target_logit_and_probability
        out[keep] = _flip_and_score(model, start, rank, kept_targets, steps, fills, batch_size, readout)
    logit, probability = out.unbind(dim=2)
    intact = probability[:, -1:] if insertion else probability[:, :1]
    fractions = (steps.double() / (h * w)).to(x.device)
    return ReadoutCurves(logit=logit, probability=probability, normalised=probability / intact, fractions=fractions)


# ------------------------------------------------------------------------------- ROAD


def _neighbour_system(removed: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
    """The system L v = K x that defines the removed pixels of a (M, H, W) bool mask batch.

    Each unknown v_p satisfies s_p v_p - sum_{removed q} w_pq v_q = sum_{kept q} w_pq x_q
    over its neighbours q inside the image, s_p their total weight: v_p is the weighted mean
    of its neighbours. L (U, U) is a Dirichlet graph Laplacian: symmetric, block diagonal
    over the copies, positive definite wherever a copy keeps a pixel, and banded (a
    neighbour is at most W + 1 unknowns away in raster order), so it is returned in
    LAPACK's lower band storage for a banded Cholesky solve. K (U, M*H*W) is sparse and
    picks the kept neighbours. Also returns the unknowns' flat indices into (M, H, W).
    """
    m, h, w = removed.shape
    unknown = np.flatnonzero(removed)
    index = np.full(removed.size, -1, dtype=np.int64)
    index[unknown] = np.arange(unknown.size)
    copy, y, x = np.unravel_index(unknown, removed.shape)
    band = np.zeros((w + 2, unknown.size))  # band[i - j, j] = L[i, j] for i >= j
    kept_rows, kept_cols, kept_vals = [], [], []
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        ny, nx = y + dy, x + dx
        inside = np.flatnonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))
        neighbour = (copy[inside] * h + ny[inside]) * w + nx[inside]
        band[0, inside] += weight
        col = index[neighbour]
        is_unknown = col >= 0
        lower = is_unknown & (col < inside)  # each symmetric pair once, from its later unknown
        band[inside[lower] - col[lower], col[lower]] = -weight
        kept_rows.append(inside[~is_unknown])
        kept_cols.append(neighbour[~is_unknown])
        kept_vals.append(np.full(kept_rows[-1].size, weight))
    kept = scipy.sparse.csr_matrix(
        (np.concatenate(kept_vals), (np.concatenate(kept_rows), np.concatenate(kept_cols))),
        shape=(unknown.size, removed.size),
    )
    return band, kept, unknown


def linear_impute(x: Tensor, removed: Tensor) -> Tensor:
    """x (M, C, H, W) with every removed pixel ((M, H, W) bool) replaced by the mean of its 8 neighbours.

    The weights (1/6 direct, 1/12 diagonal) make the removed region a smooth membrane
    spanned by the kept pixels around it, solved exactly (banded Cholesky, float64) for all
    copies and channels in one system. A copy with every pixel removed has nothing to
    span: its minimum-norm solution is 0, the data set's mean colour once normalised.
    """
    if x.dim() != 4 or removed.shape != (x.shape[0], *x.shape[2:]) or removed.dtype != torch.bool:
        raise ValueError(f"removed must be a bool (M, H, W) mask matching x {tuple(x.shape)}, got {removed.shape}")
    m, c, h, w = x.shape
    mask = removed.cpu().numpy()
    everything = np.asarray(mask.reshape(m, -1).all(axis=1))
    values = x.detach().cpu().double().permute(0, 2, 3, 1).reshape(-1, c).numpy().copy()  # (M*H*W, C)
    values[np.repeat(everything, h * w)] = 0.0
    band, kept, unknown = _neighbour_system(mask & ~everything[:, None, None])
    if unknown.size:
        values[unknown] = scipy.linalg.solveh_banded(band, kept @ values, lower=True, check_finite=False)
    out = torch.from_numpy(values).view(m, h, w, c).permute(0, 3, 1, 2)
    return out.to(device=x.device, dtype=x.dtype)


def noisy_linear_impute(x: Tensor, removed: Tensor, *, noise: float, generator: torch.Generator) -> Tensor:
    """`linear_impute` plus N(0, noise^2) on the imputed pixels only, drawn from `generator` (ROAD's imputer).

    The noise hides the imputation's tell-tale smoothness, so the model cannot read the
    mask's shape off the image. Drawn on the generator's device for reproducibility.
    """
    noise = check_number("noise", noise, low=0.0)
    draw = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    return linear_impute(x, removed) + noise * draw * removed[:, None].to(x.dtype)


@dataclass(frozen=True)
class RoadCurves:
    """ROAD: p(class) after imputing each fraction of pixels, most (MoRF) or least (LeRF) relevant first."""

    morf: Tensor  # (N, F); NaN rows for zero maps
    lerf: Tensor  # (N, F)
    fractions: Tensor  # (F,) fraction of pixels imputed: the x axis


def removal_counts(fractions: Sequence[float], n_pixels: int) -> Tensor:
    """Pixels imputed per fraction: round(f * H * W).

    pytorch-grad-cam's percentile p instead keeps the pixels strictly below
    numpy.percentile(map, p), i.e. removes n - ceil(p / 100 * (n - 1)) pixels of a tie-free
    map; both give the same mask when round(f * n) equals that count.
    """
    return torch.tensor([round(f * n_pixels) for f in fractions], dtype=torch.long)


def _score_copies(model: Model, images: Tensor, targets: Tensor, batch_size: int | None) -> Tensor:
    """p(target) (M,) of ready-made copies, `batch_size` per forward pass."""

    def build(job: Tensor) -> tuple[Tensor, Tensor]:
        return images[job], targets[job]

    return _score_in_chunks(model, len(images), build, batch_size, _target_probability, images.device)[:, 0]


def _order_streams(generator: torch.Generator) -> list[torch.Generator]:
    """One generator per ROAD order (MoRF, LeRF), seeded by two draws from `generator`."""
    seeds = torch.randint(2**62, (2,), generator=generator, device=generator.device).tolist()
    return [torch.Generator(device=generator.device).manual_seed(seed) for seed in seeds]


def road(
    model: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    orders: Sequence[str] = ROAD_ORDERS,
) -> RoadCurves:
    """ROAD curves: for each fraction f, impute the round(f * H * W) most (MoRF) or least (LeRF) relevant pixels.

    Pixels are ranked as in Pixel Flipping (ties in raster order; LeRF ranks the negated
    map). Each order's imputed copies are built for all images and fractions at once, so
    an image's noise depends on neither `batch_size` nor the other images' maps (call per
    batch of images to bound memory), then scored `batch_size` copies per forward pass.
    Each order draws its noise from its own stream seeded from `generator` (None: a CPU
    generator seeded 0), so a MoRF curve is the same whether LeRF is computed too. An order
    left out of `orders` is a NaN curve.
    """
    _check_perturbation_inputs(model, x, maps, targets)
    fractions = check_fractions("fractions", fractions)
    orders = check_choices("orders", orders, ROAD_ORDERS)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    n, _, h, w = x.shape
    counts = removal_counts(fractions, h * w).to(x.device)
    curves = {o: torch.full((n, len(fractions)), math.nan, dtype=torch.float64, device=x.device) for o in ROAD_ORDERS}
    keep = ~zero_maps(maps).to(x.device)
    copies = x.repeat_interleave(len(fractions), dim=0)
    copy_targets = targets.to(x.device)[keep].repeat_interleave(len(fractions))
    for order, stream in zip(ROAD_ORDERS, _order_streams(generator)):
        if order not in orders:
            continue
        rank = _attribution_rank(maps.to(x.device) if order == "morf" else -maps.to(x.device))
        removed = (rank[:, None, :] < counts[None, :, None]) & keep[:, None, None]  # zero maps: nothing
        imputed = noisy_linear_impute(copies, removed.view(-1, h, w), noise=noise, generator=stream)
        kept_copies = imputed.view(n, len(fractions), *x.shape[1:])[keep].flatten(0, 1)
        if len(kept_copies):
            scores = _score_copies(model, kept_copies, copy_targets, batch_size)
            curves[order][keep] = scores.view(-1, len(fractions))
    return RoadCurves(
        morf=curves["morf"],
        lerf=curves["lerf"],
        fractions=torch.tensor(fractions, dtype=torch.float64, device=x.device),
    )


# ------------------------------------------------------------------------ entry point


@dataclass(frozen=True)
class FaithfulnessResult:
    """Per-image scores of the requested measures and the curves behind them, for tables and figures."""

    scores: dict[str, Tensor]  # measure -> (N,) float64, NaN for zero maps
    curves: dict[str, Tensor]  # curve -> (N, P): "deletion_logit", ..., "road_morf", "road_lerf"
    fractions: dict[str, Tensor]  # curve -> (P,) its x axis, the fraction of pixels removed or restored

    @property
    def mean_curves(self) -> dict[str, Tensor]:
        """Curve -> (P,) mean over the images with a non-zero map (NaN rows left out)."""
        return {name: curve.nanmean(dim=0) for name, curve in self.curves.items()}


def _walk_curves(
    model: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    family: str,
    pixels_per_step: int | None,
    baseline: Tensor | None,
    batch_size: int | None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """ "{family}_{read-out}" -> (curves, fractions) of one deletion or insertion walk."""
    if pixels_per_step is None or baseline is None:
        raise ValueError(f"{family} measures need pixels_per_step and baseline (see metrics.make_baseline)")
    walk = perturbation_curves(
        model,
        x,
        maps,
        targets,
        insertion=family == "insertion",
        pixels_per_step=pixels_per_step,
        baseline=baseline,
        batch_size=batch_size,
    )
    return {f"{family}_{r}": (getattr(walk, r), walk.fractions) for r in ("probability", "logit", "normalised")}


def score_faithfulness(
    model: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    measures: Iterable[str] | str = tuple(MEASURES),
    pixels_per_step: int | None = None,
    baseline: Tensor | None = None,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> FaithfulnessResult:
    """Score `measures` (names from MEASURES; default all) for maps explaining `targets`.

    Each walk runs once however many of its measures are asked for: deletion and insertion
    (these need `pixels_per_step` and `baseline` (C,)) give all three read-outs from one set
    of forward passes, ROAD computes only the orders it needs. Deletion and insertion
    scores are trapezoid areas against the fraction of pixels; ROAD's are means over
    `fractions`. `batch_size` bounds the copies per forward pass.
    """
    measures = check_choices("measures", measures, MEASURES)
    fractions = check_fractions("fractions", fractions)
    families = {MEASURES[m].family for m in measures}
    walks: dict[str, tuple[Tensor, Tensor]] = {}
    for family in ("deletion", "insertion"):
        if family in families:
            walks |= _walk_curves(model, x, maps, targets, family, pixels_per_step, baseline, batch_size)
    if "road" in families:
        orders = [o for o in ROAD_ORDERS if {"road", f"road_{o}"} & set(measures)]
        curves = road(
            model,
            x,
            maps,
            targets,
            fractions=fractions,
            noise=noise,
            generator=generator,
            batch_size=batch_size,
            orders=orders,
        )
        walks |= {f"road_{o}": (getattr(curves, o), curves.fractions) for o in orders}
    scores = {}
    for name in measures:
        if MEASURES[name].family != "road":
            scores[name] = torch.trapezoid(*walks[name], dim=1)
        elif name == "road":
            scores[name] = walks["road_lerf"][0].mean(dim=1) - walks["road_morf"][0].mean(dim=1)
        else:
            scores[name] = walks[name][0].mean(dim=1)
    return FaithfulnessResult(
        scores=scores,
        curves={name: curve for name, (curve, _) in walks.items()},
        fractions={name: axis for name, (_, axis) in walks.items()},
    )
