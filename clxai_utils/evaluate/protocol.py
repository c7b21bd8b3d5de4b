"""The metrics' protocol: the corrected one (default) or the authors', each deviation its own switch.

The pipeline follows the paper and fixes the bugs of the authors' published evaluation
(docs/method.md, "Deviations from the authors' code"). To measure what each fix changes, every
deviation can be switched back on, alone or together: `MetricsConfig.protocol` is
"corrected" (none), "authors" (all of them) or a list of the names below.
The switches live where the computation happens (`evaluate.metrics`, `evaluate.scoring`,
`evaluate.authors_coherence`, `explain.cams`, `train.probe`); this module names and
describes them, records them for the results' sidecar and applies the one that acts on
summaries (`correct_only_average`).

`authors_coherence` reproduces the authors' only coherence, on ImageNet-S50's own masks.
Where coherence comes from 2x2 mosaics (CIFAR-10) the authors scored none, so there it
changes nothing, and the record says so (`not_applicable`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from clxai_utils.core.config import DEVIATIONS, MetricsConfig
from clxai_utils.core.registry import METRICS

#: What each deviation does, in plain words (the sidecar records these next to the names).
DEVIATION_DESCRIPTIONS: dict[str, str] = {
    "clamped_noise": "continuity: the noisy normalised image clamped to [0, 1], zeroing every negative value",
    "pf_true_label": "Pixel Flipping scores the true label's probability while flipping by the predicted class's map",
    "pf_min_baseline": "Pixel Flipping's 'black' is the minimum of the normalised image over all channels",
    "pf_channel_elements": "Pixel Flipping flips channel elements in quantus 0.6's order (C times as many steps)",
    "pf_no_first_point": "Pixel Flipping curve without the intact image; AUC = trapz(curve) / (steps - 1)",
    "zero_maps_unhandled": "continuity and contrastivity SSIM of all-zero maps kept as scored, not NaN",
    "eigencam_no_sign": "Eigen-CAM without the sign rule: the SVD's own sign, as pytorch-grad-cam's EigenCAM",
    "unnormalised_head": "SupCon/triplet probe applied to unnormalised features (it was trained on normalised ones)",
    "correct_only_average": "summaries average only the correctly classified images",
    "authors_coherence": (
        "coherence on the test images' own masks as the authors scored ImageNet-S50: masks resized bilinearly "
        "with red channel > 0 as object, ground-truth maps with pytorch-grad-cam's aug_smooth, quantus 0.6's "
        "Pointing Game and Attribution Localisation on every image (misclassified ones included)"
    ),
}

#: Why a deviation changes nothing on a data set whose test images carry no masks (coherence from mosaics).
MASKS_ONLY: dict[str, str] = {
    "authors_coherence": (
        "applies only to data sets whose test images carry masks; here coherence comes from 2x2 mosaics "
        "(or nowhere), which the authors did not score: the corrected coherence is kept"
    ),
}

#: Columns that identify one (model, method) block of the facets table.
GROUP_COLUMNS: tuple[str, ...] = ("dataset", "profile", "seed", "loss", "method")


def not_applicable(deviations: Iterable[str], own_masks: bool) -> dict[str, str]:
    """The deviations among `deviations` that change nothing on this data set, with the reason.

    `own_masks`: whether the test images carry their own object masks (else coherence comes
    from mosaics, or nowhere).
    """
    return {} if own_masks else {d: MASKS_ONLY[d] for d in DEVIATIONS if d in set(deviations) and d in MASKS_ONLY}


def protocol_record(params: MetricsConfig, own_masks: bool) -> dict[str, Any]:
    """The protocol as the results' sidecar records it: its name, the deviations on, and what they do.

    `protocol` is the setting as given (a list where names were listed); `deviations` the
    resolved names in their fixed order; `not_applicable` (only where some are) the
    deviations on that change nothing on this data set (`not_applicable`).
    """
    protocol = params.protocol if isinstance(params.protocol, str) else list(params.protocol)
    deviations = [d for d in DEVIATIONS if d in params.deviations]
    record: dict[str, Any] = {
        "protocol": protocol,
        "deviations": deviations,
        "deviations_described": {d: DEVIATION_DESCRIPTIONS[d] for d in deviations},
    }
    if skipped := not_applicable(deviations, own_masks):
        record["not_applicable"] = skipped
    return record


def correct_only_average(
    table: pd.DataFrame,
    deviations: Iterable[str] = ("correct_only_average",),
    columns: Sequence[str] | None = None,
    by: Sequence[str] = GROUP_COLUMNS,
) -> pd.DataFrame:
    """Mean of every metric column per (model, method) block, as the protocol's summary averages it.

    With `correct_only_average` among `deviations` (the authors' CIFAR summary), only the rows
    whose prediction is correct enter the mean; otherwise every row does (the corrected
    protocol: each facet already leaves out what it cannot score, e.g. coherence of
    misclassified images). NaNs are skipped. `n_images` counts the rows averaged.
    """
    columns = [c for c in (columns or METRICS) if c in table.columns]
    by = [c for c in by if c in table.columns]
    rows = table[table["correct"].astype(bool)] if "correct_only_average" in set(deviations) else table
    grouped = rows.groupby(by, sort=False)
    means = grouped[columns].mean()
    means.insert(0, "n_images", grouped.size())
    return means.reset_index()
