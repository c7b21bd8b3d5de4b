"""Linear probing and evaluation: the classifier every later stage explains.

For SupCon and triplet models the projection head is discarded and a linear classifier
is trained on the frozen backbone's pooled features, L2-normalised: exactly the
features `ExplainableClassifier(normalize_features=True)` feeds its head. The probe is
therefore evaluated and explained on the function it was trained on (the authors'
evaluation applied it to unnormalised features). CE models keep their own head.

The paper trains the probe for 100 epochs of SGD at lr 0.1; the authors' code did 100
full-batch steps and only printed the accuracy. Here the probe is trained on
mini-batches with a cosine schedule, and its accuracy is written to a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clxai_utils.core.artifacts import atomic_path, load_torch, save_torch, write_csv
from clxai_utils.core.compute import CPU_FLOAT32, Compute, compute_or_resolve
from clxai_utils.core.config import ProbeConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import LOSSES
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choices
from clxai_utils.data import augment
from clxai_utils.data.datasets import Dataset, DatasetInfo
from clxai_utils.data.geometry import default_resize
from clxai_utils.data.prepare import load_prepared
from clxai_utils.data.sources import FileSplit, ImageSplit
from clxai_utils.data.stream import CenterCropStream, make_loader
from clxai_utils.train.checkpoints import load_trained, snapshot_path
from clxai_utils.train.models import ExplainableClassifier, ModelSpec, explainable_from_contrastive
from clxai_utils.train.trainer import lr_factor

PROBE = "probe.pt"


def unaugmented_batches(
    split: ImageSplit | FileSplit, info: DatasetInfo, batch_size: int, workers: int = 0
) -> Iterator[torch.Tensor]:
    """The images of `split` in order, normalised, in batches: sliced from memory, or decoded at the
    evaluation crop by `workers` processes for a split kept on disk."""
    if isinstance(split, ImageSplit):
        for start in range(0, len(split), batch_size):
            yield augment.normalize(split.images[start : start + batch_size], info.mean, info.std)
        return
    stream = CenterCropStream(split.records(), info.image_size, default_resize(info.image_size))
    for images, _ in make_loader(stream, batch_size, workers):
        yield augment.normalize(images, info.mean, info.std)


@torch.no_grad()
def batched_forward(
    fn: Any,
    split: ImageSplit | FileSplit,
    info: DatasetInfo,
    batch_size: int = 512,
    compute: Compute = CPU_FLOAT32,
    workers: int = 0,
    *,
    precision: str | None = None,
) -> torch.Tensor:
    """Apply `fn` to the normalised, unaugmented images of `split` in batches; float32 results on CPU.

    The batches go to `compute.device` (where `fn`'s model must be); bf16 runs `fn` under
    autocast on channels-last batches. `precision` (a resolved name) is the earlier
    interface: plain CPU in that precision, replacing `compute`.
    """
    if precision is not None:
        compute = Compute(torch.device("cpu"), precision)
    outputs = []
    for x in unaugmented_batches(split, info, batch_size, workers):
        with compute.autocast():
            outputs.append(fn(compute.to_layout(x)).float().cpu())
    return torch.cat(outputs)


def train_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: ProbeConfig, seed: int, progress: bool = True
) -> tuple[nn.Linear, pd.DataFrame]:
    """Multinomial logistic regression on fixed features: SGD with momentum, cosine schedule, mini-batches.

    L2-normalised ReLU features all point into one narrow cone, which makes plain SGD on
    them badly conditioned. The probe is therefore fitted on per-dimension standardised
    features and the standardisation is folded back into its weights afterwards:
    the returned layer is an ordinary `nn.Linear` applied to the original features.
    """
    generator = torch.Generator().manual_seed(seed)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    standardised = (features - mean) / std
    probe = nn.Linear(features.shape[1], num_classes)
    # The problem is convex: a zero start is as good as a random one and, unlike nn.Linear's
    # default init (global RNG), does not depend on what ran before in the process.
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.SGD(probe.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = max(1, -(-len(labels) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 0, cfg.epochs * steps))
    rows = []
    for epoch in progress_bar(range(cfg.epochs), desc="linear probe", disable=not progress, unit="epoch"):
        order, total, correct = torch.randperm(len(labels), generator=generator), 0.0, 0
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            logits = probe(standardised[idx])
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        rows.append({"epoch": epoch + 1, "loss": total / len(labels), "train_acc": correct / len(labels)})
    return fold_standardisation(probe, mean, std), pd.DataFrame(rows)


@torch.no_grad()
def fold_standardisation(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """The linear layer x -> W((x - mean) / std) + b written as x -> W'x + b'."""
    folded = nn.Linear(layer.in_features, layer.out_features)
    folded.weight.copy_(layer.weight / std)
    folded.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(1))
    return folded


def check_profile(identity: dict[str, Any], profile: str | None, out_dir: Path) -> None:
    """Refuse a model trained under another profile (other data subset, other network)."""
    if profile is not None and identity["profile"] != profile:
        raise ValueError(
            f"the model in {out_dir} was trained with profile={identity['profile']!r}, not {profile!r}: retrain it"
        )


def fit_probe(
    out_dir: str | Path,
    split: ImageSplit | FileSplit,
    info: DatasetInfo,
    cfg: ProbeConfig,
    seed: int,
    progress: bool = True,
    profile: str | None = None,
    compute: Compute = CPU_FLOAT32,
    epoch: int | None = None,
    workers: int = 0,
) -> tuple[ExplainableClassifier, pd.DataFrame]:
    """Train and save (atomically) the probe of the SupCon/triplet model in `out_dir`.

    `epoch` probes that snapshot of the model instead of the final one (`probe_path`);
    `compute` is where and in what precision the features are computed, recorded with the
    probe (the probe itself is fitted on the CPU). The classifier comes back on the CPU.
    """
    model, spec, identity = load_trained(out_dir, epoch)
    check_profile(identity, profile, Path(out_dir))
    if spec.loss == "ce":
        raise ValueError(f"{out_dir} holds a CE model: it is evaluated with its own head, not probed")
    with compute.placed(model):
        features = batched_forward(
            lambda x: F.normalize(model.features(x), dim=1), split, info, compute=compute, workers=workers
        )
    probe, history = train_probe(features, split.labels, spec.num_classes, cfg, seed, progress)
    save_torch(
        probe_path(out_dir, epoch),
        {
            "state_dict": probe.state_dict(),
            "identity": identity,
            "probe_config": cfg.__dict__,
            **compute.to_dict(),
            "history": history.to_dict("list"),
        },
    )
    return explainable_from_contrastive(model, probe).eval(), history


def probe_path(out_dir: str | Path, epoch: int | None = None) -> Path:
    """The probe of the final model (`probe.pt`), or of the snapshot of `epoch` beside that snapshot."""
    if epoch is None:
        return Path(out_dir) / PROBE
    return snapshot_path(out_dir, epoch).with_suffix(".probe.pt")


def load_classifier(
    run: Run, loss: str, epoch: int | None = None, normalize_features: bool = True
) -> tuple[ExplainableClassifier, ModelSpec]:
    """The explainable classifier of one trained model: CE with its head, SupCon/triplet with its probe.

    `epoch` takes that snapshot (and its probe) instead of the final model. Refuses a model
    trained under another profile than the run's. `normalize_features=False` applies the
    SupCon/triplet probe to unnormalised features, as the authors' CIFAR evaluation did
    although the probe was trained on normalised ones (protocol switch `unnormalised_head`;
    no effect on CE).
    """
    out_dir = run.model_dir(loss)
    model, spec, identity = load_trained(out_dir, epoch)
    check_profile(identity, run.profile, out_dir)
    if isinstance(model, ExplainableClassifier):  # a CE model (spec.loss == "ce"), evaluated with its own head
        return model, spec
    path = probe_path(out_dir, epoch)
    if not path.is_file():
        raise FileNotFoundError(
            f"no linear probe at {path}: run notebooks/04_linear_probe.ipynb for loss={loss!r} in run {run.id} first"
        )
    state = load_torch(path)
    if state["identity"] != identity:
        raise ValueError(f"the probe in {path} was trained on another encoder: rerun notebooks/04_linear_probe.ipynb")
    probe = nn.Linear(model.backbone.feature_dim, spec.num_classes)
    probe.load_state_dict(state["state_dict"])
    classifier = explainable_from_contrastive(model, probe)
    if not normalize_features:
        classifier = ExplainableClassifier(classifier.backbone, classifier.head, normalize_features=False)
    return classifier.eval(), spec


def accuracy(
    model: ExplainableClassifier, split: ImageSplit, info: DatasetInfo, compute: Compute = CPU_FLOAT32
) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy on `split` and the predictions (on the CPU), in eval mode, computed in `compute`."""
    model.eval()
    with compute.placed(model) as placed:
        predictions = batched_forward(placed, split, info, compute=compute).argmax(1)
    return (predictions == split.labels).float().mean().item(), predictions


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a results table atomically as CSV (and JSON records beside it)."""
    path = write_csv(path, table)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(table.to_json(orient="records", indent=2))
    return path


def probe_and_evaluate(
    run: Run, losses: Iterable[str] = LOSSES, progress: bool = True, compute: Compute | None = None
) -> tuple[dict[str, ExplainableClassifier], pd.DataFrame, dict[str, pd.DataFrame], Dataset]:
    """04_linear_probe's work: fit the SupCon/triplet probes, evaluate all three losses, write the accuracy table.

    Returns the explainable classifiers, the accuracy table (also written to
    `run.accuracy_path`), the probes' training histories and the prepared data they were
    evaluated on. `compute` (None: `resolve_compute()`) is where and in what precision the features
    and the accuracy are computed (the table records the precision, the probe files both); the classifiers come back on the CPU.
    """
    losses = check_choices("losses", losses, LOSSES)
    compute = compute_or_resolve(compute)
    data, _ = load_prepared(run)
    classifiers, histories, rows = {}, {}, []
    for loss in losses:
        if loss == "ce":
            classifiers[loss], _ = load_classifier(run, loss)
        else:
            classifiers[loss], histories[loss] = fit_probe(
                run.model_dir(loss),
                data.train,
                data.info,
                run.settings.probe,
                run.seed,
                progress,
                run.profile,
                compute=compute,
                workers=run.settings.data.workers,
            )
        acc, _ = accuracy(classifiers[loss], data.accuracy_split, data.info, compute)
        rows.append(
            {
                "dataset": run.dataset,
                "profile": run.profile,
                "loss": loss,
                "seed": run.seed,
                "head": "own linear head" if loss == "ce" else "linear probe on L2-normalised features",
                "test_images": len(data.accuracy_split),
                "precision": compute.precision,
                "accuracy": acc,
            }
        )
    table = pd.DataFrame(rows)
    write_table(table, run.accuracy_path)
    return classifiers, table, histories, data
