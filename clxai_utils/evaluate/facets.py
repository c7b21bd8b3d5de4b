"""Stage 06_metrics: the five quality facets of the stored explanations, one tidy per-image table.

Every facet reads the maps 05_explanations stored and is scored by `evaluate.scoring` (the
engine the snapshots and the diagnostics share); only continuity and contrastivity compute
maps of their own there.

All-zero maps (no positive evidence at all) are explicit: `map_all_zero` marks them, and
every metric of such a row is NaN by definition (there is no ranking to flip, no maximum
to point with, no distribution to measure), never a silent NaN among valid rows.

The table, the mean pixel-flipping curves and the JSON sidecar are written only after
every facet of every model is computed, table last; stale files are removed first, so an
interrupted run leaves no table, never a partial one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from clxai_utils.core.artifacts import remove_stale, write_csv, write_json
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.config import MAP_DEVIATIONS, MetricsConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import FACETS, LOSSES, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices, check_positive_int
from clxai_utils.data.augment import denormalize
from clxai_utils.data.datasets import Dataset
from clxai_utils.data.prepare import load_prepared
from clxai_utils.data.sources import ImageSplit
from clxai_utils.evaluate.metrics import (
    zero_maps,
)
from clxai_utils.evaluate.protocol import protocol_record
from clxai_utils.evaluate.scoring import (
    FacetClock,
    ScoringSet,
    coherence_scores,
    coherence_source,
    score_model,
    scoring_set,
    sidecar_header,
)
from clxai_utils.explain.store import (
    ExplanationSet,
    explained_split,
    load_explanations,
    map_deviations,
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


def _check_map_protocol(stored: ExplanationSet, run: Run) -> None:
    """Stored maps must come from the protocol scored now (Eigen-CAM's sign rule, the probe's features)."""
    expected = [d for d in MAP_DEVIATIONS if d in run.settings.metrics.deviations]
    if map_deviations(stored.meta) != expected:
        raise ValueError(
            f"the stored {stored.method} maps were computed with protocol deviations {map_deviations(stored.meta)} and "
            f"this run scores with {expected}: rerun notebooks/05_explanations.ipynb with the same protocol"
        )


def _noise_space(params: MetricsConfig) -> str:
    clamped = "clamped_noise" in params.deviations
    return "normalised input, " + ("clamped to [0, 1] (the authors')" if clamped else "not clamped")


def _sidecar(
    run: Run,
    losses: list[str],
    methods: list[str],
    n_images: int,
    table: pd.DataFrame,
    throughput: pd.DataFrame,
    compute: Compute,
    split: ImageSplit,
    num_classes: int,
) -> dict[str, Any]:
    """The protocol, versions, column meanings, zero-map counts and throughput of one results table."""
    params = run.settings.metrics
    return {
        **sidecar_header(run, losses, methods, n_images, compute),
        **protocol_record(params, own_masks=split.masks is not None),
        "params": params.to_dict()
        | {
            "explain": vars(run.settings.explain),
            "noise_space": _noise_space(params),
            "contrast_class": "uniform over the other classes, keyed by (seed, image id)",
            "coherence": coherence_source(split, num_classes, params.deviations),
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
    _check_map_protocol(mosaic_maps, run)
    return mosaic_maps


def stored_maps(
    run: Run, loss: str, method: str, scoring: ScoringSet, precision: str
) -> tuple[ExplanationSet, ExplanationSet | None]:
    """The maps 05 stored for the scoring set's images and the maps coherence reads, checked against the run.

    They must cover the same images, come from `precision` (the facets compute maps of their
    own to compare with them) and from the protocol scored now.
    """
    maps = load_explanations(run, loss, method, "test")
    _check_same_images(maps, scoring.split.ids, "test")
    _check_precision(maps, precision)
    _check_map_protocol(maps, run)
    return maps, _stored_coherence_maps(run, loss, method, scoring, maps)


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
            _check_map_protocol(maps, run)
            scored = maps.predictions == maps.labels
            values = coherence_scores(maps, masked.masks, scored)
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
    compute: Compute | None = None,
) -> FacetResults:
    """06_metrics' work: every facet for every (loss, method) on the maps 05 stored; writes the tables.

    The noisy inputs are drawn once from `seed`, so every model and method is scored on
    the same perturbation. Coherence reads the test images' own masks (under
    `authors_coherence` read, mapped and scored as the authors did), else mosaics
    (`coherence_source`); with a mask set, its coherence goes to its own table
    (`masked_coherence`). `n_examples` images per (loss, method) are returned with their
    auxiliary maps for the notebook's figures. `compute` (None: `resolve_compute()`) is where
    and in what precision the model runs; its precision must be the one the stored maps were
    computed in: the other maps a facet needs are computed in it too.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    n_examples = check_positive_int("n_examples", n_examples)
    compute = compute_or_resolve(compute)
    paths = run.facets_paths
    remove_stale([*paths.values(), run.coherence_masks_path])
    data, _ = load_prepared(run)
    scoring = scoring_set(explained_split(data, run.settings.explain), data, run)
    split, inputs = scoring.split, scoring.inputs
    clock, blocks, examples = FacetClock(), [], {}
    bar = progress_bar(total=len(losses) * len(methods) * len(FACETS), desc="facets", disable=not progress)
    for loss in losses:
        model, _ = load_classifier(run, loss, normalize_features="unnormalised_head" not in inputs.params.deviations)
        for method in methods:
            maps, coherence_maps = stored_maps(run, loss, method, scoring, compute.precision)

            def step(facet: str, pair: str = f"{loss}/{method}") -> None:
                bar.set_description(f"{pair} {facet}")
                bar.update(facet != "faithfulness")  # counts the facet just finished

            base = {"dataset": run.dataset, "profile": run.profile, "seed": run.seed, "loss": loss, "method": method}
            with compute.inference(model) as fast:
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
    sidecar = _sidecar(run, losses, methods, len(split), table, throughput, compute, split, data.num_classes)
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
