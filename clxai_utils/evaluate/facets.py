"""The five quality facets of the stored explanations: one tidy per-image table (06_metrics).

Every facet reads the maps 05_explanations stored; only the two facets that need *other*
maps compute them here: continuity (maps of a noisy copy of each image) and contrastivity
(Grad-CAM maps of another class). Each metric runs on whole batches (`metrics.py`).

All-zero maps (no positive evidence at all) are explicit: `map_all_zero` marks them, and
every metric of such a row is NaN by definition (there is no ranking to flip, no maximum
to point with, no distribution to measure), never a silent NaN among valid rows.

The table, the mean pixel-flipping curves and the JSON sidecar are written only after
every facet of every model is computed, table last; stale files are removed first, so an
interrupted run leaves no table, never a partial one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from clxai_utils.core.artifacts import write_csv, write_json
from clxai_utils.core.config import MetricsConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import FACETS, LOSSES, METHOD_REGISTRY, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices, check_positive_int
from clxai_utils.data.augment import denormalize
from clxai_utils.data.prepare import load_prepared
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
from clxai_utils.explain.store import (
    ExplanationSet,
    explained_mosaics,
    explained_split,
    load_explanations,
    normalised_images,
    package_versions,
)
from clxai_utils.train.probe import load_classifier

ID_COLUMNS: dict[str, str] = {
    "dataset": "data set",
    "profile": "run profile",
    "seed": "training seed",
    "loss": "training loss",
    "method": "explanation method",
    "image_id": "test image id (the pairing key)",
    "label": "true class",
    "prediction": "predicted class (the explained class)",
    "correct": "prediction == label",
    "map_all_zero": "the explained map is all zero: its metrics are NaN by definition",
    "mosaic_map_all_zero": "the mosaic map is all zero: its coherence metrics are NaN by definition",
}


@dataclass
class FacetResults:
    """What `evaluate_facets` returns (and wrote): the tables, throughput and a few worked examples."""

    table: pd.DataFrame
    curves: pd.DataFrame
    throughput: pd.DataFrame
    sidecar: dict[str, Any]
    examples: dict[tuple[str, str], dict[str, Tensor]] = field(default_factory=dict)
    inputs: dict[str, Tensor] = field(
        default_factory=dict
    )  # the example images, noisy copies, mosaics, masks (displayable)


class _Clock:
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
    result = pixel_flipping(
        model,
        x,
        maps.maps.float(),
        maps.targets,
        pixels_per_step=params.pixels_per_step,
        baseline=baseline,
        batch_size=params.batch_size,
    )
    return {"pf_auc": result.auc}, result.curves, result.fractions


def _continuity(
    model: nn.Module, x_noisy: Tensor, maps: ExplanationSet, params: MetricsConfig, batch_size: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Same class, same method, on the noisy copy: only the input changes."""
    noisy = explain(model, x_noisy, maps.method, maps.targets, batch_size)
    return {"continuity_ssim": ssim(maps.maps.float(), noisy, **params.ssim_kwargs())}, noisy


