"""The files a training run leaves in its model folder, and how they are read back.

`checkpoint.pt` (rewritten atomically after every epoch: what a restarted run resumes from),
`history.csv`, `model.pt` once the last epoch is done, and `snapshots/epoch<k>.pt` for the
epochs the profile keeps. Every file loads with ``torch.load(..., weights_only=True)``.
A checkpoint is resumed only by the run that wrote it (`RunIdentity`), with the same number
of processes and the same precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from clxai_utils.core.artifacts import load_torch
from clxai_utils.train.models import ContrastiveModel, ExplainableClassifier, ModelSpec, build_training_model

CHECKPOINT = "checkpoint.pt"


MODEL = "model.pt"


HISTORY = "history.csv"


SNAPSHOTS = "snapshots"  # snapshots/epoch<k>.pt: the weights after epoch k (TrainConfig.snapshot_every)


class CheckpointMismatch(RuntimeError):
    """A checkpoint exists for different settings; resuming from it would mix two runs."""


@dataclass(frozen=True)
class RunIdentity:
    """What must match for a checkpoint to be resumed (or reused once finished)."""

    dataset: str
    profile: str
    seed: int
    data_checksum: str
    spec: dict[str, Any]
    train: dict[str, Any]


@dataclass
class TrainResult:
    """A trained model, its history and where its files are."""

    model: nn.Module
    spec: ModelSpec
    history: pd.DataFrame
    out_dir: Path
    resumed_from_epoch: int


def load_resumable(path: Path, identity: RunIdentity, world_size: int, precision: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run; an error if it belongs to another."""
    if not path.is_file():
        return None
    state = load_torch(path)
    if state["identity"] != asdict(identity):
        raise CheckpointMismatch(
            f"{path} was written by a run with other settings:\n  saved: {state['identity']}\n  now:   {asdict(identity)}\n"
            "Delete that folder to retrain, or use the parameters it was trained with."
        )
    if state["world_size"] != world_size:
        raise CheckpointMismatch(
            f"{path} was written by {state['world_size']} training process(es), and this run has {world_size}: "
            "each process has its own augmentation stream, so resume with the same number of devices "
            "(or delete that folder to retrain)."
        )
    if state.get("precision", precision) != precision:  # checkpoints older than the switch: float32 on CPU
        raise CheckpointMismatch(
            f"{path} was trained in {state['precision']} and this run asks for {precision}: resume with "
            f"precision={state['precision']!r} (or $CLXAI_PRECISION), or delete that folder to retrain"
        )
    return state


def snapshot_path(out_dir: str | Path, epoch: int) -> Path:
    """Where the weights after `epoch` are kept (only for the epochs `TrainConfig.snapshot_every` names)."""
    return Path(out_dir) / SNAPSHOTS / f"epoch{epoch:04d}.pt"


def trained_epochs(out_dir: str | Path) -> list[int]:
    """The epochs whose weights exist in `out_dir`: every snapshot, and the last epoch once training finished."""
    out_dir = Path(out_dir)
    names = (p.stem.removeprefix("epoch") for p in (out_dir / SNAPSHOTS).glob("epoch*.pt"))
    epochs = sorted(int(name) for name in names if name.isdigit())  # not the snapshots' probes, epoch<k>.probe.pt
    if (out_dir / MODEL).is_file():
        epochs.append(load_torch(out_dir / MODEL)["epoch"])
    return epochs


def load_trained(
    out_dir: str | Path, epoch: int | None = None
) -> tuple[ExplainableClassifier | ContrastiveModel, ModelSpec, dict[str, Any]]:
    """The model written by `train` (CE: classifier; SupCon/triplet: backbone + projection head).

    `epoch` None is the final model; an epoch of `trained_epochs` is that snapshot (the final
    epoch's is the final model).
    """
    path = Path(out_dir) / MODEL
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}: run the training notebook for this loss and seed first")
    state = load_torch(path)
    if epoch is not None and epoch != state["epoch"]:
        path = snapshot_path(out_dir, epoch)
        if not path.is_file():
            raise FileNotFoundError(f"no snapshot of epoch {epoch} at {path}; epochs kept: {trained_epochs(out_dir)}")
        state = load_torch(path)
    spec = ModelSpec.from_dict(state["spec"])
    model = build_training_model(spec)
    model.load_state_dict(state["state_dict"])
    return model.eval(), spec, state["identity"]
