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
from clxai_utils.data.datasets import Dataset, DatasetInfo
from clxai_utils.data.prepare import balanced_subset, load_prepared
from clxai_utils.data.sources import ImageSplit
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
    explained_split,
    load_explanations,
    mosaics_needed,
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
    "coherence_map_all_zero": "the map coherence reads (the mosaic's, or the image's own) is all zero: its coherence metrics are NaN",
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
    masked: pd.DataFrame | None = None  # coherence on the external images with masks (`masked_coherence`)


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


def _coherence(coherence_maps: ExplanationSet, masks: Tensor, scored: Tensor) -> dict[str, Tensor]:
    """Pointing Game and Attribution Localisation, kept only where the model recognises the image alone."""
    maps = coherence_maps.maps.float()
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
    base: dict[str, Any], maps: ExplanationSet, coherence_maps: ExplanationSet | None, values: dict[str, Tensor]
) -> pd.DataFrame:
    """One table block: ids, labels, flags and every metric column (NaN where a facet does not apply)."""
    zero = zero_maps(maps.maps)
    coherence_zero = zero if coherence_maps is None else zero_maps(coherence_maps.maps)
    columns: dict[str, Any] = {
        **base,
        "image_id": maps.image_ids.numpy(),
        "label": maps.labels.numpy(),
        "prediction": maps.predictions.numpy(),
        "correct": (maps.predictions == maps.labels).numpy(),
        "map_all_zero": zero.numpy(),
        "coherence_map_all_zero": coherence_zero.numpy(),
    }
    for name, metric in METRICS.items():
        column = values.get(name, torch.full((len(maps),), float("nan"), dtype=torch.float64)).double()
        if metric.facet != "coherence":  # coherence reads its own map, whose zeros its metrics already mark
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
    """What every (model, method) is scored on: the same images, noise, coherence masks and settings.

    `masks` are the object masks coherence is scored against: the mosaics' (where the test
    images have none) or the test images' own; None when there are neither.
    """

    x: Tensor
    x_noisy: Tensor
    masks: Tensor | None
    baseline: Tensor
    params: MetricsConfig
    batch_size: int
    seed: int


def facet_inputs(x: Tensor, masks: Tensor | None, info: DatasetInfo, run: Run) -> FacetInputs:
    """The inputs of the run's protocol for images `x`: noise drawn once from the run's seed, its baseline."""
    params = run.settings.metrics
    noisy = add_input_noise(x, params.noise_sigma, torch.Generator().manual_seed(run.seed))
    baseline = make_baseline(params.baseline, info.mean, info.std)
    return FacetInputs(x, noisy, masks, baseline, params, run.settings.explain.batch_size, run.seed)


def coherence_source(split: ImageSplit, num_classes: int) -> str:
    """Where coherence comes from for a test split: its own masks, 2x2 mosaics, or nowhere."""
    if split.masks is not None:
        return "the test images' own object masks"
    return "2x2 mosaics" if mosaics_needed(split, num_classes) else "none (no masks and fewer than 4 classes)"


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
) -> ScoredBlock:
    """Every facet of one (model, method) as table rows starting with the `base` columns.

    `coherence_maps` are the maps coherence reads against `inputs.masks`: the mosaics' maps,
    or `maps` themselves where the test images have masks; None leaves coherence NaN.
    `step(facet)` is called before each facet (progress reporting); the first `n_examples`
    images keep their auxiliary maps for figures.
    """
    values, curves, fractions, extra = _score(model, maps, coherence_maps, inputs, clock, step)
    examples = {k: v[:n_examples] for k, v in extra.items()} | {
        "maps": maps.maps[:n_examples].float(),
        "curves": curves[:n_examples],
    }
    if coherence_maps is not None:
        examples["coherence_maps"] = coherence_maps.maps[:n_examples].float()
    return ScoredBlock(_rows(base, maps, coherence_maps, values), _mean_curves(base, curves, fractions), examples)


