"""Sanity checks for saliency maps: does a map depend on the trained weights, and on the class?

A map that stays the same when the model's weights are replaced by random ones explains
nothing about the model: it shows the input (edges, the object's outline) or the method's own
bias, and every faithfulness or coherence score it earns is earned without the model. Two
checks make that visible.

Cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks for
Saliency Maps"). A deep copy of the trained classifier has its layers re-initialised one at a
time from the top down (`DEFAULT_ORDER`: head, layer4, ..., stem), each step keeping the
layers randomised before it; after every step the same images are explained for the same
classes (those the trained model's maps explain) and compared with the trained model's maps,
by SSIM (`metrics.ssim`) and by Spearman rank correlation. Step 0 is the trained model itself
(similarity 1). Maps that barely change down the cascade fail (`randomisation_verdict`).

- Re-initialisation: every module of the layer runs its own `reset_parameters()` on a CPU copy
  of the layer, from the CPU generator seeded with `mix_seed(seed, crc32(layer name))`, inside
  `torch.random.fork_rng` (the caller's global RNG state is left as it was). PyTorch's default
  initialisation is what quantus's `MPRT` uses too; it is not the Kaiming-normal (fan_out)
  init the models were trained from (`train.models`), but the check only needs weights that
  owe nothing to the data. The seed is keyed by the layer's name, not by its position in
  the order, so a layer gets the same random weights whatever the order; quantus instead
  reseeds every module with `seed + 1`, which gives every pair of equal-shaped convolutions the
  same weights.
- BatchNorm: `reset_parameters()` also resets the running statistics (mean 0, variance 1) and
  the affine parameters (1, 0). Running statistics are learned from the data through the
  trained layers below, so keeping them would leave trained information in a "random" layer;
  reset, a fully randomised model is an untrained network in eval mode, the reference the
  check asks for.

Random-logit check of contrastivity (Sixt et al., ICML 2020): the maps of the explained class
and of one random other class (the stored contrast maps) should differ; a method whose maps
do not depend on the class (Eigen-CAM by construction) fails (`random_logit_check`).

Spearman is the Pearson correlation of ranks, ties sharing their mean rank (scipy's
`spearmanr`); it is NaN where a map is constant (an all-zero Grad-CAM map has no ranking).
SSIM stays defined there (`metrics` module docstring).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor, nn

from clxai_utils.core.registry import CASCADE_THRESHOLD, MAX_NEAR_IDENTICAL_SHARE, NEAR_IDENTICAL_SSIM
from clxai_utils.core.seeding import mix_seed
from clxai_utils.core.validate import check_choice, check_choices, check_number, check_positive_int, check_seed
from clxai_utils.evaluate.metrics import ssim, zero_maps
from clxai_utils.explain.cams import explain
from clxai_utils.neurons.invert import average_ranks

#: Top-down cascade over the `ExplainableClassifier`'s modules: the head first, the stem last.
DEFAULT_ORDER: tuple[str, ...] = (
    "head",
    "backbone.layer4",
    "backbone.layer3",
    "backbone.layer2",
    "backbone.layer1",
    "backbone.stem",
)
#: `layer` of step 0, the trained model (nothing randomised).
UNRANDOMISED = "none"
#: The similarity columns of a cascade's scores (and the metrics a verdict may use).
SIMILARITIES: tuple[str, ...] = ("ssim", "spearman")


# --------------------------------------------------------------------------- similarities


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation (N,) float64 of every pair of maps (N, ...), as `scipy.stats.spearmanr`.

    Ranks with ties averaged, then Pearson on the ranks; NaN where either map is constant.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must have the same shape (N, ...), got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = (average_ranks(m.flatten(1).double().T).T for m in (a, b))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    cov = (ra * rb).sum(dim=1)
    scale = ((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)).sqrt()
    return (cov / scale).clamp(-1.0, 1.0).masked_fill(scale == 0, float("nan"))


def _similarities(reference: Tensor, maps: Tensor) -> dict[str, Tensor]:
    """Both similarity columns, CPU float64 (N,): SSIM and Spearman of every map to its reference."""
    return {"ssim": ssim(reference, maps).cpu(), "spearman": spearman(reference, maps).cpu()}


# --------------------------------------------------------------------------- layer randomisation


def randomisable_layers(model: nn.Module) -> tuple[str, ...]:
    """The names of `DEFAULT_ORDER` that `model` has and that hold parameters: what `order` may name."""
    modules = dict(model.named_modules())
    return tuple(name for name in DEFAULT_ORDER if name in modules and any(True for _ in modules[name].parameters()))


def _check_order(model: nn.Module, order: Sequence[str]) -> list[str]:
    """A non-empty list of distinct layer names of `model` (ValueError listing the allowed names)."""
    allowed = randomisable_layers(model)
    if not allowed:
        raise ValueError(f"model has none of the layers {list(DEFAULT_ORDER)} with parameters to randomise")
    return check_choices("order", order, allowed)


def _layer_seed(seed: int, name: str) -> int:
    """Seed of one layer's re-initialisation, keyed by (seed, layer name), not by the step."""
    return mix_seed(seed, zlib.crc32(name.encode()))


