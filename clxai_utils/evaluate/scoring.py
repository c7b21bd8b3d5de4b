"""The scoring engine: every facet of one (model, method) on a set of images, as rows of the per-image table.

06_metrics (`evaluate.facets`) scores the maps 05_explanations stored; the snapshots of
07_accuracy_confound (`evaluate.snapshots`) and the precision diagnostic
(`evaluate.diagnostics`) compute their maps here and score them the same way. Only two
facets compute maps of their own: continuity (maps of a noisy copy of each image) and
contrastivity (Grad-CAM maps of another class). Every metric runs on whole batches
(`evaluate.metrics`). All-zero maps (no positive evidence at all) are flagged
(`map_all_zero`) and every metric of such a row is NaN by definition.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields, replace
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from clxai_utils.core.compute import Compute
from clxai_utils.core.config import MetricsConfig
from clxai_utils.core.registry import FACETS, METHOD_REGISTRY, METRICS
from clxai_utils.core.run import Run
from clxai_utils.data.datasets import Dataset, DatasetInfo, authors_test_masks
from clxai_utils.data.sources import ImageSplit
from clxai_utils.evaluate.authors_coherence import authors_coherence_maps, authors_coherence_scores
from clxai_utils.evaluate.metrics import (
    add_input_noise,
    attribution_localisation,
    complexity_entropy,
    contrast_classes,
    make_baseline,
    pixel_flipping,
    pointing_game,
    sparseness_gini,
    ssim,
    zero_maps,
)
from clxai_utils.explain.cams import explain
from clxai_utils.explain.mosaics import Mosaics
from clxai_utils.explain.store import (
    ExplanationSet,
    compute_explanations,
    explained_mosaics,
    mosaics_needed,
    normalised_images,
)


class FacetClock:
    """Seconds and images per facet, summed over models and methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)

    def time(self, facet: str, n: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[facet] += time.perf_counter() - start
        self.images[facet] += n
        return out

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "facet": f,
                    "images": self.images[f],
                    "seconds": round(self.seconds[f], 2),
                    "images_per_s": round(self.images[f] / self.seconds[f], 1),
                }
                for f in FACETS
                if f in self.seconds
            ]
        )