def _contrastivity(
    model: nn.Module, x: Tensor, maps: ExplanationSet, params: MetricsConfig, batch_size: int, seed: int
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The same method's map of one other class per image, drawn from (seed, image id)."""
    others = contrast_classes(maps.predictions, maps.image_ids, maps.logits.shape[1], seed)
    contrast = explain(model, x, maps.method, others, batch_size)
    return {"contrastivity_ssim": ssim(maps.maps.float(), contrast, **params.ssim_kwargs())}, contrast, others


def _complexity(maps: ExplanationSet) -> dict[str, Tensor]:
    return {
        "sparseness_gini": sparseness_gini(maps.maps.float()),
        "complexity_entropy": complexity_entropy(maps.maps.float()),
    }


def _coherence(mosaic_maps: ExplanationSet, masks: Tensor, scored: Tensor) -> dict[str, Tensor]:
    """Pointing Game and Attribution Localisation, kept only where the model recognises the image alone."""
    maps = mosaic_maps.maps.float()
    out = {
        "pointing_game": pointing_game(maps, masks),
        "attribution_localisation": attribution_localisation(maps, masks),
    }
    return {name: values.masked_fill(~scored, float("nan")) for name, values in out.items()}


def _check_same_images(stored: ExplanationSet, ids: Tensor, what: str) -> None:
    if not torch.equal(stored.image_ids, ids):
        raise ValueError(
            f"the stored {what} maps cover other images than this profile explains: rerun notebooks/05_explanations.ipynb"
        )


def _rows(
    base: dict[str, Any], maps: ExplanationSet, mosaic_maps: ExplanationSet, values: dict[str, Tensor]
) -> pd.DataFrame:
    """One table block: ids, labels, flags and every metric column (NaN where a facet does not apply)."""
    zero = zero_maps(maps.maps)
    columns: dict[str, Any] = {
        **base,
        "image_id": maps.image_ids.numpy(),
        "label": maps.labels.numpy(),
        "prediction": maps.predictions.numpy(),
        "correct": (maps.predictions == maps.labels).numpy(),
        "map_all_zero": zero.numpy(),
        "mosaic_map_all_zero": zero_maps(mosaic_maps.maps).numpy(),
    }
    for name, metric in METRICS.items():
        column = values.get(name, torch.full((len(maps),), float("nan"), dtype=torch.float64)).double()
        if metric.facet != "coherence":  # coherence reads the mosaic map, whose zeros its metrics already mark
            column = column.masked_fill(zero, float("nan"))
        columns[name] = column.numpy()
    return pd.DataFrame(columns)


def _mean_curves(base: dict[str, Any], curves: Tensor, fractions: Tensor) -> pd.DataFrame:
    valid = curves[~curves.isnan().any(dim=1)]
    return pd.DataFrame(
        {
            **base,
            "step": range(len(fractions)),
            "fraction": fractions.cpu().numpy(),
            "mean": valid.mean(0).numpy(),
            "std": valid.std(0).numpy(),
            "n": len(valid),
        }
    )


def _remove_stale(paths: dict[str, Any]) -> None:
    for path in paths.values():
        path.unlink(missing_ok=True)


@dataclass
class _Inputs:
    """What every (model, method) is scored on: the same images, noise, masks and settings."""

    x: Tensor
    x_noisy: Tensor
    masks: Tensor
    baseline: Tensor
    params: MetricsConfig
    batch_size: int
    seed: int


def _score(
    model: nn.Module,
    maps: ExplanationSet,
    mosaic_maps: ExplanationSet,
    inputs: _Inputs,
    clock: _Clock,
    step: Callable[[str], None],
) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Tensor]]:
    """Every facet of one (model, method): metric columns, PF curves and x axis, auxiliary maps.

    `step(facet)` is called before each facet (progress reporting).
    """
    n = len(maps)
    values: dict[str, Tensor] = {}
    extra: dict[str, Tensor] = {}
    step("faithfulness")
    faithful, curves, fractions = clock.time(
        "faithfulness", n, _faithfulness, model, inputs.x, maps, inputs.params, inputs.baseline
    )
    step("continuity")
    continuity, extra["noisy_maps"] = clock.time(
        "continuity", n, _continuity, model, inputs.x_noisy, maps, inputs.params, inputs.batch_size
    )
    values |= faithful | continuity
    step("contrastivity")
    if METHOD_REGISTRY[maps.method].class_specific:  # a class-agnostic map (Eigen-CAM) has no contrastivity
        contrast, extra["contrast_maps"], extra["contrast_classes"] = clock.time(
            "contrastivity", n, _contrastivity, model, inputs.x, maps, inputs.params, inputs.batch_size, inputs.seed
        )
        values |= contrast
    step("complexity")
    values |= clock.time("complexity", n, _complexity, maps)
    step("coherence")
    values |= clock.time("coherence", n, _coherence, mosaic_maps, inputs.masks, maps.predictions == maps.labels)
    return values, curves, fractions, extra


