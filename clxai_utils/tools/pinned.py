"""The quick run's key numbers against a committed reference (`make reproduce` compares them).

    python -m clxai_utils.tools.pinned --update [--seeds 0 1 2]

`tests/reference/cifar10-quick-seed0.json` holds what `make run` produced on the machine that wrote it: the
accuracy of each loss, the mean of every metric per (loss, method), the SHA-256 of each model's files, the
precision the run computed in, the host class, and the standard deviation of each number over the seeds of
the quick sweep (`seed_std`, `seed_count` of them). `--update` rewrites it from `outputs/runs/cifar10-quick-seed<k>/`
(run `make sweep SEEDS="1 2"` first for the default seeds). tests/test_pinned_numbers.py compares a fresh quick
run with it in one of two ways:

* **Same weights** (every model digest equals the reference's). Training is bit-identical on one machine, so
  any difference in a number is a change of the code that computes it: accuracies must be equal and metric
  means agree to 1e-9. Perturbing one metric (say `GINI_OFFSET`) fails here.
* **Other weights** (another machine, or a changed trainer). Float results differ across machines and the
  differences grow through training, so a fresh run is like one more seed. Each number may then lie anywhere
  in the prediction interval of one new seed around the reference, from the n seeds that wrote `seed_std`:

      |fresh - reference| <= t(1 - (1 - CONFIDENCE) / 2, n - 1) * sd * sqrt(1 + 1/n)

  (Student's t with n - 1 degrees of freedom: the sd of n seeds is itself uncertain). At CONFIDENCE = 99.9 %
  two-sided, ~0.04 of the 42 pinned numbers fall outside by chance. With n = 3 seeds the factor is
  t(0.9995, 2) * sqrt(4/3) = 36.5 sd; recording more seeds narrows it (n = 10: 5.0 sd). Floors: 2 accuracy
  points (the largest difference measured between two machines on one commit: the earlier quick CE model
  reached 63.55 % on the machine that wrote its reference and 65.5 % in CI) and 0.005 for a metric mean
  (sd values are stored rounded, some to 0).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd
from scipy import stats

from clxai_utils.core.artifacts import write_json
from clxai_utils.core.paths import repo_root
from clxai_utils.core.registry import METRICS
from clxai_utils.core.run import Run

REFERENCE = repo_root() / "tests" / "reference" / "cifar10-quick-seed0.json"
DEFAULT_SEEDS = (0, 1, 2)
#: Two-sided confidence of the prediction interval of one new seed (see the module docstring).
CONFIDENCE = 0.999
SAME_WEIGHTS_ATOL = 1e-9
ACCURACY_FLOOR = 0.02  # 2 points, as a fraction: the largest cross-machine difference measured
METRIC_FLOOR = 0.005
#: What kind of machine wrote the reference; another kind gives "other weights".
HOST = "2-core x86-64 CPU with native bf16 (AVX-512 BF16 or AMX): precision auto = bf16"


def measured(run: Run) -> dict[str, Any]:
    """Accuracy per loss, metric means per (loss, method) and model digests of a finished run."""
    from clxai_utils.explain.store import model_digest  # loads grad-cam: only when a run is read

    if not run.facets_paths["table"].is_file():
        raise FileNotFoundError(f"no finished quick run in {run.root}: run `make run` first")
    table = pd.read_csv(run.accuracy_path)
    accuracy = table.set_index("loss")["accuracy"]
    means = pd.read_csv(run.facets_paths["table"]).groupby(["loss", "method"])[list(METRICS)].mean()
    rows = [(cast(tuple[str, str], key), row) for key, row in means.iterrows()]
    return {
        "run": run.id,
        "precision": "/".join(sorted(set(table["precision"]))),
        "model_digests": {loss: model_digest(run, loss) for loss in accuracy.index},
        "accuracy": {loss: float(value) for loss, value in accuracy.items()},
        "metric_means": {
            f"{loss}/{method}/{metric}": None if math.isnan(value) else float(value)
            for (loss, method), row in rows
            for metric, value in row.items()
        },
    }


def reference(path: Path = REFERENCE) -> dict[str, Any]:
    return json.loads(path.read_text())


def same_weights(fresh: dict[str, Any], ref: dict[str, Any]) -> bool:
    return bool(fresh["model_digests"] == ref["model_digests"])


def seed_factor(n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the prediction interval of one new seed, in sample standard deviations of `n` seeds."""
    if n < 2:
        raise ValueError(f"a seed spread needs at least 2 seeds, the reference records {n}")
    return float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * math.sqrt(1 + 1 / n))


def tolerance(ref: dict[str, Any], kind: str, key: str, exact: bool) -> float:
    """The allowed |fresh - reference| of one number (see the module docstring)."""
    if exact:
        return 0.0 if kind == "accuracy" else SAME_WEIGHTS_ATOL
    floor = ACCURACY_FLOOR if kind == "accuracy" else METRIC_FLOOR
    return max(seed_factor(ref["seed_count"]) * ref["seed_std"][kind][key], floor)


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


def seed_spread(seeds: Sequence[int]) -> dict[str, Any]:
    """Standard deviation (ddof=1) over `seeds` of each number `measured` pins."""
    runs = [measured(Run("cifar10", "quick", seed)) for seed in seeds]
    spread: dict[str, Any] = {}
    for kind in ("accuracy", "metric_means"):
        values = pd.DataFrame([run[kind] for run in runs])
        spread[kind] = {
            key: round(float(values[key].std()), 6) if values[key].notna().all() else None for key in values
        }
    return spread


def update(seeds: Sequence[int], path: Path = REFERENCE) -> Path:
    """Rewrite the reference from the quick run of seed 0 and the spread of `seeds`."""
    if len(seeds) < 2:
        raise ValueError("--seeds needs at least 2 seeds to estimate a spread")
    about = (
        "Key numbers of the quick run (cifar10, seed 0) on the machine that wrote them; see "
        f"clxai_utils/tools/pinned.py. seed_std: standard deviation (ddof=1) of the per-seed values over the "
        f"seed_count = {len(seeds)} seeds {', '.join(map(str, seeds))} of the quick sweep on the same machine, "
        "accuracy as a fraction."
    )
    old = reference(path) if path.is_file() else {}
    fresh = measured(Run("cifar10", "quick", 0))
    spread = {"seed_count": len(seeds), "seeds": list(seeds), "seed_std": seed_spread(seeds)}
    return write_json(path, {**old, "about": about, "host": HOST, **spread, **fresh})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Rewrite the pinned reference (tests/reference/) from outputs/runs/cifar10-quick-seed<k>/."
    )
    parser.add_argument("--update", action="store_true", required=True, help="rewrite the reference")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="runs whose spread sets the tolerances"
    )
    args = parser.parse_args(argv)
    print(f"wrote {update(args.seeds)}")


if __name__ == "__main__":
    main()
