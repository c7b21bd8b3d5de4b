"""Coherence measured two ways on CIFAR-10, compared: 2x2 mosaics of test images, and real photographs with masks.

CIFAR-10 has no object masks, so 06 builds them (the quadrant of a test image in a mosaic of
four classes). Real photographs with object masks in CIFAR-10's classes (`mask_source`,
realmask32) test the same property on real objects and backgrounds. Each loss pair is
compared on both with the same paired tests (`stats.compare_losses`, one Holm family per
kind of mask) and the same seed policy (`claims.decided_winner`); `agreement` says, per
method, metric and pair of losses, whether the two kinds of masks reach the same decision.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clxai_utils.analysis.claims import decided_winner
from clxai_utils.analysis.stats import compare_losses

COHERENCE_METRICS = ("pointing_game", "attribution_localisation")
_KEYS = ["dataset", "profile", "method", "metric", "a", "b"]


def photo_comparisons(coherence_masks: pd.DataFrame) -> pd.DataFrame:
    """Loss pairs compared on the photographs' coherence (paired by seed and photograph id, Holm over the table)."""
    return compare_losses(coherence_masks, metrics=COHERENCE_METRICS)


def _decision(row: pd.Series, suffix: str, alpha: float) -> str:
    p = row[f"p_holm{suffix}"]
    if np.isnan(p):
        return "untestable"
    decided = decided_winner(p, row[f"winner{suffix}"], alpha, row[f"seed_p_t{suffix}"], row[f"seed_winner{suffix}"])
    return {"": "no significant difference", "disagree": "images and seeds disagree"}.get(decided, f"{decided} better")


def agreement(mosaic_tests: pd.DataFrame, photo_tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (dataset, profile, method, coherence metric, loss pair): the decision on mosaics, on photographs, and
    whether they agree (the same significant winner, or no significant difference on both)."""
    columns = [*_KEYS, "n", "r", "p_holm", "winner", "seed_p_t", "seed_winner"]
    mosaics = mosaic_tests[mosaic_tests["metric"].isin(COHERENCE_METRICS)][columns]
    merged = mosaics.merge(photo_tests[columns], on=_KEYS, suffixes=("_mosaics", "_photos"))
    merged["mosaics"] = [_decision(row, "_mosaics", alpha) for _, row in merged.iterrows()]
    merged["photographs"] = [_decision(row, "_photos", alpha) for _, row in merged.iterrows()]
    testable = ~merged[["mosaics", "photographs"]].isin(["untestable"]).any(axis=1)
    merged["agree"] = np.where(
        testable, np.where(merged["mosaics"] == merged["photographs"], "yes", "no"), "untestable"
    )
    keep = [*_KEYS, "n_mosaics", "r_mosaics", "p_holm_mosaics", "mosaics", "n_photos", "r_photos", "p_holm_photos"]
    return merged[[*keep, "photographs", "agree"]]


def summary(facets: pd.DataFrame, coherence_masks: pd.DataFrame) -> pd.DataFrame:
    """Mean coherence per (dataset, profile, method, loss) on the mosaics (or the test images' own masks) and on the
    photographs, over the images scored (those classified correctly), with how many were scored."""
    keys = ["dataset", "profile", "method", "loss"]

    def means(table: pd.DataFrame, what: str) -> pd.DataFrame:
        scored = table[table["pointing_game"].notna() | table["attribution_localisation"].notna()]
        grouped = scored.groupby(keys)
        out = grouped[list(COHERENCE_METRICS)].mean().add_suffix(f" ({what})")
        return out.join(grouped.size().rename(f"scored ({what})"))

    photographs = means(coherence_masks, "photographs")
    return means(facets, "mosaics").join(photographs, how="inner").reset_index()