def _faithfulness(
    model: nn.Module, x: Tensor, maps: ExplanationSet, params: MetricsConfig, baseline: Tensor
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Pixel Flipping on the model's device (the flipped copies are built there); results on the CPU."""
    device = next(model.parameters()).device
    deviations = params.deviations
    targets = maps.labels if "pf_true_label" in deviations else maps.targets  # the authors scored the true label
    result = pixel_flipping(
        model,
        x.to(device),
        maps.maps.float().to(device),
        targets.to(device),
        pixels_per_step=params.pixels_per_step,
        baseline=baseline,
        batch_size=params.batch_size,
        min_baseline="pf_min_baseline" in deviations,
        channel_elements="pf_channel_elements" in deviations,
        first_point="pf_no_first_point" not in deviations,
    )
    return {"pf_auc": result.auc.cpu()}, result.curves.cpu(), result.fractions.cpu()


def _continuity(
    model: nn.Module, x_noisy: Tensor, maps: ExplanationSet, params: MetricsConfig, batch_size: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Same class, same method, on the noisy copy: only the input changes."""
    noisy = explain(model, x_noisy, maps.method, maps.targets, batch_size, eigencam_sign(params))
    return {"continuity_ssim": ssim(maps.maps.float(), noisy, **params.ssim_kwargs())}, noisy


def contrast_maps(
    model: nn.Module, x: Tensor, maps: ExplanationSet, params: MetricsConfig, batch_size: int, seed: int
) -> tuple[Tensor, Tensor]:
    """The same method's map of one other class per image, drawn from (seed, image id), and those classes.

    Contrastivity compares them with `maps`; the random-logit check (`evaluate.faithfulness_stage`)
    reads the same pairs, so both judge the same contrast.
    """
    others = contrast_classes(maps.predictions, maps.image_ids, maps.logits.shape[1], seed)
    return explain(model, x, maps.method, others, batch_size, eigencam_sign(params)), others


def _contrastivity(
    model: nn.Module, x: Tensor, maps: ExplanationSet, params: MetricsConfig, batch_size: int, seed: int
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """SSIM of each map with the same method's map of another class (`contrast_maps`)."""
    contrast, others = contrast_maps(model, x, maps, params, batch_size, seed)
    return {"contrastivity_ssim": ssim(maps.maps.float(), contrast, **params.ssim_kwargs())}, contrast, others


def eigencam_sign(params: MetricsConfig) -> bool:
    """Whether the maps computed here take Eigen-CAM's sign rule (off under `eigencam_no_sign`)."""
    return "eigencam_no_sign" not in params.deviations


def _complexity(maps: ExplanationSet) -> dict[str, Tensor]:
    return {
        "sparseness_gini": sparseness_gini(maps.maps.float()),
        "complexity_entropy": complexity_entropy(maps.maps.float()),
    }


def coherence_scores(coherence_maps: ExplanationSet, masks: Tensor, scored: Tensor) -> dict[str, Tensor]:
    """Pointing Game and Attribution Localisation, kept only where the model recognises the image alone."""
    maps = coherence_maps.maps.float()
    out = {
        "pointing_game": pointing_game(maps, masks),
        "attribution_localisation": attribution_localisation(maps, masks),
    }
    return {name: values.masked_fill(~scored, float("nan")) for name, values in out.items()}


#: Facets the authors scored on all-zero maps as they came (they marked only Pixel Flipping and complexity NaN).
_ZERO_MAPS_SCORED_BY_AUTHORS = ("continuity", "contrastivity")


def image_columns(base: dict[str, Any], maps: ExplanationSet) -> dict[str, Any]:
    """The first columns of a per-image table: `base` (the run part), the image, what the model made of it,
    and whether its map is all zero (every score of such a row is NaN)."""
    return {
        **base,
        "image_id": maps.image_ids.numpy(),
        "label": maps.labels.numpy(),
        "prediction": maps.predictions.numpy(),
        "correct": (maps.predictions == maps.labels).numpy(),
        "map_all_zero": zero_maps(maps.maps).numpy(),
    }


def _rows(
    base: dict[str, Any],
    maps: ExplanationSet,
    coherence_maps: ExplanationSet | None,
    values: dict[str, Tensor],
    zero_maps_unhandled: bool = False,
) -> pd.DataFrame:
    """One table block: ids, labels, flags and every metric column (NaN where a facet does not apply).

    `zero_maps_unhandled` (the authors' protocol) keeps the SSIM facets of all-zero maps as scored.
    """
    zero = zero_maps(maps.maps)
    coherence_zero = zero if coherence_maps is None else zero_maps(coherence_maps.maps)
    columns = image_columns(base, maps) | {"coherence_map_all_zero": coherence_zero.numpy()}
    for name, metric in METRICS.items():
        column = values.get(name, torch.full((len(maps),), float("nan"), dtype=torch.float64)).double()
        unhandled = zero_maps_unhandled and metric.facet in _ZERO_MAPS_SCORED_BY_AUTHORS
        if metric.facet != "coherence" and not unhandled:  # coherence marks the zeros of its own map
            column = column.masked_fill(zero, float("nan"))
        columns[name] = column.numpy()
    return pd.DataFrame(columns)


def mean_curves(base: dict[str, Any], curves: Tensor, fractions: Tensor, point: str = "step") -> pd.DataFrame:
    """The mean and std of per-image curves (N, P) over the images that have one (no NaN), one row per
    point (named by `point`) of the x axis `fractions`; no rows without points (faithfulness not scored)."""
    if not len(fractions):
        return pd.DataFrame(columns=[*base, point, "fraction", "mean", "std", "n"])
    valid = curves[~curves.isnan().any(dim=1)]
    return pd.DataFrame(
        {
            **base,
            point: range(len(fractions)),
            "fraction": fractions.cpu().numpy(),
            "mean": valid.mean(0).numpy(),
            "std": valid.std(0).numpy(),
            "n": len(valid),
        }
    )


def sidecar_header(run: Run, losses: list[str], methods: list[str], n_images: int, compute: Compute) -> dict[str, Any]:
    """The first keys of every scored table's sidecar: which run, models and images, on what device and precision."""
    return {
        "dataset": run.dataset,
        "profile": run.profile,
        "seed": run.seed,
        "losses": losses,
        "methods": methods,
        "n_images": n_images,
        **compute.to_dict(),
    }


@dataclass
class FacetInputs:
    """What every (model, method) is scored on: the same images, noise, coherence masks and settings.

    `masks` are the object masks coherence is scored against: the mosaics' (where the test
    images have none) or the test images' own; None when there are neither.
    `authors_masks` are the test images' own masks read as the authors read them; given only
    under `authors_coherence` on a data set whose test images carry masks, where they
    switch coherence to the authors' (`evaluate.authors_coherence`).
    """

    x: Tensor
    x_noisy: Tensor
    masks: Tensor | None
    baseline: Tensor
    params: MetricsConfig
    batch_size: int
    seed: int
    authors_masks: Tensor | None = None


def facet_inputs(
    x: Tensor,
    masks: Tensor | None,
    info: DatasetInfo,
    run: Run,
    params: MetricsConfig | None = None,
    authors_masks: Tensor | None = None,
) -> FacetInputs:
    """The inputs of a protocol (`params`, default the run's) for images `x`: noise drawn once from the run's seed.

    Every protocol draws the same noise, so protocols differ only in what they switch on.
    `authors_masks` (the test images' own masks read the authors' way) are kept only where
    the protocol switches `authors_coherence` on.
    """
    params = params or run.settings.metrics
    clamp = "clamped_noise" in params.deviations  # the authors' bug, as a protocol switch
    noisy = add_input_noise(x, params.noise_sigma, torch.Generator().manual_seed(run.seed), clamp)
    baseline = make_baseline(params.baseline, info.mean, info.std)
    authors = authors_masks if "authors_coherence" in params.deviations else None
    return FacetInputs(x, noisy, masks, baseline, params, run.settings.explain.batch_size, run.seed, authors)


def coherence_source(split: ImageSplit, num_classes: int, deviations: Collection[str] = ()) -> str:
    """Where coherence comes from for a test split, and which images it scores: own masks, 2x2 mosaics, or nowhere."""
    if split.masks is not None and "authors_coherence" in deviations:
        return (
            "the test images' own object masks, read and scored as the authors did (authors_coherence); "
            "scored on every image"
        )
    if split.masks is not None:
        return "the test images' own object masks; scored only where the image alone is classified correctly"
    if mosaics_needed(split, num_classes):
        return "2x2 mosaics; scored only where the image alone is classified correctly"
    return "none (no masks and fewer than 4 classes)"


@dataclass
class ScoredBlock:
    """One (model, method) scored: its rows of the per-image table, its mean PF curve, example maps."""

    rows: pd.DataFrame
    curves: pd.DataFrame
    examples: dict[str, Tensor]


def score_model(
    model: nn.Module,
    maps: ExplanationSet,
    coherence_maps: ExplanationSet | None,
    inputs: FacetInputs,
    base: dict[str, Any],
    clock: FacetClock,
    step: Callable[[str], None] = lambda _facet: None,
    n_examples: int = 4,
    facets: Collection[str] = FACETS,
) -> ScoredBlock:
    """Every facet of one (model, method) as table rows starting with the `base` columns.

    `coherence_maps` are the maps coherence reads against `inputs.masks`: the mosaics' maps,
    or `maps` themselves where the test images have masks; None leaves coherence NaN. With
    `inputs.authors_masks` (`authors_coherence`) coherence computes the authors' maps instead.
    `step(facet)` is called before each facet (progress reporting); the first `n_examples`
    images keep their auxiliary maps for figures. Only the `facets` named are computed (the
    protocol ablation recomputes what a deviation changes); the others' columns are NaN.
    """
    if "coherence" in facets and inputs.authors_masks is not None:
        sign = eigencam_sign(inputs.params)
        coherence_maps = clock.time(
            "coherence", len(maps), authors_coherence_maps, model, inputs.x, maps, inputs.batch_size, sign
        )
    values, curves, fractions, extra = _score(model, maps, coherence_maps, inputs, clock, step, set(facets))
    examples = {k: v[:n_examples] for k, v in extra.items()} | {
        "maps": maps.maps[:n_examples].float(),
        "curves": curves[:n_examples],
    }
    if coherence_maps is not None:
        examples["coherence_maps"] = coherence_maps.maps[:n_examples].float()
    unhandled = "zero_maps_unhandled" in inputs.params.deviations
    return ScoredBlock(
        _rows(base, maps, coherence_maps, values, unhandled), mean_curves(base, curves, fractions), examples
    )


def _score(
    model: nn.Module,
    maps: ExplanationSet,
    coherence_maps: ExplanationSet | None,
    inputs: FacetInputs,
    clock: FacetClock,
    step: Callable[[str], None],
    facets: set[str],
) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Tensor]]:
    """The `facets` of one (model, method): metric columns, PF curves and x axis (empty without
    faithfulness), auxiliary maps."""
    n = len(maps)
    values: dict[str, Tensor] = {}
    extra: dict[str, Tensor] = {}
    curves, fractions = torch.empty(n, 0, dtype=torch.float64), torch.empty(0, dtype=torch.float64)
    step("faithfulness")
    if "faithfulness" in facets:
        faithful, curves, fractions = clock.time(
            "faithfulness", n, _faithfulness, model, inputs.x, maps, inputs.params, inputs.baseline
        )
        values |= faithful
    step("continuity")
    if "continuity" in facets:
        continuity, extra["noisy_maps"] = clock.time(
            "continuity", n, _continuity, model, inputs.x_noisy, maps, inputs.params, inputs.batch_size
        )
        values |= continuity
    step("contrastivity")
    # a class-agnostic map (Eigen-CAM) has no contrastivity
    if "contrastivity" in facets and METHOD_REGISTRY[maps.method].class_specific:
        contrast, extra["contrast_maps"], extra["contrast_classes"] = clock.time(
            "contrastivity", n, _contrastivity, model, inputs.x, maps, inputs.params, inputs.batch_size, inputs.seed
        )
        values |= contrast
    step("complexity")
    if "complexity" in facets:
        values |= clock.time("complexity", n, _complexity, maps)
    step("coherence")
    if "coherence" in facets and inputs.authors_masks is not None and coherence_maps is not None:
        values |= clock.time("coherence", n, authors_coherence_scores, coherence_maps, inputs.authors_masks)
    elif "coherence" in facets and coherence_maps is not None and inputs.masks is not None:
        scored = maps.predictions == maps.labels
        values |= clock.time("coherence", n, coherence_scores, coherence_maps, inputs.masks, scored)
    return values, curves, fractions, extra


