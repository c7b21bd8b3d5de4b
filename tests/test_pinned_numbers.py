"""The quick run's key numbers against tests/reference/ (`make pinned`, a stage of `make reproduce`).

A fresh quick run (`outputs/runs/cifar10-quick-seed0/`, written by `make run`) is compared with the committed
reference: exactly where it has the reference's weights, else within the prediction interval of one new seed
(clxai_utils/tools/pinned.py says how the tolerances are derived; tests/tools/test_pinned.py tests them without
a run). `python -m clxai_utils.tools.pinned --update` rewrites the reference.
"""

from __future__ import annotations

from typing import Any

import pytest

from clxai_utils.core.run import Run
from clxai_utils.tools import pinned

pytestmark = pytest.mark.pinned


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    try:
        return pinned.measured(Run("cifar10", "quick", 0))
    except FileNotFoundError as missing:
        pytest.fail(str(missing))


def test_accuracy_and_metric_means_match_the_reference(fresh: dict[str, Any]) -> None:
    ref = pinned.reference()
    if pinned.same_weights(fresh, ref):
        mode = "same weights as the reference"
    else:
        mode = (
            f"other weights: tolerances from the spread of {ref['seed_count']} seeds; this run computed in "
            f"{fresh['precision']}, the reference in {ref['precision']} on a {ref['host']}"
        )
    wrong = pinned.differences(fresh, ref)
    assert not wrong, f"{len(wrong)} number(s) moved ({mode}):\n" + "\n".join(wrong)


def test_a_changed_metric_is_caught(fresh: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is sharp enough to see a change of one metric: the Gini offset 1e-7 raised to 1e-4."""
    from clxai_utils.evaluate import metrics
    from clxai_utils.explain.store import load_explanations

    if not pinned.same_weights(fresh, pinned.reference()):
        pytest.skip("other weights than the reference's: the seed-spread tolerances cannot resolve a one-metric change")
    run = Run("cifar10", "quick", 0)
    maps = load_explanations(run, "ce", "gradcam").maps.float()
    assert metrics.sparseness_gini(maps).nanmean().item() == pytest.approx(
        fresh["metric_means"]["ce/gradcam/sparseness_gini"]
    )
    monkeypatch.setattr(metrics, "GINI_OFFSET", 1e-4)
    changed = metrics.sparseness_gini(maps).nanmean().item()
    perturbed = {**fresh, "metric_means": {**fresh["metric_means"], "ce/gradcam/sparseness_gini": changed}}
    wrong = pinned.differences(perturbed, pinned.reference())
    assert any("ce/gradcam/sparseness_gini" in line for line in wrong), (
        f"a Gini offset of 1e-4 moves the mean by {changed - fresh['metric_means']['ce/gradcam/sparseness_gini']:.2g}, "
        "which the comparison does not catch"
    )