def randomise_layer(model: nn.Module, name: str, seed: int) -> None:
    """Re-initialise layer `name` of `model` in place: `reset_parameters()` of every module in it.

    The reset runs on a CPU copy of the layer under the CPU generator seeded with `seed`, and
    the result is loaded back, so the weights are the same on every device and the caller's
    RNG streams (CPU and CUDA) are untouched. A module that owns parameters but has no
    `reset_parameters` would stay trained unnoticed, so it is an error.
    """
    layer = model.get_submodule(name)
    fresh = copy.deepcopy(layer).cpu()
    for sub_name, module in fresh.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not hasattr(module, "reset_parameters"):
            kind = type(module).__name__
            raise TypeError(f"module {name}.{sub_name} ({kind}) has parameters but no reset_parameters()")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    layer.load_state_dict(fresh.state_dict())


# --------------------------------------------------------------------------- cascade


@dataclass(frozen=True)
class CascadeResult:
    """Per-step, per-image similarities to the trained maps, and the maps of the first images for figures."""

    scores: pd.DataFrame  # step, layer, image, image_id, zero_map, ssim, spearman; step 0 = trained model
    maps: Tensor  # (steps + 1, n_figure_maps, H, W) CPU maps of the first images, step 0 = trained
    layers: tuple[str, ...]  # layer randomised at each step: (UNRANDOMISED, *order)


def _check_eval(model: nn.Module) -> None:
    """The explained model must be in eval mode: it is the state the trained maps come from."""
    training = [name or "model" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"model must be in eval mode (call model.eval()); in training mode: {training[:5]}")


def _image_ids(image_ids: Tensor | Sequence[int] | None, n: int) -> list[int]:
    """Image ids as ints, one per image; positions 0..n-1 when none are given."""
    if image_ids is None:
        return list(range(n))
    ids = [int(i) for i in (image_ids.tolist() if isinstance(image_ids, Tensor) else image_ids)]
    if len(ids) != n:
        raise ValueError(f"image_ids must have one id per image ({n}), got {len(ids)}")
    return ids


def _step_frame(step: int, layer: str, ids: list[int], reference: Tensor, maps: Tensor) -> pd.DataFrame:
    """Tidy rows of one step, one per image; `zero_map` marks the step's all-zero maps (no ranking)."""
    scores = _similarities(reference, maps)
    return pd.DataFrame(
        {
            "step": step,
            "layer": layer,
            "image": range(len(ids)),
            "image_id": ids,
            "zero_map": zero_maps(maps).cpu().numpy(),
            **{name: values.numpy() for name, values in scores.items()},
        }
    )


