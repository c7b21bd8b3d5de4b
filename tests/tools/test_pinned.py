"""The pinned reference's tolerances (clxai_utils/tools/pinned.py), on the committed reference, without a run."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from clxai_utils.tools import pinned


@pytest.fixture
def ref() -> dict[str, Any]:
    return pinned.reference()


def other_weights(ref: dict[str, Any], **metric_means: float) -> dict[str, Any]:
    """The reference as another machine's run: other model digests, some metric means replaced."""
    fresh = copy.deepcopy(ref)
    fresh["model_digests"] = {loss: "0" * 64 for loss in ref["model_digests"]}
    fresh["metric_means"].update({key.replace("__", "/"): value for key, value in metric_means.items()})
    return fresh


def test_the_reference_records_its_seeds_host_and_precision(ref: dict[str, Any]) -> None:
    assert ref["seed_count"] == len(ref["seeds"]) >= 2
    assert ref["precision"] == "bf16" and "bf16" in ref["host"]
    assert ref["seed_std"]["accuracy"].keys() == ref["accuracy"].keys()
    assert ref["seed_std"]["metric_means"].keys() == ref["metric_means"].keys()


def test_the_band_is_a_prediction_interval_for_one_new_seed() -> None:
    """t(1 - alpha/2, n - 1) * sqrt(1 + 1/n): 31.60 * 1.155 for 3 seeds at 99.9 %, narrower with more seeds."""
    assert pinned.CONFIDENCE == 0.999
    assert pinned.seed_factor(3) == pytest.approx(31.599 * math.sqrt(4 / 3), rel=1e-4)
    assert pinned.seed_factor(10) == pytest.approx(4.781 * math.sqrt(1.1), rel=1e-3)
    assert pinned.seed_factor(3, confidence=0.95) == pytest.approx(4.303 * math.sqrt(4 / 3), rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        pinned.seed_factor(1)


def test_a_run_of_other_weights_within_the_seed_band_passes(ref: dict[str, Any]) -> None:
    """Numbers measured on a 2-core AMD EPYC with AVX-512 BF16 that a 3-sd band had put outside."""
    fresh = other_weights(ref, supcon__gradcam__pointing_game=0.871, triplet__gradcam__attribution_localisation=0.627)
    assert pinned.differences(fresh, ref) == []
    assert pinned.differences(other_weights(ref), ref) == []


def test_a_run_of_other_weights_outside_the_band_or_the_floor_fails(ref: dict[str, Any]) -> None:
    key = "ce/gradcam/pointing_game"
    tol = pinned.tolerance(ref, "metric_means", key, exact=False)
    assert tol == pytest.approx(pinned.seed_factor(ref["seed_count"]) * ref["seed_std"]["metric_means"][key])
    moved = other_weights(ref, ce__gradcam__pointing_game=ref["metric_means"][key] + 1.01 * tol)
    assert [line.split(":")[0] for line in pinned.differences(moved, ref)] == [f"metric_means {key}"]
    no_spread = "ce/gradcam/continuity_ssim"  # seeds that agree exactly: the floor applies
    agreeing = copy.deepcopy(ref)
    agreeing["seed_std"]["metric_means"][no_spread] = 0.0
    assert pinned.tolerance(agreeing, "metric_means", no_spread, exact=False) == pinned.METRIC_FLOOR
    assert pinned.tolerance(ref, "accuracy", "ce", exact=False) >= pinned.ACCURACY_FLOOR


def test_with_the_reference_weights_any_change_of_a_number_is_caught(ref: dict[str, Any]) -> None:
    """Same weights: a planted change far inside the seed band (a Gini mean moved by 1e-6) still fails."""
    fresh = copy.deepcopy(ref)
    fresh["metric_means"]["ce/gradcam/sparseness_gini"] += 1e-6
    assert pinned.same_weights(fresh, ref)
    assert [line.split(":")[0] for line in pinned.differences(fresh, ref)] == [
        "metric_means ce/gradcam/sparseness_gini"
    ]
    fresh = copy.deepcopy(ref)
    fresh["accuracy"]["ce"] += 0.0025  # a quarter of a point
    assert len(pinned.differences(fresh, ref)) == 1
