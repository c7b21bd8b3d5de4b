"""Diagnostics of the evaluation itself rather than of the losses: how much bf16 moves every facet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from clxai_utils.core.compute import Compute, compute_or_resolve, resolve_compute
from clxai_utils.core.registry import LOSSES, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choice, check_choices, check_positive_int
from clxai_utils.data.prepare import balanced_subset, load_prepared
from clxai_utils.evaluate.scoring import FacetClock, explain_and_score, scoring_set
from clxai_utils.explain.store import explained_split
from clxai_utils.train.probe import load_classifier


def precision_effect(
    run: Run, loss: str, n_images: int = 200, methods: Iterable[str] = METHODS, compute: Compute | None = None
) -> pd.DataFrame:
    """How much bf16 moves the facets of one model: every facet in float32 and in bf16, on the same images.

    A class-balanced subset of about `n_images` explained images (both precisions see the
    same ones) gets maps and every facet in both precisions, exactly as 05 and 06 compute them. One row per (method,
    metric): the float32 mean, the bf16 mean, the mean and largest absolute per-image
    difference; the `prediction` row gives the share of images whose predicted class is the same.
    Both run on the device of `compute` (None: `resolve_compute()`); its precision is not used.
    """
    check_choice("loss", loss, LOSSES)
    methods = check_choices("methods", methods, METHODS)
    n_images = check_positive_int("n_images", n_images)
    device = compute_or_resolve(compute).device
    computes = {"float32": Compute(device, "float32"), "bf16": resolve_compute(device, "bf16")}  # refused if emulated
    data, _ = load_prepared(run)
    full = explained_split(data, run.settings.explain)
    per_class = max(1, min(n_images // data.num_classes, min(full.class_counts(data.num_classes))))
    scoring = scoring_set(full.subset(balanced_subset(full.labels, per_class, seed=0)), data, run)
    model, _ = load_classifier(run, loss)
    tables = {}
    for precision, where in computes.items():
        with where.inference(model) as fast:
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
