"""Facets as a function of accuracy (07_accuracy_confound): every kept snapshot scored like the final models.

Why: the losses' final models differ in accuracy, so Table 4 asks "which loss" and "how
accurate" at once. Every loss keeps its weights every `snapshot_every` epochs during
training; here each snapshot (SupCon and triplet ones with a linear probe of their own,
fitted exactly as 04 fits the final probe) gets its test accuracy, its Grad-CAM and
Eigen-CAM maps and every facet, on a class-balanced subset of the explained images with
the same noise, contrast classes and mosaics as 06. The last epoch is the final model
(with 04's probe). `clxai_utils.analysis.confound` then compares losses at matched accuracy.

Each snapshot's rows are written as one block (CSV + JSON of what it was computed from)
as soon as they are done, so an interrupted run resumes with the next snapshot; the run's
tables are written at the end, the per-image table last.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from clxai_utils.core.artifacts import read_json, remove_stale, write_csv, write_json
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import LOSSES, METHODS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices
from clxai_utils.data.datasets import Dataset
from clxai_utils.data.prepare import balanced_subset, load_prepared
from clxai_utils.data.sources import ImageSplit
from clxai_utils.evaluate.scoring import FacetClock, ScoringSet, explain_and_score, scoring_set
from clxai_utils.explain.store import explained_split, model_digest
from clxai_utils.train.checkpoints import trained_epochs
from clxai_utils.train.probe import accuracy, fit_probe, load_classifier

SNAPSHOT_COLUMNS: dict[str, str] = {
    "epoch": "training epoch after which the weights were kept",
    "final": "the snapshot is the final model (the one 05 and 06 explain)",
    "accuracy": "test accuracy of the snapshot (on the same test images as 04)",
}


@dataclass
class SnapshotResults:
    """What `evaluate_snapshots` returns (and wrote): per-image rows, accuracies, timing."""

    table: pd.DataFrame
    accuracy: pd.DataFrame
    sidecar: dict[str, Any]


def snapshot_split(run: Run, explained: ImageSplit) -> ImageSplit:
    """The images every snapshot is scored on: a class-balanced subset of the explained images."""
    per_class = run.settings.confound.images_per_class
    return explained.subset(balanced_subset(explained.labels, per_class, seed=0))


def _ids_digest(split: ImageSplit) -> str:
    return hashlib.sha256(split.ids.numpy().tobytes()).hexdigest()


def _block_source(
    run: Run, loss: str, epoch: int | None, split: ImageSplit, compute: Compute, accuracy_split: ImageSplit
) -> dict[str, Any]:
    """What a block is computed from (weights and probe, images scored, images its accuracy counts, protocol);
    it is reused only while all match."""
    return {
        "loss": loss,
        "model_digest": model_digest(run, loss, epoch),
        "image_ids_digest": _ids_digest(split),
        "accuracy_ids_digest": _ids_digest(accuracy_split),
        **compute.to_dict(),
        "metrics": run.settings.metrics.to_dict(),
    }


def _stored_block(run: Run, loss: str, epoch: int, source: dict[str, Any]) -> pd.DataFrame | None:
    path = run.snapshot_block_path(loss, epoch)
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file() and {"device": "cpu"} | read_json(sidecar) == source:  # older: CPU
        return pd.read_csv(path)
    return None


def _score_snapshot(
    run: Run,
    loss: str,
    epoch: int,
    final: bool,
    methods: list[str],
    data: Dataset,
    scoring: ScoringSet,
    compute: Compute,
    clock: FacetClock,
) -> pd.DataFrame:
    """Fit the snapshot's probe (SupCon/TL, not the final model: 04 did), then its accuracy and every facet."""
    which = None if final else epoch
    if loss != "ce" and not final:
        fit_probe(
            run.model_dir(loss),
            data.train,
            data.info,
            run.settings.probe,
            run.seed,
            progress=False,
            profile=run.profile,
            compute=compute,
            epoch=epoch,
            workers=run.settings.data.workers,
        )
    model, _ = load_classifier(run, loss, which)
    acc, _ = accuracy(model, data.accuracy_split, data.info, compute)
    base = {"dataset": run.dataset, "profile": run.profile, "seed": run.seed, "loss": loss}
    base |= {"epoch": epoch, "final": final, "accuracy": acc}
    with compute.inference(model) as fast:
        blocks = [
            explain_and_score(
                fast, scoring, method, base | {"method": method}, clock, run.settings.explain.batch_size
            ).rows
            for method in methods
        ]
    return pd.concat(blocks, ignore_index=True)


def evaluate_snapshots(
    run: Run,
    losses: Iterable[str] = LOSSES,
    methods: Iterable[str] = METHODS,
    progress: bool = True,
    compute: Compute | None = None,
) -> SnapshotResults:
    """07's work: accuracy and every facet of every kept snapshot of every loss; writes the run's snapshot tables.

    A block whose weights, images and protocol still match is read back instead of
    recomputed. `compute` (None: `resolve_compute()`) is where and in what precision they are computed.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    compute = compute_or_resolve(compute)
    paths = run.snapshot_paths
    remove_stale(paths.values())
    data, _ = load_prepared(run)
    split = snapshot_split(run, explained_split(data, run.settings.explain))
    scoring = scoring_set(split, data, run)
    epochs = {loss: trained_epochs(run.model_dir(loss)) for loss in losses}
    if missing := [loss for loss, kept in epochs.items() if not kept]:
        raise FileNotFoundError(
            f"no trained model for loss(es) {missing} in run {run.id}: run their training notebooks"
        )
    clock, blocks, reused, start = FacetClock(), [], 0, time.perf_counter()
    bar = progress_bar(total=sum(map(len, epochs.values())), desc="snapshots", disable=not progress, unit="snapshot")
    for loss, kept in epochs.items():
        for epoch in kept:
            final = epoch == kept[-1]
            bar.set_description(f"{loss} epoch {epoch}")
            source = _block_source(run, loss, None if final else epoch, split, compute, data.accuracy_split)
            block = _stored_block(run, loss, epoch, source)
            if block is None:
                block = _score_snapshot(run, loss, epoch, final, methods, data, scoring, compute, clock)
                source = _block_source(
                    run, loss, None if final else epoch, split, compute, data.accuracy_split
                )  # with the fitted probe
                write_csv(run.snapshot_block_path(loss, epoch), block)
                write_json(run.snapshot_block_path(loss, epoch).with_suffix(".json"), source)  # last: block complete
            else:
                reused += 1
            blocks.append(block)
            bar.update(1)
    bar.close()
    table = pd.concat(blocks, ignore_index=True)
    keys = ["dataset", "profile", "seed", "loss", "epoch", "final", "accuracy"]
    accuracies = table[keys].drop_duplicates().reset_index(drop=True)
    sidecar = {
        "run": run.id,
        "losses": losses,
        "methods": methods,
        "n_images": len(split),
        **compute.to_dict(),
        "epochs": {loss: kept for loss, kept in epochs.items()},
        "snapshots_reused": reused,
        "seconds": round(time.perf_counter() - start, 1),
        "throughput": {row.facet: row.images_per_s for row in clock.table().itertuples()},
        "columns": SNAPSHOT_COLUMNS,
    }
    write_json(paths["sidecar"], sidecar)
    write_csv(paths["accuracy"], accuracies)
    write_csv(paths["table"], table)  # last: its presence means the other two are complete
    return SnapshotResults(table, accuracies, sidecar)