def _sidecar(
    run: Run,
    losses: list[str],
    methods: list[str],
    n_images: int,
    params: MetricsConfig,
    table: pd.DataFrame,
    throughput: pd.DataFrame,
) -> dict[str, Any]:
    """The protocol, versions, column meanings, zero-map counts and throughput of one results table."""
    return {
        "dataset": run.dataset,
        "profile": run.profile,
        "seed": run.seed,
        "losses": losses,
        "methods": methods,
        "n_images": n_images,
        "params": params.to_dict()
        | {
            "explain": vars(run.settings.explain),
            "noise_space": "normalised input, not clamped",
            "contrast_class": "uniform over the other classes, keyed by (seed, image id)",
            "coherence": "one 2x2 mosaic per test image; scored only where the image alone is classified correctly",
        },
        "versions": package_versions(),
        "columns": dict(ID_COLUMNS)
        | {name: f"{m.description} ({m.facet}; {m.better} is better)" for name, m in METRICS.items()},
        "zero_maps": {
            f"{loss}/{method}": int(group["map_all_zero"].sum())
            for (loss, method), group in table.groupby(["loss", "method"], sort=False)
        },
        "throughput": {row.facet: row.images_per_s for row in throughput.itertuples()},
    }


def evaluate_facets(
    run: Run,
    losses: Iterable[str],
    methods: Iterable[str] = METHODS,
    progress: bool = True,
    n_examples: int = 4,
) -> FacetResults:
    """06_metrics' work: every facet for every (loss, method) on the maps 05 stored; writes the tables.

    The noisy inputs are drawn once from `seed`, so every model and method is scored on
    the same perturbation. `n_examples` images per (loss, method) are returned with their
    auxiliary maps for the notebook's figures.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    n_examples = check_positive_int("n_examples", n_examples)
    seed, settings = run.seed, run.settings
    params = settings.metrics
    paths = run.facets_paths
    _remove_stale(paths)
    data, _ = load_prepared(run)
    split = explained_split(data, settings.explain)
    x = normalised_images(split, data.info)
    mosaics = explained_mosaics(split, data.info, seed)
    inputs = _Inputs(
        x,
        add_input_noise(x, params.noise_sigma, torch.Generator().manual_seed(seed)),
        mosaics.masks,
        make_baseline(params.baseline, data.info.mean, data.info.std),
        params,
        settings.explain.batch_size,
        seed,
    )
    clock, blocks, curve_blocks, examples = _Clock(), [], [], {}
    bar = progress_bar(total=len(losses) * len(methods) * len(FACETS), desc="facets", disable=not progress)
    for loss in losses:
        model, _ = load_classifier(run, loss)
        for method in methods:
            maps = load_explanations(run, loss, method, "test")
            mosaic_maps = load_explanations(run, loss, method, "mosaics")
            _check_same_images(maps, split.ids, "test")
            _check_same_images(mosaic_maps, split.ids, "mosaic")

            def step(facet: str, pair: str = f"{loss}/{method}") -> None:
                bar.set_description(f"{pair} {facet}")
                bar.update(facet != "faithfulness")  # counts the facet just finished

            values, curves, fractions, extra = _score(model, maps, mosaic_maps, inputs, clock, step)
            bar.update(1)
            base = {"dataset": run.dataset, "profile": run.profile, "seed": seed, "loss": loss, "method": method}
            blocks.append(_rows(base, maps, mosaic_maps, values))
            curve_blocks.append(_mean_curves(base, curves, fractions))
            examples[(loss, method)] = {k: v[:n_examples] for k, v in extra.items()} | {
                "maps": maps.maps[:n_examples].float(),
                "mosaic_maps": mosaic_maps.maps[:n_examples].float(),
                "curves": curves[:n_examples],
            }
    bar.close()
    table, curves_table, throughput = (
        pd.concat(blocks, ignore_index=True),
        pd.concat(curve_blocks, ignore_index=True),
        clock.table(),
    )
    sidecar = _sidecar(run, losses, methods, len(split), params, table, throughput)
    write_json(paths["sidecar"], sidecar)
    write_csv(paths["curves"], curves_table)
    write_csv(paths["table"], table)  # last: its presence means the other two are complete
    shown = {"images": inputs.x, "noisy_images": inputs.x_noisy, "mosaics": mosaics.images}
    displayed = {name: denormalize(t[:n_examples], data.info.mean, data.info.std) for name, t in shown.items()}
    return FacetResults(
        table, curves_table, throughput, sidecar, examples, displayed | {"masks": mosaics.masks[:n_examples, 0].float()}
    )
