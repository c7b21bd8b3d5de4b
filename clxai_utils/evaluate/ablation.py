"""Stage 08_protocol: the run's models scored under the corrected protocol, the authors', and each deviation alone.

Which of the paper's claims are about the losses, and which about the authors' evaluation
code? To answer it, the same images are scored with the same maps under every protocol of
`ABLATION_PROTOCOLS`: "corrected" (06_metrics' rows for these images, read back, not
recomputed), "authors" (every implemented deviation on), and each deviation alone.

A deviation recomputes only what it changes (`rescored_facets`); every other column is the
corrected row's, so a difference between protocols is the deviation's and nothing else's.
Two deviations change the maps themselves: `eigencam_no_sign` (Eigen-CAM's maps) and
`unnormalised_head` (the SupCon and triplet classifiers, hence their predictions and maps);
where they apply, every facet is recomputed from maps computed here, exactly as 05 computes
them, and coherence reads the same mosaics as 06. `authors_coherence` recomputes coherence
with maps of its own (`evaluate.authors_coherence`) where the test images carry masks
(ImageNet-S50); on mosaics (CIFAR-10) it changes nothing and the sidecar says so
(`not_applicable`). `correct_only_average` changes no score: it decides which rows a
summary averages (`analysis.ablation` applies it).

The table is written only when every protocol is scored; the sidecar first, the table last.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from clxai_utils.core.artifacts import read_json, remove_stale, write_csv, write_json
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.config import ABLATION_PROTOCOLS, protocol_deviations
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import FACETS, LOSSES, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices
from clxai_utils.data.datasets import DatasetInfo, authors_test_masks
from clxai_utils.data.prepare import balanced_subset, load_prepared
from clxai_utils.evaluate.facets import stored_maps
from clxai_utils.evaluate.protocol import DEVIATION_DESCRIPTIONS, not_applicable
from clxai_utils.evaluate.scoring import (
    FacetClock,
    ScoredBlock,
    ScoringSet,
    explain_and_score,
    facet_inputs,
    score_model,
    scoring_set,
    sidecar_header,
    subset_scoring,
)
from clxai_utils.explain.store import explained_split
from clxai_utils.train.probe import load_classifier

#: The facets each deviation changes while the maps stay the same (map deviations: see `maps_change`).
DEVIATION_FACETS: dict[str, tuple[str, ...]] = {
    "clamped_noise": ("continuity",),
    "pf_true_label": ("faithfulness",),
    "pf_min_baseline": ("faithfulness",),
    "pf_channel_elements": ("faithfulness",),
    "pf_no_first_point": ("faithfulness",),
    "zero_maps_unhandled": ("continuity", "contrastivity"),
    "eigencam_no_sign": (),
    "unnormalised_head": (),
    "correct_only_average": (),
    "authors_coherence": ("coherence",),
}


def maps_change(deviations: Iterable[str], loss: str, method: str) -> bool:
    """Whether the deviations change the maps of (loss, method): Eigen-CAM's sign rule, or the probe's features."""
    deviations = set(deviations)
    return ("eigencam_no_sign" in deviations and method == "eigencam") or (
        "unnormalised_head" in deviations and loss != "ce"  # CE keeps its own head
    )


def rescored_facets(deviations: Iterable[str], loss: str, method: str, own_masks: bool = True) -> tuple[str, ...]:
    """The facets to recompute for (loss, method) under `deviations`: all where the maps change.

    `own_masks`: whether the test images carry masks; without them (coherence on mosaics), a
    deviation that applies only to such data sets (`protocol.not_applicable`) recomputes
    nothing. The default, True, names every facet a deviation can change.
    """
    deviations = tuple(deviations)
    if maps_change(deviations, loss, method):
        return FACETS
    skipped = not_applicable(deviations, own_masks)
    touched = {facet for d in deviations if d not in skipped for facet in DEVIATION_FACETS[d]}
    return tuple(f for f in FACETS if f in touched)


def ablation_index(labels: Tensor, images_per_class: int | None) -> Tensor:
    """Positions of the explained images the ablation scores: class-balanced, the same for every seed and loss."""
    return torch.as_tensor(balanced_subset(labels, images_per_class, seed=0))


@dataclass
class AblationResults:
    """What `run_ablation` returns (and wrote): the per-image table with a `protocol` column, and the sidecar."""

    table: pd.DataFrame
    sidecar: dict[str, Any]


def _corrected_rows(run: Run, losses: list[str], methods: list[str], ids: Tensor) -> pd.DataFrame:
    """06's rows for the ablation's images: the corrected protocol's scores, read back rather than recomputed."""
    path, sidecar_path = run.facets_paths["table"], run.facets_paths["sidecar"]
    if not path.is_file():
        raise FileNotFoundError(f"no metrics table at {path}: run notebooks/06_metrics.ipynb for run {run.id} first")
    if read_json(sidecar_path).get("deviations"):
        raise ValueError(
            f"{path} was scored under protocol {run.settings.metrics.protocol!r}; the ablation starts from the "
            "corrected one: set metrics.protocol to corrected and rerun notebooks/05 and 06"
        )
    table = pd.read_csv(path)
    rows = table[table["loss"].isin(losses) & table["method"].isin(methods) & table["image_id"].isin(ids.tolist())]
    missing = {(loss, method) for loss in losses for method in methods} - set(
        rows[["loss", "method"]].itertuples(index=False, name=None)
    )
    if missing:
        raise ValueError(f"{path} lacks (loss, method) {sorted(missing)}: rerun notebooks/06_metrics.ipynb")
    return rows.reset_index(drop=True)


