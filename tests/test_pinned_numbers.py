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
  seed. The tolerance of each number is 3 standard deviations of its per-seed values over
  seeds 0-2 of the quick sweep that wrote the reference (`seed_std`), with floors of 2
  accuracy points and 0.005 for a metric mean. The accuracy floor is the largest
  difference measured between two machines on one commit: the earlier quick CE model
  reached 63.55 % on the machine that wrote its reference and 65.5 % in CI (its seeds
  spread by only 0.5 points, so 3 seed deviations did not cover it).

`python tests/test_pinned_numbers.py --update` rewrites the reference from the current run, and its
`seed_std` from the runs of seeds 0-2 (`--seeds`).

The reference also records the run's precision. Where this CPU resolves `auto` to another one
(bf16 reference, a CPU without native bf16), re-executing the committed notebooks retrains in
float32 at a third of the speed, about an hour on 2 cores, and yields another run's numbers:
`--can-reproduce` says so and exits 1, and make then skips stages 5 and 6 (`COMMITTED=1` runs them).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from clxai_utils.core.artifacts import write_json
from clxai_utils.core.precision import resolve_precision
from clxai_utils.core.registry import METRICS
from clxai_utils.core.run import Run

pytestmark = pytest.mark.pinned
REFERENCE = Path(__file__).parent / "reference" / "cifar10-quick-seed0.json"
SAME_WEIGHTS_ATOL = 1e-9
SEED_SIGMAS = 3.0
ACCURACY_FLOOR = 0.02  # 2 points, as a fraction: the largest cross-machine difference measured (docstring)
METRIC_FLOOR = 0.005


def measured(run: Run) -> dict[str, Any]:
    """Accuracy per loss, metric means per (loss, method) and model digests of a finished run."""
    from clxai_utils.explain.store import model_digest  # loads grad-cam: only when a run is read

    if not run.facets_paths["table"].is_file():
        pytest.fail(f"no finished quick run in {run.root}: run `make run` (or stage 3 of `make test`) first")
    table = pd.read_csv(run.accuracy_path)
    accuracy = table.set_index("loss")["accuracy"]
    means = pd.read_csv(run.facets_paths["table"]).groupby(["loss", "method"])[list(METRICS)].mean()
    return {
        "run": run.id,
        "precision": "/".join(sorted(set(table["precision"]))),
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
    return bool(fresh["model_digests"] == ref["model_digests"])


def tolerance(ref: dict[str, Any], kind: str, key: str, exact: bool) -> float:
    """The allowed |fresh - reference| of one number (see the module docstring)."""
    if kind == "accuracy":
        return 0.0 if exact else max(SEED_SIGMAS * ref["seed_std"]["accuracy"][key], ACCURACY_FLOOR)
    return SAME_WEIGHTS_ATOL if exact else max(SEED_SIGMAS * ref["seed_std"]["metric_means"][key], METRIC_FLOOR)


def differences(fresh: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Every number of `fresh` outside its tolerance around `ref`, as readable lines."""
    exact = same_weights(fresh, ref)
    wrong = []
    for kind in ("accuracy", "metric_means"):
        if fresh[kind].keys() != ref[kind].keys():
            wrong.append(f"{kind}: keys {sorted(fresh[kind])} differ from the reference's {sorted(ref[kind])}")
            continue
        for key, expected in ref[kind].items():
            got = fresh[kind][key]
            if expected is None or got is None:
                if expected is not got:
                    wrong.append(f"{kind} {key}: {got} (reference {expected})")
                continue
            tol = tolerance(ref, kind, key, exact)
            if abs(got - expected) > tol:
                wrong.append(f"{kind} {key}: {got:.6f}, reference {expected:.6f} ± {tol:.2g}")
    return wrong


def test_accuracy_and_metric_means_match_the_reference(fresh: dict[str, Any]) -> None:
    ref = reference()
    mode = (
        "same weights as the reference"
        if same_weights(fresh, ref)
        else "other weights: tolerances from the seed spread"
    )
    wrong = differences(fresh, ref)
    assert not wrong, f"{len(wrong)} number(s) moved ({mode}):\n" + "\n".join(wrong)


def test_a_changed_metric_is_caught(fresh: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is sharp enough to see a change of one metric: the Gini offset 1e-7 raised to 1e-4."""
    from clxai_utils.evaluate import metrics
    from clxai_utils.explain.store import load_explanations

    if not same_weights(fresh, reference()):
        pytest.skip("other weights than the reference's: the seed-spread tolerances cannot resolve a one-metric change")
    run = Run("cifar10", "quick", 0)
    maps = load_explanations(run, "ce", "gradcam").maps.float()
    assert metrics.sparseness_gini(maps).nanmean().item() == pytest.approx(
        fresh["metric_means"]["ce/gradcam/sparseness_gini"]
    )
    monkeypatch.setattr(metrics, "GINI_OFFSET", 1e-4)
    changed = metrics.sparseness_gini(maps).nanmean().item()
    perturbed = {**fresh, "metric_means": {**fresh["metric_means"], "ce/gradcam/sparseness_gini": changed}}
    wrong = differences(perturbed, reference())
    assert any("ce/gradcam/sparseness_gini" in line for line in wrong), (
        f"a Gini offset of 1e-4 moves the mean by {changed - fresh['metric_means']['ce/gradcam/sparseness_gini']:.2g}, "
        "which the comparison does not catch"
    )


def seed_spread(seeds: list[int]) -> dict[str, Any]:
    """Standard deviation (ddof=1) over `seeds` of each number `measured` pins: the tolerance of other weights."""
    runs = [measured(Run("cifar10", "quick", seed)) for seed in seeds]
    spread: dict[str, Any] = {}
    for kind in ("accuracy", "metric_means"):
        values = pd.DataFrame([run[kind] for run in runs])
        spread[kind] = {
            key: round(float(values[key].std()), 3) if values[key].notna().all() else None for key in values
        }
    return spread


def reproducible_here() -> str | None:
    """None when this CPU computes in the reference run's precision; else why re-executing it is not a check."""
    wanted, here = reference()["precision"], resolve_precision(None, torch.device("cpu"))
    if here == wanted:
        return None
    return (
        f"the committed quick run was computed in {wanted} and this machine computes {here} (precision 'auto' or "
        f"$CLXAI_PRECISION): re-executing it would retrain in {here}, about an hour on 2 cores without native bf16, "
        "and give another run's numbers, not the committed ones"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Rewrite the pinned reference from outputs/runs/cifar10-quick-seed<k>/, or say whether "
        "this machine can reproduce it."
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--update", action="store_true")
    task.add_argument(
        "--can-reproduce",
        action="store_true",
        help="exit 0 if this CPU computes the reference's precision, else say why",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="runs whose spread sets the tolerances")
    args = parser.parse_args()
    if args.can_reproduce:
        why = reproducible_here()
        if why is not None:
            print(f"skipped: {why}. COMMITTED=1 runs it anyway.")
        raise SystemExit(0 if why is None else 1)
    old = reference()
    about = (
        "Key numbers of the quick run (cifar10, seed 0) on the 2-core machine that wrote them; see "
        f"tests/test_pinned_numbers.py. seed_std: standard deviation of the per-seed values over seeds "
        f"{', '.join(map(str, args.seeds))} of the quick sweep on the same machine, accuracy as a fraction."
    )
    fresh = measured(Run("cifar10", "quick", 0))
    write_json(REFERENCE, {**old, "about": about, "seed_std": seed_spread(args.seeds), **fresh})
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