@dataclass
class ScoringSet:
    """Images scored on every facet, with what each facet needs: the inputs, and the mosaics if coherence uses them."""

    split: ImageSplit
    inputs: FacetInputs
    mosaics: Mosaics | None


def scoring_set(split: ImageSplit, data: Dataset, run: Run) -> ScoringSet:
    """The run's protocol for the images of `split`: noise, baseline, and coherence masks (`coherence_source`).

    Under `authors_coherence`, the test images' own masks are also read the authors' way.
    """
    mosaics = explained_mosaics(split, data.info, run.seed) if mosaics_needed(split, data.num_classes) else None
    masks = split.masks if split.masks is not None else None if mosaics is None else mosaics.masks
    on = "authors_coherence" in run.settings.metrics.deviations
    authors = authors_test_masks(data, split.ids) if on and split.masks is not None else None
    x = normalised_images(split, data.info)
    return ScoringSet(split, facet_inputs(x, masks, data.info, run, authors_masks=authors), mosaics)


def subset_scoring(scoring: ScoringSet, index: Tensor) -> ScoringSet:
    """The images at `index` of a scoring set, with exactly their noise, masks and mosaics (rows pair by image id)."""
    inputs, mosaics = scoring.inputs, scoring.mosaics
    picked = replace(
        inputs,
        x=inputs.x[index],
        x_noisy=inputs.x_noisy[index],
        masks=None if inputs.masks is None else inputs.masks[index],
        authors_masks=None if inputs.authors_masks is None else inputs.authors_masks[index],
    )
    if mosaics is not None:
        mosaics = Mosaics(*(getattr(mosaics, f.name)[index] for f in fields(mosaics)))
    return ScoringSet(scoring.split.subset(index), picked, mosaics)


def explain_and_score(
    model: nn.Module,
    scoring: ScoringSet,
    method: str,
    base: dict[str, Any],
    clock: FacetClock,
    batch_size: int,
    facets: Collection[str] = FACETS,
) -> ScoredBlock:
    """Maps of `method` computed here (not stored) exactly as 05 computes them, then the `facets` as 06 scores them."""
    split, inputs = scoring.split, scoring.inputs
    sign = eigencam_sign(inputs.params)
    maps = compute_explanations(
        model,
        (inputs.x, split.labels, split.ids),
        method,
        "predicted",
        batch_size=batch_size,
        progress=False,
        eigencam_sign=sign,
    )
    coherence_maps = maps if split.masks is not None else None
    if scoring.mosaics is not None:
        mosaic_batch = (scoring.mosaics.images, split.labels, split.ids)
        coherence_maps = compute_explanations(
            model, mosaic_batch, method, "true", batch_size=batch_size, progress=False, eigencam_sign=sign
        )
    return score_model(model, maps, coherence_maps, inputs, base, clock, facets=facets)