def _with_corrected(block: ScoredBlock, corrected: pd.DataFrame, facets: tuple[str, ...]) -> pd.DataFrame:
    """The block's rows, with the corrected scores in every column of a facet that was not recomputed."""
    rows = block.rows.reset_index(drop=True)
    if not rows["image_id"].equals(corrected["image_id"].reset_index(drop=True)):
        raise AssertionError("the ablation's rows and 06's rows are not the same images in the same order")
    for name, metric in METRICS.items():
        if metric.facet not in facets:
            rows[name] = corrected[name].to_numpy()
    return rows


def _score_protocol(
    run: Run,
    protocol: str,
    full: ScoringSet,
    index: Tensor,
    corrected: pd.DataFrame,
    compute: Compute,
    clock: FacetClock,
    info: DatasetInfo,
    authors_masks: Tensor | None,
) -> list[pd.DataFrame]:
    """Every (loss, method) block of one protocol: recomputed where the deviation acts, else the corrected rows.

    `authors_masks`: the explained images' own masks read the authors' way (None without masks).
    """
    deviations = protocol_deviations(protocol)
    params = replace(run.settings.metrics, protocol=tuple(deviations) or "corrected")
    inputs = facet_inputs(full.inputs.x, full.inputs.masks, info, run, params, authors_masks)
    scoring = subset_scoring(replace(full, inputs=inputs), index)
    blocks = []
    for loss in corrected["loss"].unique():
        model, _ = load_classifier(run, loss, normalize_features="unnormalised_head" not in deviations)
        with compute.inference(model) as fast:
            for method in corrected["method"].unique():
                reference = corrected[(corrected["loss"] == loss) & (corrected["method"] == method)]
                facets = rescored_facets(deviations, loss, method, own_masks=full.split.masks is not None)
                base = {
                    "dataset": run.dataset,
                    "profile": run.profile,
                    "seed": run.seed,
                    "loss": loss,
                    "method": method,
                }
                if not facets:
                    blocks.append(reference.reset_index(drop=True))
                elif maps_change(deviations, loss, method):
                    batch = run.settings.explain.batch_size
                    blocks.append(explain_and_score(fast, scoring, method, base, clock, batch).rows)
                else:
                    maps, coherence_maps = stored_maps(run, loss, method, full, compute.precision)
                    picked = None if coherence_maps is None else coherence_maps.select(index)
                    block = score_model(fast, maps.select(index), picked, scoring.inputs, base, clock, facets=facets)
                    blocks.append(_with_corrected(block, reference.reset_index(drop=True), facets))
    return [b.assign(protocol=protocol) for b in blocks]


def run_ablation(
    run: Run,
    losses: Iterable[str] = LOSSES,
    methods: Iterable[str] = METHODS,
    protocols: Iterable[str] = ABLATION_PROTOCOLS,
    progress: bool = True,
    compute: Compute | None = None,
) -> AblationResults:
    """08_protocol's work: the ablation's images scored under every protocol in `protocols`; writes the table.

    "corrected" is always included (the reference every other protocol is read against) and
    comes from 06's table, which must have been scored under it. The images are
    `ablation.images_per_class` per class of the explained images (`ablation_index`).
    `compute` must have the precision the stored maps were computed in (as for 06).
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    chosen = check_choices("protocols", protocols, ABLATION_PROTOCOLS)
    chosen = ["corrected", *(p for p in chosen if p != "corrected")]
    compute = compute_or_resolve(compute)
    paths = run.ablation_paths
    remove_stale(paths.values())
    data, _ = load_prepared(run)
    full = scoring_set(explained_split(data, run.settings.explain), data, run)
    index = ablation_index(full.split.labels, run.settings.ablation.images_per_class)
    corrected = _corrected_rows(run, losses, methods, full.split.ids[index])
    own_masks = full.split.masks is not None
    wanted = own_masks and any("authors_coherence" in protocol_deviations(p) for p in chosen)
    authors_masks = authors_test_masks(data, full.split.ids) if wanted else None
    clock, blocks, seconds = FacetClock(), [corrected.assign(protocol="corrected")], {"corrected": 0.0}
    for protocol in progress_bar(chosen[1:], desc="protocols", disable=not progress):
        start = time.perf_counter()
        blocks += _score_protocol(run, protocol, full, index, corrected, compute, clock, data.info, authors_masks)
        seconds[protocol] = round(time.perf_counter() - start, 2)
    table = pd.concat(blocks, ignore_index=True)
    sidecar = _sidecar(run, chosen, len(index), seconds, compute, losses, methods, own_masks)
    write_json(paths["sidecar"], sidecar)
    write_csv(paths["table"], table)  # last: its presence means the sidecar is complete
    return AblationResults(table, sidecar)


def _sidecar(
    run: Run,
    protocols: list[str],
    n_images: int,
    seconds: dict[str, float],
    compute: Compute,
    losses: list[str],
    methods: list[str],
    own_masks: bool,
) -> dict[str, Any]:
    """What the ablation scored, under which protocols, what each recomputed (and why not), and how long it took."""
    return {
        **sidecar_header(run, losses, methods, n_images, compute),
        "images_per_class": run.settings.ablation.images_per_class,
        "protocols": {
            p: {
                "deviations": list(protocol_deviations(p)),
                "described": {d: DEVIATION_DESCRIPTIONS[d] for d in protocol_deviations(p)},
                "not_applicable": not_applicable(protocol_deviations(p), own_masks),
                "recomputed": {
                    f"{loss}/{method}": list(rescored_facets(protocol_deviations(p), loss, method, own_masks))
                    for loss in losses
                    for method in methods
                },
                "seconds": seconds[p],
            }
            for p in protocols
        },
        "corrected_from": "06_metrics' table (results/facets.csv), the same images' rows",
    }