def _score(
    model: nn.Module,
    maps: ExplanationSet,
    coherence_maps: ExplanationSet | None,
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
    if coherence_maps is not None and inputs.masks is not None:
        scored = maps.predictions == maps.labels
        values |= clock.time("coherence", n, _coherence, coherence_maps, inputs.masks, scored)
    return values, curves, fractions, extra


def _sidecar(
    run: Run,
    losses: list[str],
    methods: list[str],
    n_images: int,
    table: pd.DataFrame,
    throughput: pd.DataFrame,
    precision: str,
    coherence: str,
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
            "coherence": f"{coherence}; scored only where the image alone is classified correctly",
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


@dataclass
class ScoringSet:
    """Images scored on every facet, with what each facet needs: the inputs, and the mosaics if coherence uses them."""

    split: ImageSplit
    inputs: FacetInputs
    mosaics: Mosaics | None


def scoring_set(split: ImageSplit, data: Dataset, run: Run) -> ScoringSet:
    """The run's protocol for the images of `split`: noise, baseline, and coherence masks (`coherence_source`)."""
    mosaics = explained_mosaics(split, data.info, run.seed) if mosaics_needed(split, data.num_classes) else None
    masks = split.masks if split.masks is not None else None if mosaics is None else mosaics.masks
    return ScoringSet(split, facet_inputs(normalised_images(split, data.info), masks, data.info, run), mosaics)


def explain_and_score(
    model: nn.Module, scoring: ScoringSet, method: str, base: dict[str, Any], clock: FacetClock, batch_size: int
) -> ScoredBlock:
    """Maps of `method` computed here (not stored) exactly as 05 computes them, then every facet as 06 scores it."""
    split, inputs = scoring.split, scoring.inputs
    maps = compute_explanations(
        model, (inputs.x, split.labels, split.ids), method, "predicted", batch_size=batch_size, progress=False
    )
    coherence_maps = maps if split.masks is not None else None
    if scoring.mosaics is not None:
        mosaic_batch = (scoring.mosaics.images, split.labels, split.ids)
        coherence_maps = compute_explanations(
            model, mosaic_batch, method, "true", batch_size=batch_size, progress=False
        )
    return score_model(model, maps, coherence_maps, inputs, base, clock)


def _stored_coherence_maps(
    run: Run, loss: str, method: str, scoring: ScoringSet, maps: ExplanationSet
) -> ExplanationSet | None:
    """The maps coherence reads: the test maps where the images have masks, else the stored mosaic maps."""
    if scoring.split.masks is not None:
        return maps
    if scoring.mosaics is None:
        return None
    mosaic_maps = load_explanations(run, loss, method, "mosaics")
    _check_same_images(mosaic_maps, scoring.split.ids, "mosaic")
    return mosaic_maps


def masked_coherence(run: Run, data: Dataset, losses: list[str], methods: list[str]) -> pd.DataFrame | None:
    """Coherence on the external images with masks (CIFAR-10's real photographs): one row per loss, method, image.

    Their maps are 05's (kind "masks", the predicted class); Pointing Game and Attribution
    Localisation are scored where the prediction is correct, as on every other coherence
    set. None without a mask set (no `mask_source` at 00_data).
    """
    masked = data.mask_set
    if masked is None:
        return None
    blocks = []
    for loss in losses:
        for method in methods:
            maps = load_explanations(run, loss, method, "masks")
            _check_same_images(maps, masked.ids, "masked-image")
            scored = maps.predictions == maps.labels
            values = _coherence(maps, masked.masks, scored)
            blocks.append(
                pd.DataFrame(
                    {
                        "dataset": run.dataset,
                        "profile": run.profile,
                        "seed": run.seed,
                        "loss": loss,
                        "method": method,
                        "image_id": maps.image_ids.numpy(),
                        "key": list(masked.keys),
                        "label": maps.labels.numpy(),
                        "prediction": maps.predictions.numpy(),
                        "correct": scored.numpy(),
                        "map_all_zero": zero_maps(maps.maps).numpy(),
                        **{name: value.numpy() for name, value in values.items()},
                    }
                )
            )
    return pd.concat(blocks, ignore_index=True)


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
    the same perturbation. Coherence reads the test images' own masks, else mosaics
    (`coherence_source`); with a mask set, its coherence goes to its own table
    (`masked_coherence`). `n_examples` images per (loss, method) are returned with their
    auxiliary maps for the notebook's figures. `precision` (`clxai_utils.core.precision`'s
    switch) must be the one the stored maps were computed in: the other maps a facet needs
    are computed in it too.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    n_examples = check_positive_int("n_examples", n_examples)
    compute = resolve_precision(precision, torch.device("cpu"))
    paths = run.facets_paths
    _remove_stale({**paths, "masks": run.coherence_masks_path})
    data, _ = load_prepared(run)
    scoring = scoring_set(explained_split(data, run.settings.explain), data, run)
    split, inputs = scoring.split, scoring.inputs
    clock, blocks, examples = FacetClock(), [], {}
    bar = progress_bar(total=len(losses) * len(methods) * len(FACETS), desc="facets", disable=not progress)
    for loss in losses:
        model, _ = load_classifier(run, loss)
        for method in methods:
            maps = load_explanations(run, loss, method, "test")
            _check_same_images(maps, split.ids, "test")
            _check_precision(maps, compute)
            coherence_maps = _stored_coherence_maps(run, loss, method, scoring, maps)

            def step(facet: str, pair: str = f"{loss}/{method}") -> None:
                bar.set_description(f"{pair} {facet}")
                bar.update(facet != "faithfulness")  # counts the facet just finished

            base = {"dataset": run.dataset, "profile": run.profile, "seed": run.seed, "loss": loss, "method": method}
            with inference_model(model, compute) as fast:
                block = score_model(fast, maps, coherence_maps, inputs, base, clock, step, n_examples)
            bar.update(1)
            blocks.append(block)
            examples[(loss, method)] = block.examples
    bar.close()
    table, curves_table, throughput = (
        pd.concat([b.rows for b in blocks], ignore_index=True),
        pd.concat([b.curves for b in blocks], ignore_index=True),
        clock.table(),
    )
    masked = masked_coherence(run, data, losses, methods)
    sidecar = _sidecar(
        run, losses, methods, len(split), table, throughput, compute, coherence_source(split, data.num_classes)
    )
    sidecar["mask_set"] = (
        None if data.mask_set is None else {"images": len(data.mask_set), "source": data.source_of_masks}
    )
    write_json(paths["sidecar"], sidecar)
    write_csv(paths["curves"], curves_table)
    if masked is not None:
        write_csv(run.coherence_masks_path, masked)
    write_csv(paths["table"], table)  # last: its presence means the others are complete
    shown = {"images": inputs.x, "noisy_images": inputs.x_noisy}
    if scoring.mosaics is not None:
        shown["mosaics"] = scoring.mosaics.images
    displayed = {name: denormalize(t[:n_examples], data.info.mean, data.info.std) for name, t in shown.items()}
    if inputs.masks is not None:
        displayed["masks"] = inputs.masks[:n_examples].reshape(-1, *inputs.masks.shape[-2:]).float()
    return FacetResults(table, curves_table, throughput, sidecar, examples, displayed, masked)


def precision_effect(run: Run, loss: str, n_images: int = 200, methods: Iterable[str] = METHODS) -> pd.DataFrame:
    """How much bf16 moves the facets of one model: every facet in float32 and in bf16, on the same images.

    A class-balanced subset of about `n_images` explained images (both precisions see the
    same ones) gets maps and every facet in both precisions, exactly as 05 and 06 compute them. One row per (method,
    metric): the float32 mean, the bf16 mean, the mean and largest absolute per-image
    difference; the `prediction` row gives the share of images whose predicted class is the same.
    """
    check_choice("loss", loss, LOSSES)
    methods = check_choices("methods", methods, METHODS)
    n_images = check_positive_int("n_images", n_images)
    resolve_precision("bf16", torch.device("cpu"))  # a clear error where bf16 would be emulated
    data, _ = load_prepared(run)
    full = explained_split(data, run.settings.explain)
    per_class = max(1, min(n_images // data.num_classes, min(full.class_counts(data.num_classes))))
    scoring = scoring_set(full.subset(balanced_subset(full.labels, per_class, seed=0)), data, run)
    model, _ = load_classifier(run, loss)
    tables = {}
    for precision in ("float32", "bf16"):
        with inference_model(model, precision) as fast:
            blocks = [
                explain_and_score(
                    fast, scoring, method, {"method": method}, FacetClock(), run.settings.explain.batch_size
                ).rows
                for method in methods
            ]
        tables[precision] = pd.concat(blocks, ignore_index=True).set_index(["method", "image_id"]).sort_index()
    exact, fast_table = tables["float32"], tables["bf16"]
    rows: list[dict[str, Any]] = []
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
