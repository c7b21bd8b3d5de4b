"""Every stage computes on the `Compute` it is handed, and records it.

Only a CPU exists here, so each stage gets `Compute(cpu, float32)` explicitly while $CLXAI_DEVICE and
$CLXAI_PRECISION hold values `resolve_compute` refuses: a stage that resolved its own device or precision
instead of using the one it was given would fail. A spying `Compute` records the device of every model and
tensor it places, and the stage's artefacts must record the device type and precision.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from clxai_utils.core import config
from clxai_utils.core.artifacts import load_torch
from clxai_utils.core.compute import DEVICE_ENV, Compute
from clxai_utils.core.precision import PRECISION_ENV, cpu_computes_bf16
from clxai_utils.core.run import Run
from clxai_utils.data.prepare import load_prepared, prepare_data
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.train.checkpoints import MODEL

CPU = torch.device("cpu")
LOSSES = ["ce", "supcon"]


@dataclasses.dataclass(frozen=True)
class SpyCompute(Compute):
    """A `Compute` that records where it put every model and tensor."""

    record: list[tuple[str, torch.device]] = dataclasses.field(default_factory=list, compare=False)  # type: ignore[assignment]

    def model_to_layout(self, model: nn.Module) -> nn.Module:
        out = super().model_to_layout(model)
        self.record.append(("model", next(out.parameters()).device))
        return out

    def to_layout(self, value: torch.Tensor) -> torch.Tensor:
        out = super().to_layout(value)
        self.record.append(("tensor", out.device))
        return out

    def kinds(self) -> set[str]:
        assert self.record, "the stage never used the Compute it was given"
        assert {device for _, device in self.record} == {CPU}, self.record
        return {kind for kind, _ in self.record}


def spy() -> SpyCompute:
    return SpyCompute(CPU, "float32")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A smoke run whose environment names no usable device or precision: only the handed `Compute` works."""
    root = tmp_path_factory.mktemp("devices")
    raw = yaml.safe_load(config.profiles_path().read_text())
    tiny = raw["smoke"]["datasets"]["cifar10"]  # the smoke profile, smaller: one epoch, 8 + 2 images per class
    tiny["subset"] = {"train_per_class": 8, "test_per_class": 2}
    for loss in tiny["train"]:
        tiny["train"][loss] |= {"epochs": 1, "batch_size": 16, "warmup_epochs": 0, "snapshot_every": None}
    tiny["probe"]["epochs"] = 1
    tiny["metrics"]["pixels_per_step"] = 256
    profiles = root / "profiles.yaml"
    profiles.write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "profiles_path", lambda: profiles)
        mp.setenv("CLXAI_OUTPUTS", str(root / "out"))
        mp.setenv("CLXAI_DATA_DIR", str(root / "datadir"))
        mp.setenv(DEVICE_ENV, "no-such-device")
        mp.setenv(PRECISION_ENV, "no-such-precision")
        run = Run("cifar10", "smoke", 0)
        prepare_data(run, str(write_synthetic_imagefolder(root / "tree", per_class=(8, 2))))
        yield run


def _recorded(state: dict[str, Any]) -> tuple[str, str]:
    return state["device"], state["precision"]


