"""The losses compared at matched accuracy: the accuracy confound of Table 4, measured (09, from 07's tables).

The final models of the three losses differ in accuracy, and a more accurate model may
simply explain differently. 07_accuracy_confound scores every kept snapshot of every loss;
here, per run and pair of losses (a, b), one snapshot of each is chosen at three levels:

- ``final``: both final models (Table 4's comparison, on the snapshot images);
- ``matched``: the less accurate loss's final model against the other loss's snapshot whose
  accuracy is closest to it (e.g. CE at the epoch where it was as accurate as SupCon ends);
- ``common``: both at their snapshot closest to a common level, the middle of the accuracy
  range both losses pass through.

Each level's pairs are tested exactly like Table 4's (`stats.compare_losses`, paired on
seed and image id, Holm over every row) and each paper claim gets a verdict per level
(`claims.claims`, `claims.SEED_POLICY`). A claim *survives* at matched accuracy when it is
supported for the final models and still supported at the matched level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from clxai_utils.analysis import claims as claims_module
from clxai_utils.analysis.stats import LOSS_PAIRS, compare_losses
from clxai_utils.analysis.tables import sort_runs

LEVELS: dict[str, str] = {
    "final": "both final models",
    "matched": "the less accurate loss's final model vs the other's snapshot closest to its accuracy",
    "common": "each loss's snapshot closest to the middle of the accuracy range both pass through",
}
RUN_COLUMNS = ("dataset", "profile", "seed")


def closest_epoch(history: pd.DataFrame, target: float) -> pd.Series:
    """The row of `history` (columns epoch, accuracy) whose accuracy is closest to `target`.

    Ties go to the later epoch, the more trained model.
    """
    if history.empty:
        raise ValueError("history holds no snapshot to choose from")
    distance = (history["accuracy"] - target).abs()
    best = history[np.isclose(distance, distance.min(), rtol=0, atol=1e-12)]
    return best.sort_values("epoch").iloc[-1]


def _choice(level: str, a: str, b: str, row_a: pd.Series, row_b: pd.Series, target: float) -> dict[str, Any]:
    return {
        "level": level,
        "pair": f"{a}-{b}",
        "a": a,
        "b": b,
        "target": target,
        "epoch_a": int(row_a["epoch"]),
        "accuracy_a": float(row_a["accuracy"]),
        "final_a": bool(row_a["final"]),
        "epoch_b": int(row_b["epoch"]),
        "accuracy_b": float(row_b["accuracy"]),
        "final_b": bool(row_b["final"]),
    }


def _levels(a: str, b: str, hist_a: pd.DataFrame, hist_b: pd.DataFrame) -> list[dict[str, Any]]:
    """The snapshot of a and of b chosen at each level of `LEVELS` for one run."""
    final_a, final_b = hist_a[hist_a["final"]].iloc[0], hist_b[hist_b["final"]].iloc[0]
    rows = [_choice("final", a, b, final_a, final_b, np.nan)]
    if final_a["accuracy"] <= final_b["accuracy"]:
        target = float(final_a["accuracy"])
        rows.append(_choice("matched", a, b, final_a, closest_epoch(hist_b, target), target))
    else:
        target = float(final_b["accuracy"])
        rows.append(_choice("matched", a, b, closest_epoch(hist_a, target), final_b, target))
    low = max(hist_a["accuracy"].min(), hist_b["accuracy"].min())
    high = min(hist_a["accuracy"].max(), hist_b["accuracy"].max())
    if low <= high:
        target = float((low + high) / 2)
        rows.append(_choice("common", a, b, closest_epoch(hist_a, target), closest_epoch(hist_b, target), target))
    return rows


def select_snapshots(accuracy: pd.DataFrame, pairs: Sequence[tuple[str, str]] = LOSS_PAIRS) -> pd.DataFrame:
    """Per run and pair of losses present, the snapshots compared at each level (see the module docstring).

    `accuracy` has one row per (dataset, profile, seed, loss, epoch) with `accuracy` and
    `final` (07's `snapshot_accuracy.csv`). A run without any accuracy overlap between two
    losses has no ``common`` level for them.
    """
    rows = []
    for run, table in accuracy.groupby(list(RUN_COLUMNS), sort=True):
        present = set(table["loss"])
        for a, b in pairs:
            if {a, b} <= present:
                hist = {loss: table[table["loss"] == loss] for loss in (a, b)}
                rows += [dict(zip(RUN_COLUMNS, run)) | row for row in _levels(a, b, hist[a], hist[b])]
    columns = [*RUN_COLUMNS, "level", "pair", "a", "b", "target", "epoch_a", "accuracy_a", "final_a"]
    columns += ["epoch_b", "accuracy_b", "final_b"]
    return pd.DataFrame(rows, columns=columns)


def selected_rows(snapshots: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The per-image snapshot rows of every selection, labelled with its level and pair (a facets-like table)."""
    keys = [*RUN_COLUMNS, "loss", "epoch"]
    parts = []
    for side in ("a", "b"):
        chosen = selection[[*RUN_COLUMNS, "level", "pair", side, f"epoch_{side}"]]
        chosen = chosen.rename(columns={side: "loss", f"epoch_{side}": "epoch"})
        parts.append(snapshots.merge(chosen, on=keys, how="inner"))
    return pd.concat(parts, ignore_index=True)


def compare_at_levels(snapshots: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Paired loss comparisons at every level, one Holm family over all of them (`stats.compare_losses`)."""
    within = ("dataset", "profile", "method", "level", "pair")
    return compare_losses(selected_rows(snapshots, selection), within=within)


def level_claims(comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's loss claims (`claims.LOSS_CLAIMS` and the triplet majority claim) decided at every level."""
    parts = []
    for level, group in comparisons.groupby("level", sort=False):
        empty_methods = group.iloc[0:0]
        verdicts = claims_module.claims(group, empty_methods, alpha)
        parts.append(verdicts.assign(level=level))
    if not parts:  # nothing compared (one loss swept): no claim decided at any level
        return pd.DataFrame(columns=[*claims_module.CLAIM_COLUMNS, "level"])
    return pd.concat(parts, ignore_index=True)


def survival(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per claim, data set, profile, method and metric: its verdict per level, and whether it survives.

    `survives` reads "yes" when the claim is supported for the final models and at matched
    accuracy, "no" when supported for the final models only, and "not supported for the final
    models" otherwise.
    """
    keys = ["claim", "dataset", "profile", "method", "metric"]
    if verdicts.empty:  # one loss swept: no claim to follow across levels
        return pd.DataFrame(columns=[*keys, *LEVELS, "survives"])
    wide = verdicts.pivot_table(index=keys, columns="level", values="verdict", aggfunc="first").reset_index()
    for level in LEVELS:
        if level not in wide:
            wide[level] = "not measured"
    wide = wide[[*keys, *LEVELS]].fillna("not measured")
    supported_final = wide["final"] == "supported"
    wide["survives"] = np.where(
        supported_final, np.where(wide["matched"] == "supported", "yes", "no"), "not supported for the final models"
    )
    return sort_runs(wide.rename_axis(columns=None))
