"""Every stage of the pipeline once on this machine's device: `python -m clxai_utils.tools.gpu_smoke`.

A check that the stages run where `resolve_compute` puts them (CUDA when present, then MPS,
else the CPU) and how fast, not a result: on a synthetic image folder
(`write_synthetic_imagefolder`) in a temporary outputs folder, with the smoke profile's data
subset, network and settings, it prepares the data, trains each loss for one epoch, fits
the probes, computes the maps, scores every facet and computes the unit activations, all
with one `Compute`, and prints images per second per stage:

- ``data``: images prepared (decoded, subset, written);
- ``train <loss>``: training images of the epoch (the trainer's own clock);
- ``probe``: the images whose features or logits the probes and accuracies needed;
- ``maps <method>``: images explained (every kind 05 explains);
- ``metrics <facet>``: images scored per facet (06's own clock);
- ``activations``: test images through each backbone.

``--device`` and ``--precision`` override $CLXAI_DEVICE and $CLXAI_PRECISION; ``--quick``
trains CE and SupCon only and computes Eigen-CAM maps only (about a minute on two CPU cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from clxai_utils.core.compute import DEVICES, Compute, resolve_compute
from clxai_utils.core.precision import PRECISIONS
from clxai_utils.core.registry import LOSSES, METHODS
from clxai_utils.core.run import Run
from clxai_utils.data.prepare import load_prepared, prepare_data
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.evaluate.facets import evaluate_facets
from clxai_utils.explain.store import run_explanations
from clxai_utils.neurons.units import run_activations
from clxai_utils.train.checkpoints import RunIdentity
from clxai_utils.train.models import ModelSpec
from clxai_utils.train.probe import probe_and_evaluate
from clxai_utils.train.trainer import train

PROFILE = "smoke"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def train_one_epoch(run: Run, loss: str, compute: Compute) -> float:
    """Train `loss` of `run` for one epoch of its profile's settings; the trainer's images per second."""
    settings = run.settings
    cfg = replace(settings.train[loss], epochs=1, snapshot_every=None)
    data, manifest = load_prepared(run)
    spec = ModelSpec(settings.model.arch, settings.model.width, data.num_classes, loss)
    identity = RunIdentity(run.dataset, run.profile, run.seed, manifest.checksums["train"], spec.to_dict(), asdict(cfg))
    result = train(
        spec,
        cfg,
        data.train,
        data.info,
        run.model_dir(loss),
        identity=identity,
        seed=run.seed,
        compute=compute,
        progress=False,
        workers=settings.data.workers,
    )
    return float(result.history["images_per_s"].iloc[-1])


def smoke(root: Path, compute: Compute, losses: Sequence[str], methods: Sequence[str]) -> list[tuple[str, float]]:
    """Every stage once in `root` on `compute`: (stage, images per second) in order."""
    os.environ["CLXAI_OUTPUTS"] = str(root / "outputs")
    os.environ["CLXAI_DATA_DIR"] = str(root / "data")
    tree = write_synthetic_imagefolder(root / "tree")
    run = Run("cifar10", PROFILE, 0)
    (data, _), seconds = _timed(lambda: prepare_data(run, str(tree), mask_source=None))
    rates = [("data", (len(data.train) + len(data.test)) / seconds)]
    rates += [(f"train {loss}", train_one_epoch(run, loss, compute)) for loss in losses]
    _, seconds = _timed(lambda: probe_and_evaluate(run, losses, progress=False, compute=compute))
    probed = len(data.train) * sum(loss != "ce" for loss in losses) + len(data.accuracy_split) * len(losses)
    rates.append(("probe", probed / seconds))
    maps = run_explanations(run, losses, methods, progress=False, compute=compute)
    for method, rows in maps.groupby("method", sort=False):
        rates.append((f"maps {method}", rows["images"].sum() / rows["seconds"].sum()))
    results = evaluate_facets(run, losses, methods, progress=False, n_examples=1, compute=compute)
    throughput = results.throughput
    rates += [(f"metrics {facet}", float(rate)) for facet, rate in zip(throughput["facet"], throughput["images_per_s"])]
    activations = [run_activations(run, loss, progress=False, compute=compute) for loss in losses]
    images = sum(len(a.image_ids) for a in activations)
    rates.append(("activations", images / sum(a.seconds or 0.0 for a in activations)))
    return rates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clxai_utils.tools.gpu_smoke",
        description="Run every stage once on this machine's device and print images/s per stage.",
    )
    parser.add_argument("--device", choices=DEVICES, default=None, help="default $CLXAI_DEVICE, else auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="default $CLXAI_PRECISION, else auto")
    parser.add_argument("--quick", action="store_true", help="CE and SupCon only, Eigen-CAM maps only")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    compute = resolve_compute(args.device, args.precision)
    losses, methods = (["ce", "supcon"], ["eigencam"]) if args.quick else (list(LOSSES), list(METHODS))
    print(f"compute: {compute.describe()}; profile {PROFILE}; losses {losses}; methods {methods}", flush=True)
    start = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        rates = smoke(args.keep, compute, losses, methods)
    else:
        with tempfile.TemporaryDirectory(prefix="clxai-gpu-smoke-") as folder:
            rates = smoke(Path(folder), compute, losses, methods)
    width = max(len(stage) for stage, _ in rates)
    for stage, rate in rates:
        print(f"{stage:<{width}}  {rate:10.1f} images/s")
    print(f"all stages in {time.perf_counter() - start:.1f} s on {compute.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