def test_training_probe_maps_and_metrics_run_on_the_given_compute(run: Run) -> None:
    from clxai_utils.evaluate.facets import evaluate_facets
    from clxai_utils.explain.store import ExplanationSet, run_explanations
    from clxai_utils.train.probe import PROBE, probe_and_evaluate
    from clxai_utils.train.trainer import run_training

    for loss in LOSSES:
        trainer = spy()
        result = run_training(run, loss, progress=False, compute=trainer)
        assert trainer.kinds() == {"model", "tensor"}
        assert _recorded(load_torch(run.model_dir(loss) / MODEL)) == ("cpu", "float32")
        assert next(result.model.parameters()).device == CPU

    prober = spy()
    classifiers, table, _, _ = probe_and_evaluate(run, LOSSES, progress=False, compute=prober)
    assert prober.kinds() == {"model", "tensor"}
    assert _recorded(load_torch(run.model_dir("supcon") / PROBE)) == ("cpu", "float32")
    assert table["precision"].tolist() == ["float32", "float32"]
    assert all(next(model.parameters()).device == CPU for model in classifiers.values())

    explainer = spy()
    rows = run_explanations(run, LOSSES, ["eigencam"], progress=False, compute=explainer)
    assert explainer.kinds() == {"model"} and not rows["reused"].any()
    meta = ExplanationSet.load(run.explanation_path("ce", "eigencam")).meta
    assert (meta["device"], meta["precision"]) == ("cpu", "float32")
    again = run_explanations(run, LOSSES, ["eigencam"], progress=False, compute=spy())
    assert again["reused"].all(), "maps of the same device and precision are reused"

    scorer = spy()
    results = evaluate_facets(run, LOSSES, ["eigencam"], progress=False, n_examples=1, compute=scorer)
    assert scorer.kinds() == {"model"}
    assert _recorded(results.sidecar) == ("cpu", "float32")
    assert _recorded(json.loads(run.facets_paths["sidecar"].read_text())) == ("cpu", "float32")
    assert results.table["pf_auc"].notna().any()


def test_snapshots_run_on_the_given_compute(run: Run) -> None:
    from clxai_utils.evaluate.snapshots import evaluate_snapshots

    if not (run.model_dir("ce") / MODEL).is_file():
        pytest.skip("needs the models of the test above")
    snapshots = spy()
    results = evaluate_snapshots(run, ["ce"], ["eigencam"], progress=False, compute=snapshots)
    assert snapshots.kinds() == {"model", "tensor"}  # the accuracy's batches and the block's model
    assert _recorded(results.sidecar) == ("cpu", "float32")
    block = Path(run.snapshot_block_path("ce", 1)).with_suffix(".json")  # one epoch: the final model
    assert _recorded(json.loads(block.read_text())) == ("cpu", "float32")


@pytest.mark.skipif(not cpu_computes_bf16(), reason="the bf16 diagnostic is refused where the CPU would emulate bf16")
def test_the_bf16_diagnostic_runs_on_the_device_it_is_given(run: Run) -> None:
    from clxai_utils.evaluate.diagnostics import precision_effect

    if not (run.model_dir("ce") / MODEL).is_file():
        pytest.skip("needs the models of the test above")
    effect = precision_effect(run, "ce", n_images=10, methods=["eigencam"], compute=spy())
    assert {"prediction", "pf_auc"} <= set(effect["metric"])


def test_activations_and_the_planted_features_run_on_the_given_compute(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clxai_utils.neurons import planted
    from clxai_utils.neurons import units as U
    from clxai_utils.train.checkpoints import load_trained

    if not (run.model_dir("ce") / MODEL).is_file():
        pytest.skip("needs the models of the test above")
    seen: list[tuple[torch.device, torch.device]] = []
    stage_means = U.stage_means

    def spying(backbone: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
        seen.append((next(backbone.parameters()).device, x.device))
        return stage_means(backbone, x, layer)

    monkeypatch.setattr(U, "stage_means", spying)
    compute = Compute(CPU, "float32")
    activations = U.run_activations(run, "ce", progress=False, compute=compute)
    assert seen and set(seen) == {(CPU, CPU)}
    assert activations.meta["device"] == "cpu" and activations.activations.device == CPU
    assert activations.activations.dtype == torch.float32
    assert U.run_activations(run, "ce", progress=False, compute=compute).seconds is None, "reused"

    seen.clear()
    model, _, _ = load_trained(run.model_dir("ce"))
    data, _ = load_prepared(run)
    features = planted.pooled_versions({"ce": model}, {"original": data.test.images[:4]}, data.info, compute=compute)
    assert seen and set(seen) == {(CPU, CPU)} and features["ce"]["original"].shape[0] == 4
