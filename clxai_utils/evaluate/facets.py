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
from clxai_utils.core.precision import inference_model, resolve_precision
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import FACETS, LOSSES, METHOD_REGISTRY, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choice, check_choices, check_positive_int
from clxai_utils.data.augment import denormalize
from clxai_utils.data.prepare import load_prepared
from clxai_utils.data.sources import DatasetInfo
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
    compute_explanations,
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


def _check_precision(stored: ExplanationSet, precision: str) -> None:
    """Facets compare stored maps with maps computed now: both must come from the same precision."""
    if stored.meta.get("precision") != precision:
        raise ValueError(
            f"the stored {stored.method} maps were computed in {stored.meta.get('precision')} and this run scores in "
            f"{precision}: rerun notebooks/05_explanations.ipynb with the same precision (CLXAI_PRECISION)"
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
class FacetInputs:
    """What every (model, method) is scored on: the same images, noise, masks and settings."""

    x: Tensor
    x_noisy: Tensor
    masks: Tensor
    baseline: Tensor
    params: MetricsConfig
    batch_size: int
    seed: int


def facet_inputs(x: Tensor, mosaic_masks: Tensor, info: DatasetInfo, run: Run) -> FacetInputs:
    """The inputs of the run's protocol for images `x`: noise drawn once from the run's seed, its baseline."""
    params = run.settings.metrics
    noisy = add_input_noise(x, params.noise_sigma, torch.Generator().manual_seed(run.seed))
    baseline = make_baseline(params.baseline, info.mean, info.std)
    return FacetInputs(x, noisy, mosaic_masks, baseline, params, run.settings.explain.batch_size, run.seed)


@dataclass
class ScoredBlock:
    """One (model, method) scored: its rows of the per-image table, its mean PF curve, example maps."""

    rows: pd.DataFrame
    curves: pd.DataFrame
    examples: dict[str, Tensor]


def score_model(
    model: nn.Module,
    maps: ExplanationSet,
    mosaic_maps: ExplanationSet,
    inputs: FacetInputs,
    base: dict[str, Any],
    clock: FacetClock,
    step: Callable[[str], None] = lambda _facet: None,
    n_examples: int = 4,
) -> ScoredBlock:
    """Every facet of one (model, method) as table rows starting with the `base` columns.

    `step(facet)` is called before each facet (progress reporting); the first `n_examples`
    images keep their auxiliary maps for figures.
    """
    values, curves, fractions, extra = _score(model, maps, mosaic_maps, inputs, clock, step)
    examples = {k: v[:n_examples] for k, v in extra.items()} | {
        "maps": maps.maps[:n_examples].float(),
        "mosaic_maps": mosaic_maps.maps[:n_examples].float(),
        "curves": curves[:n_examples],
    }
    return ScoredBlock(_rows(base, maps, mosaic_maps, values), _mean_curves(base, curves, fractions), examples)


def _score(
    model: nn.Module,
    maps: ExplanationSet,
    mosaic_maps: ExplanationSet,
    inputs: FacetInputs,
    clock: FacetClock,
    step: Callable[[str], None],
) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Tensor]]:
    """Every facet of one (model, method): metric columns, PF curves and x axis, auxiliary maps."""
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
    table: pd.DataFrame,
    throughput: pd.DataFrame,
    precision: str,
) -> dict[str, Any]:
    """The protocol, versions, column meanings, zero-map counts and throughput of one results table."""
    return {
        "dataset": run.dataset,
        "profile": run.profile,
        "seed": run.seed,
        "losses": losses,
        "methods": methods,
        "n_images": n_images,
        "precision": precision,
        "params": run.settings.metrics.to_dict()
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
    precision: str | None = None,
) -> FacetResults:
    """06_metrics' work: every facet for every (loss, method) on the maps 05 stored; writes the tables.

    The noisy inputs are drawn once from `seed`, so every model and method is scored on
    the same perturbation. `n_examples` images per (loss, method) are returned with their
    auxiliary maps for the notebook's figures. `precision` (`clxai_utils.core.precision`'s
    switch) must be the one the stored maps were computed in: the other maps a facet needs
    are computed in it too.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    n_examples = check_positive_int("n_examples", n_examples)
    compute = resolve_precision(precision, torch.device("cpu"))
    settings = run.settings
    paths = run.facets_paths
    _remove_stale(paths)
    data, _ = load_prepared(run)
    split = explained_split(data, settings.explain)
    mosaics = explained_mosaics(split, data.info, run.seed)
    inputs = facet_inputs(normalised_images(split, data.info), mosaics.masks, data.info, run)
    clock, blocks, examples = FacetClock(), [], {}
    bar = progress_bar(total=len(losses) * len(methods) * len(FACETS), desc="facets", disable=not progress)
    for loss in losses:
        model, _ = load_classifier(run, loss)
        for method in methods:
            maps = load_explanations(run, loss, method, "test")
            mosaic_maps = load_explanations(run, loss, method, "mosaics")
            _check_same_images(maps, split.ids, "test")
            _check_same_images(mosaic_maps, split.ids, "mosaic")
            _check_precision(maps, compute)

            def step(facet: str, pair: str = f"{loss}/{method}") -> None:
                bar.set_description(f"{pair} {facet}")
                bar.update(facet != "faithfulness")  # counts the facet just finished

            base = {"dataset": run.dataset, "profile": run.profile, "seed": run.seed, "loss": loss, "method": method}
            with inference_model(model, compute) as fast:
                block = score_model(fast, maps, mosaic_maps, inputs, base, clock, step, n_examples)
            bar.update(1)
            blocks.append(block)
            examples[(loss, method)] = block.examples
    bar.close()
    table, curves_table, throughput = (
        pd.concat([b.rows for b in blocks], ignore_index=True),
        pd.concat([b.curves for b in blocks], ignore_index=True),
        clock.table(),
    )
    sidecar = _sidecar(run, losses, methods, len(split), table, throughput, compute)
    write_json(paths["sidecar"], sidecar)
    write_csv(paths["curves"], curves_table)
    write_csv(paths["table"], table)  # last: its presence means the other two are complete
    shown = {"images": inputs.x, "noisy_images": inputs.x_noisy, "mosaics": mosaics.images}
    displayed = {name: denormalize(t[:n_examples], data.info.mean, data.info.std) for name, t in shown.items()}
    return FacetResults(
        table, curves_table, throughput, sidecar, examples, displayed | {"masks": mosaics.masks[:n_examples, 0].float()}
    )


def precision_effect(run: Run, loss: str, n_images: int = 200, methods: Iterable[str] = METHODS) -> pd.DataFrame:
    """How much bf16 moves the facets of one model: every facet in float32 and in bf16, on the same images.

    The first `n_images` explained images (class-balanced order is not needed: both
    precisions see the same ones) get maps and every facet in both precisions, exactly as
    05 and 06 compute them. One row per (method, metric): the float32 mean, the bf16 mean,
    the mean and largest absolute per-image difference; the `prediction` row gives the
    share of images whose predicted class is the same.
    """
    check_choice("loss", loss, LOSSES)
    methods = check_choices("methods", methods, METHODS)
    n_images = check_positive_int("n_images", n_images)
    resolve_precision("bf16", torch.device("cpu"))  # a clear error where bf16 would be emulated
    data, _ = load_prepared(run)
    full = explained_split(data, run.settings.explain)
    split = full.subset(torch.arange(min(n_images, len(full))))
    x = normalised_images(split, data.info)
    mosaics = explained_mosaics(split, data.info, run.seed)
    inputs = facet_inputs(x, mosaics.masks, data.info, run)
    model, _ = load_classifier(run, loss)
    batch = run.settings.explain.batch_size
    tables = {}
    for precision in ("float32", "bf16"):
        blocks = []
        with inference_model(model, precision) as fast:
            for method in methods:
                maps = compute_explanations(
                    fast, (x, split.labels, split.ids), method, "predicted", batch_size=batch, progress=False
                )
                mosaic_maps = compute_explanations(
                    fast, (mosaics.images, split.labels, split.ids), method, "true", batch_size=batch, progress=False
                )
                block = score_model(fast, maps, mosaic_maps, inputs, {"method": method}, FacetClock())
                blocks.append(block.rows)
        tables[precision] = pd.concat(blocks, ignore_index=True).set_index(["method", "image_id"]).sort_index()
    exact, fast_table = tables["float32"], tables["bf16"]
    rows = []
    for method in methods:
        a, b = exact.loc[method], fast_table.loc[method]
        rows.append(
            {"method": method, "metric": "prediction", "agreement": float((a["prediction"] == b["prediction"]).mean())}
        )
        for metric in METRICS:
            diff = (b[metric] - a[metric]).abs().dropna()
            if diff.empty:
                continue
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "float32_mean": a[metric].mean(),
                    "bf16_mean": b[metric].mean(),
                    "mean_abs_diff": diff.mean(),
                    "max_abs_diff": diff.max(),
                }
            )
    return pd.DataFrame(rows)