def cascading_randomisation(
    model: nn.Module,
    x: Tensor,
    targets: Tensor | None,
    method: str,
    *,
    order: Sequence[str] = DEFAULT_ORDER,
    seed: int = 0,
    batch_size: int = 64,
    image_ids: Tensor | Sequence[int] | None = None,
    n_figure_maps: int = 4,
    eigencam_sign: bool = True,
) -> CascadeResult:
    """Cascading model-parameter randomisation of `model` (module docstring), on a deep copy.

    `targets` are the classes the trained maps explain (Grad-CAM needs them; Eigen-CAM ignores
    them), kept for every step so that only the weights change. Each step explains all images
    at once through `explain(..., batch_size)`. The caller's model, its `.grad` and the global
    RNG state are left unchanged; the same seed gives the same numbers.
    """
    _check_eval(model)
    layers = _check_order(model, order)
    seed = check_seed(seed)
    n_figure_maps = check_positive_int("n_figure_maps", n_figure_maps)
    ids = _image_ids(image_ids, len(x))

    work = copy.deepcopy(model)
    reference = explain(work, x, method, targets, batch_size, eigencam_sign)
    frames = [_step_frame(0, UNRANDOMISED, ids, reference, reference)]
    figure = [reference[:n_figure_maps]]
    for step, name in enumerate(layers, start=1):
        randomise_layer(work, name, _layer_seed(seed, name))
        maps = explain(work, x, method, targets, batch_size, eigencam_sign)
        frames.append(_step_frame(step, name, ids, reference, maps))
        figure.append(maps[:n_figure_maps])
    scores = pd.concat(frames, ignore_index=True)
    return CascadeResult(scores=scores, maps=torch.stack(figure).cpu(), layers=(UNRANDOMISED, *layers))


# --------------------------------------------------------------------------- verdict


class Verdict(NamedTuple):
    """Per-step summary (step, layer, mean, std, n) of one similarity, and whether the method fails."""

    summary: pd.DataFrame
    fails: bool


def randomisation_verdict(
    scores: pd.DataFrame, *, metric: str = "ssim", threshold: float = CASCADE_THRESHOLD
) -> Verdict:
    """Summarise a cascade's `scores` per step; the method fails if the last step's mean `metric` > `threshold`.

    Maps of a fully randomised model that still resemble the trained ones (mean SSIM above
    0.5 by default) show the method does not read the weights. `n` counts the defined
    scores (Spearman is NaN for constant maps); a last step with none is an error, not a pass.
    Two all-zero maps have SSIM 1: a model whose Grad-CAM maps are mostly zero before and after
    can "fail" on SSIM for that reason alone; the `zero_map` column tells.
    """
    metric = check_choice("metric", metric, SIMILARITIES)
    threshold = check_number("threshold", threshold, -1.0, 1.0)
    missing = {"step", "layer", metric} - set(scores.columns)
    if missing or scores.empty:
        raise ValueError(f"scores must be a non-empty cascade table with columns step, layer, {metric}")
    grouped = scores.groupby(["step", "layer"], sort=True)[metric]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    final = summary.iloc[-1]
    if final["n"] == 0:
        raise ValueError(f"no defined {metric} at the last step ({final['layer']}); use metric='ssim'")
    return Verdict(summary=summary, fails=bool(final["mean"] > threshold))


# --------------------------------------------------------------------------- random-logit check


@dataclass(frozen=True)
class RandomLogitResult:
    """Per-image similarity of the explained-class map to the random-class map, and the verdict."""

    ssim: Tensor  # (N,) float64
    spearman: Tensor  # (N,) float64, NaN where a map is constant
    near_identical: Tensor  # (N,) bool: ssim > threshold
    share: float  # share of near-identical pairs
    fails: bool  # share > max_share: the maps do not depend on the class


def random_logit_check(
    class_maps: Tensor,
    contrast_maps: Tensor,
    *,
    threshold: float = NEAR_IDENTICAL_SSIM,
    max_share: float = MAX_NEAR_IDENTICAL_SHARE,
) -> RandomLogitResult:
    """Random-logit test (Sixt et al. 2020): maps (N, H, W) of the explained and of a random other class.

    A pair is near-identical when its SSIM exceeds `threshold` (0.95); a method fails when more
    than `max_share` (half) of the pairs are, since its maps then do not tell the classes apart.
    """
    threshold = check_number("threshold", threshold, -1.0, 1.0)
    max_share = check_number("max_share", max_share, 0.0, 1.0)
    scores = _similarities(class_maps, contrast_maps)
    near = scores["ssim"] > threshold
    share = float(near.double().mean())
    return RandomLogitResult(
        ssim=scores["ssim"], spearman=scores["spearman"], near_identical=near, share=share, fails=share > max_share
    )
