"""The quick run's key numbers against a committed reference (`make pinned`, the last stage of `make test`).

`tests/reference/cifar10-quick-seed0.json` holds what `make run` produced on the 2-core CI
machine: the accuracy of each loss, the mean of every metric per (loss, method), and the
SHA-256 of each model's files. A fresh quick run (`outputs/runs/cifar10-quick-seed0/`,
written by `make run` or by stage 3 of `make test`) is compared with it in one of two ways:

* **Same weights** (every model digest equals the reference's). Training is bit-identical
  on one machine, so any difference in a number is a change of the code that computes it:
  accuracies must be equal and metric means agree to 1e-9. Perturbing one metric (say
  `GINI_OFFSET`) fails here.
* **Other weights** (another machine, or a changed trainer). Float results differ across
  machines and the differences grow through training, so a fresh run is like another
  seed. The tolerance of each number is 3 standard deviations of its seed means, measured
  over seeds 0-2 of the committed 3-seed quick sweep (commit ad0479d, README), with a floor
  of 0.5 accuracy points and 0.005 for a metric mean. The measured cross-machine
  differences (CE 65.9 vs 65.5 %, SupCon 51.8 vs 53.7 %, triplet 57.3 vs 57.55 %) lie
  within one seed standard deviation (0.5, 4.6, 2.9 points).

`python tests/test_pinned_numbers.py --update` rewrites the reference from the current run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from clxai_utils.core.artifacts import write_json
from clxai_utils.core.registry import METRICS
from clxai_utils.core.run import Run

pytestmark = pytest.mark.pinned
REFERENCE = Path(__file__).parent / "reference" / "cifar10-quick-seed0.json"
SAME_WEIGHTS_ATOL = 1e-9
SEED_SIGMAS = 3.0
ACCURACY_FLOOR = 0.005  # 0.5 points, as a fraction
METRIC_FLOOR = 0.005


def measured(run: Run) -> dict[str, Any]:
    """Accuracy per loss, metric means per (loss, method) and model digests of a finished run."""
    from clxai_utils.explain.store import model_digest  # loads grad-cam: only when a run is read

    if not run.facets_paths["table"].is_file():
        pytest.fail(f"no finished quick run in {run.root}: run `make run` (or stage 3 of `make test`) first")
    accuracy = pd.read_csv(run.accuracy_path).set_index("loss")["accuracy"]
    means = pd.read_csv(run.facets_paths["table"]).groupby(["loss", "method"])[list(METRICS)].mean()
    return {
        "run": run.id,
        "model_digests": {loss: model_digest(run, loss) for loss in accuracy.index},
        "accuracy": {loss: float(value) for loss, value in accuracy.items()},
        "metric_means": {
            f"{loss}/{method}/{metric}": None if math.isnan(value) else float(value)
            for (loss, method), row in means.iterrows()
            for metric, value in row.items()
        },
    }


def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    return measured(Run("cifar10", "quick", 0))


def same_weights(fresh: dict[str, Any], ref: dict[str, Any]) -> bool:
    return fresh["model_digests"] == ref["model_digests"]


def test_accuracy_per_loss(fresh: dict[str, Any]) -> None:
    ref = reference()
    assert fresh["accuracy"].keys() == ref["accuracy"].keys()
    for loss, expected in ref["accuracy"].items():
        if same_weights(fresh, ref):
            assert fresh["accuracy"][loss] == expected, f"{loss}: same weights, other accuracy"
        else:
            tol = max(SEED_SIGMAS * ref["seed_std"]["accuracy"][loss], ACCURACY_FLOOR)
            assert abs(fresh["accuracy"][loss] - expected) <= tol, (
                f"{loss}: accuracy {fresh['accuracy'][loss]:.4f}, reference {expected:.4f} ± {tol:.4f}"
            )


def test_metric_means_per_loss_and_method(fresh: dict[str, Any]) -> None:
    ref = reference()
    assert fresh["metric_means"].keys() == ref["metric_means"].keys()
    exact = same_weights(fresh, ref)
    wrong = []
    for key, expected in ref["metric_means"].items():
        got = fresh["metric_means"][key]
        if expected is None or got is None:
            if expected is not got:
                wrong.append(f"{key}: {got} (reference {expected})")
            continue
        tol = SAME_WEIGHTS_ATOL if exact else max(SEED_SIGMAS * ref["seed_std"]["metric_means"][key], METRIC_FLOOR)
        if abs(got - expected) > tol:
            wrong.append(f"{key}: {got:.6f}, reference {expected:.6f} ± {tol:.2g}")
    mode = "same weights as the reference" if exact else "other weights: tolerances from the seed spread"
    assert not wrong, f"{len(wrong)} metric mean(s) moved ({mode}):\n" + "\n".join(wrong)


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite the pinned reference from outputs/runs/cifar10-quick-seed0/.")
    parser.add_argument("--update", action="store_true", required=True)
    parser.parse_args()
    old = reference()
    write_json(REFERENCE, {**old, **measured(Run("cifar10", "quick", 0))})
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
