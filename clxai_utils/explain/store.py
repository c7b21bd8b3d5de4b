"""Stored maps (05_explanations): `ExplanationSet`, computed once per (model, method, kind) and reused.

`compute_explanations` runs a split through `cams.explain` and keeps the maps with the
ids, labels, logits and targets needed to pair results across models. `run_explanations`
does this for every model of a run; a stored file is reused only while its model files,
images and protocol are unchanged, and `load_explanations` refuses maps of a model that has
since changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from clxai_utils.core.artifacts import load_torch, save_torch
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.config import MAP_DEVIATIONS, ExplainConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import LOSSES, METHODS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choice, check_choices
from clxai_utils.data import augment
from clxai_utils.data.datasets import Dataset, DatasetInfo
from clxai_utils.data.prepare import balanced_subset, load_prepared
from clxai_utils.data.sources import ImageSplit
from clxai_utils.explain.cams import (
    EIGENCAM_SIGN_CONVENTION,
    POSTPROCESSING,
    _check_class_indices,
    _check_images,
    _explanation_mode,
    explain,
)
from clxai_utils.explain.mosaics import Mosaics, make_mosaics
from clxai_utils.train.checkpoints import MODEL, snapshot_path
from clxai_utils.train.probe import load_classifier, probe_path

MAP_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16)
TARGET_RULES: tuple[str, ...] = ("predicted", "true")
_FORMAT = "clxai.ExplanationSet/1"


def _check_plain(name: str, value: Any) -> None:
    """Require values that `torch.load(weights_only=True)` reads back: no tensors, no objects.

    Types are matched exactly: subclasses such as `torch.__version__` (a TorchVersion str)
    or numpy scalars are pickled as their class and refused by the weights-only loader.
    """
    if value is None or type(value) in (bool, int, float, str):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(f"{name}[{i}]", item)
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{name} keys must be str, got {key!r}")
            _check_plain(f"{name}[{key!r}]", item)
        return
    raise TypeError(f"{name} must hold only None/bool/int/float/str/list/tuple/dict, got {type(value).__name__}")


def _check_dtype(name: str, value: Any, ndim: int, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(value, Tensor) or value.ndim != ndim or value.dtype not in dtypes:
        got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"{name} must be a {ndim}-D tensor of dtype {[str(d) for d in dtypes]}, got {got}")


_INDEX_FIELDS = ("image_ids", "labels", "predictions", "targets")


@dataclass
class ExplanationSet:
    """Maps of one model and method on one split, with what is needed to pair them.

    `targets` is the class each map explains (recorded for Eigen-CAM too, which ignores it);
    `image_ids` are unique, so results of different models can be joined on them.
    `meta` holds plain values only (model id, dataset, loss, seed, target rule, versions).
    """

    maps: Tensor  # (N, H, W) float32 or float16, in [0, 1]
    image_ids: Tensor  # (N,) int64
    labels: Tensor  # (N,) int64
    predictions: Tensor  # (N,) int64, argmax of logits
    logits: Tensor  # (N, C) float32
    targets: Tensor  # (N,) int64, the explained class
    method: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_dtype("maps", self.maps, 3, MAP_DTYPES)
        _check_dtype("logits", self.logits, 2, (torch.float32,))
        for name in _INDEX_FIELDS:
            _check_dtype(name, getattr(self, name), 1, (torch.int64,))
        n = len(self.maps)
        for name in ("logits", *_INDEX_FIELDS):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows but maps has {n}")
        num_classes = self.logits.shape[1]
        for name in ("labels", "predictions", "targets"):
            _check_class_indices(name, getattr(self, name), n, num_classes)
        if torch.unique(self.image_ids).numel() != n:
            raise ValueError("image_ids must be unique")
        check_choice("method", self.method, METHODS)
        _check_plain("meta", self.meta)

    def __len__(self) -> int:
        return len(self.maps)

    def select(self, index: Tensor) -> ExplanationSet:
        """The maps of the images at `index` (positions), with everything that pairs them."""
        tensors = {name: getattr(self, name)[index] for name in ("maps", "logits", *_INDEX_FIELDS)}
        return ExplanationSet(**tensors, method=self.method, meta=dict(self.meta))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as a dict of compact CPU tensors and plain values."""
        tensors = {name: getattr(self, name).detach().cpu().clone() for name in ("maps", "logits", *_INDEX_FIELDS)}
        return save_torch(path, {"format": _FORMAT, **tensors, "method": self.method, "meta": self.meta})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExplanationSet:
        """Read a file written by `save` (with `weights_only=True`) and re-validate it."""
        data = load_torch(path)
        if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
            raise ValueError(f"{path} is not an ExplanationSet file (format {_FORMAT!r})")
        return cls(**data)


def package_versions() -> dict[str, str]:
    """Versions that change the maps: recorded with every ExplanationSet."""
    return {
        "torch": str(torch.__version__),
        "grad-cam": importlib.metadata.version("grad-cam"),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


#: Recorded instead of `EIGENCAM_SIGN_CONVENTION` for maps computed without the sign rule (the authors').
NO_SIGN_CONVENTION = "none: the SVD's own sign, as pytorch-grad-cam's EigenCAM (protocol switch eigencam_no_sign)"


def map_deviations(meta: dict[str, Any]) -> list[str]:
    """The protocol deviations stored maps were computed with (absent from the meta: none)."""
    return list(meta.get("map_deviations", []))


def _full_meta(meta: dict[str, Any] | None, method: str, target: str, eigencam_sign: bool = True) -> dict[str, Any]:
    auto: dict[str, Any] = {
        "method": method,
        "target_rule": target,
        "postprocessing": POSTPROCESSING,
        "versions": package_versions(),
    }
    if method == "eigencam":
        auto["sign_convention"] = EIGENCAM_SIGN_CONVENTION if eigencam_sign else NO_SIGN_CONVENTION
    meta = dict(meta or {})
    _check_plain("meta", meta)  # fail before the maps are computed, not after
    clash = sorted(set(meta) & set(auto))
    if clash:
        raise ValueError(f"meta must not set {clash}: compute_explanations fills them in")
    return {**meta, **auto}


def _as_batches(data: Any) -> Iterable[Any]:
    """A single (x, y, image_id) tuple of tensors counts as one batch."""
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(t, Tensor) for t in data):
        return [data]
    return data


def compute_explanations(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]] | tuple[Tensor, Tensor, Tensor],
    method: str,
    target: str = "predicted",
    *,
    batch_size: int,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    maps_dtype: torch.dtype = torch.float32,
    eigencam_sign: bool = True,
) -> ExplanationSet:
    """Logits, predictions and maps for every image of `batches` ((x, y, image_id) batches).

    Each batch goes through the model once in eval mode without gradients for the logits;
    the explained class is the prediction (`target="predicted"`, the paper's rule) or the
    label (`"true"`); the maps are then computed in chunks of `batch_size`. `maps_dtype`
    float16 halves the file size (step 2^-11 near 1, enough for [0, 1] maps).
    `eigencam_sign=False` computes Eigen-CAM without its sign rule (protocol `eigencam_no_sign`).
    """
    check_choice("target", target, TARGET_RULES)
    check_choice("method", method, METHODS)
    if maps_dtype not in MAP_DTYPES:
        raise ValueError(f"maps_dtype must be one of {[str(d) for d in MAP_DTYPES]}, got {maps_dtype}")
    meta = _full_meta(meta, method, target, eigencam_sign)
    parts: dict[str, list[Tensor]] = {name: [] for name in ("maps", "logits", *_INDEX_FIELDS)}
    label = " ".join(str(meta[key]) for key in ("loss", "method", "kind") if key in meta)  # e.g. "ce gradcam test"
    for x, y, ids in progress_bar(_as_batches(batches), desc=label, disable=not progress):
        x = _check_images(x)
        with _explanation_mode(model) as device, torch.no_grad():
            logits = model(x.to(device)).float().cpu()
        predictions = logits.argmax(dim=1)
        labels = _check_class_indices("y", torch.as_tensor(y), len(x), logits.shape[1])
        targets = predictions if target == "predicted" else labels
        parts["maps"].append(explain(model, x, method, targets, batch_size, eigencam_sign).to(maps_dtype))
        parts["logits"].append(logits)
        parts["image_ids"].append(torch.as_tensor(ids, dtype=torch.int64).reshape(-1))
        parts["labels"].append(labels)
        parts["predictions"].append(predictions)
        parts["targets"].append(targets)
    if not parts["maps"]:
        raise ValueError("batches must yield at least one (x, y, image_id) batch")
    return ExplanationSet(**{name: torch.cat(p) for name, p in parts.items()}, method=method, meta=meta)


# ----------------------------------------------------------------------------- stage


def explained_split(data: Dataset, cfg: ExplainConfig) -> ImageSplit:
    """The test images every model is explained on: class-balanced, the same for every loss and seed."""
    return data.test.subset(balanced_subset(data.test.labels, cfg.images_per_class, seed=0))


def normalised_images(split: ImageSplit, info: DatasetInfo) -> Tensor:
    """The unaugmented images of `split` in the models' input space."""
    return augment.normalize(split.images, info.mean, info.std)


def explained_mosaics(split: ImageSplit, info: DatasetInfo, seed: int) -> Mosaics:
    """The mosaic of every explained image (image i is the target of mosaic i), drawn from `seed`."""
    return make_mosaics(normalised_images(split, info), split.labels, seed)


@dataclass(frozen=True)
class ExplainedImages:
    """One kind of explained images: the model inputs, labels and ids, and the class each map explains."""

    x: Tensor
    labels: Tensor
    ids: Tensor
    target: str


def mosaics_needed(split: ImageSplit, num_classes: int) -> bool:
    """Coherence falls back to mosaics where the test images carry no masks (and 4 distinct classes fill one)."""
    return split.masks is None and num_classes >= 4


def explained_inputs(data: Dataset, run: Run) -> dict[str, ExplainedImages]:
    """Every kind of images of the run that 05 explains (see `EXPLANATION_KINDS`).

    Test images and external masked images are explained for their predicted class (the
    paper's rule; coherence then scores the images classified correctly); mosaic i for the
    true class of its target image i, since the mosaic itself has no single class.
    """
    split = explained_split(data, run.settings.explain)
    kinds = {"test": ExplainedImages(normalised_images(split, data.info), split.labels, split.ids, "predicted")}
    if mosaics_needed(split, data.num_classes):
        mosaics = explained_mosaics(split, data.info, run.seed)
        kinds["mosaics"] = ExplainedImages(mosaics.images, split.labels, split.ids, "true")
    if data.mask_set is not None:
        masked = data.mask_set
        x = augment.normalize(masked.images, data.info.mean, data.info.std)
        kinds["masks"] = ExplainedImages(x, masked.labels, masked.ids, "predicted")
    return kinds


def model_digest(run: Run, loss: str, epoch: int | None = None) -> str:
    """SHA-256 of the weights that define the explained function (the model's, and the probe's for SupCon/TL).

    `epoch` hashes that snapshot and its probe instead of the final model. The tensors are
    hashed (name, dtype, shape, values), not the files: pickle's memo and torch's archive
    layout make two saves of the same weights differ in their bytes.
    """
    folder = run.model_dir(loss)
    files = {
        "model.pt": folder / MODEL if epoch is None else snapshot_path(folder, epoch),
        "probe.pt": probe_path(folder, epoch),
    }
    digest = hashlib.sha256()
    for name, path in files.items():
        if path.is_file():
            for key, tensor in sorted(load_torch(path)["state_dict"].items()):
                digest.update(f"{name}/{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _batches(x: Tensor, labels: Tensor, ids: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], labels[start : start + batch_size], ids[start : start + batch_size]


#: What stored maps older than a recorded key were computed with (before `Compute`, maps were computed on the CPU).
LEGACY_META = {"device": "cpu"}


def _is_current(path: Path, meta: dict[str, Any], deviations: list[str] | None = None) -> bool:
    """Whether the stored file was computed from the same model, images and protocol (its map deviations included)."""
    if not path.is_file():
        return False
    stored = LEGACY_META | ExplanationSet.load(path).meta
    same_deviations = map_deviations(stored) == (deviations or [])
    return same_deviations and all(stored.get(key) == value for key, value in meta.items())


def run_explanations(
    run: Run,
    losses: Iterable[str],
    methods: Iterable[str] = METHODS,
    progress: bool = True,
    compute: Compute | None = None,
) -> pd.DataFrame:
    """05_explanations' work: the maps of every (loss, method, kind) of the run, computed once and stored.

    The kinds and target rules are `explained_inputs`'. A file whose model, images and protocol (the precision and
    device type included) match is reused, so a rerun (or an interrupted run) only computes what is missing.
    `compute` (None: `resolve_compute()`) is where and in what precision the maps are computed. Returns one row per file.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    compute = compute_or_resolve(compute)
    cfg = run.settings.explain
    data, _ = load_prepared(run)
    inputs = explained_inputs(data, run)
    deviations = [d for d in MAP_DEVIATIONS if d in run.settings.metrics.deviations]  # the protocol's, for the maps
    rows = []
    for loss in losses:
        model, _ = load_classifier(run, loss, normalize_features="unnormalised_head" not in deviations)
        # What must match for stored maps to be reused: model files, images and protocol (hashed once per model).
        source = {
            "profile": run.profile,
            "dataset": run.dataset,
            "seed": run.seed,
            "loss": loss,
            "model_digest": model_digest(run, loss),
            **compute.to_dict(),
        }
        for method, (kind, images) in itertools.product(methods, inputs.items()):
            path = run.explanation_path(loss, method, kind)
            meta = source | {"kind": kind, "image_ids_digest": hashlib.sha256(images.ids.numpy().tobytes()).hexdigest()}
            start, reused = time.perf_counter(), _is_current(path, meta, deviations)
            if deviations:  # recorded only when some are on, so the corrected protocol's files stay as they were
                meta = meta | {"map_deviations": deviations}
            if not reused:
                batches = _batches(images.x, images.labels, images.ids, cfg.batch_size)
                with compute.inference(model) as fast:
                    compute_explanations(
                        fast,
                        batches,
                        method,
                        images.target,
                        batch_size=cfg.batch_size,
                        meta=meta,
                        progress=progress,
                        eigencam_sign="eigencam_no_sign" not in deviations,
                    ).save(path)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "loss": loss,
                    "method": method,
                    "kind": kind,
                    "images": len(images.ids),
                    "reused": reused,
                    "seconds": round(seconds, 2),
                    "images_per_s": None if reused else len(images.ids) / seconds,
                    "file": str(path.relative_to(run.root)),
                }
            )
    return pd.DataFrame(rows)


def load_explanations(run: Run, loss: str, method: str, kind: str = "test") -> ExplanationSet:
    """Stored maps of one (model, method, kind), refusing maps of a model that has since changed."""
    path = run.explanation_path(loss, method, kind)
    if not path.is_file():
        raise FileNotFoundError(f"no stored maps at {path}: run notebooks/05_explanations.ipynb for run {run.id} first")
    stored = ExplanationSet.load(path)
    if stored.meta.get("model_digest") != model_digest(run, loss):
        raise ValueError(
            f"the maps in {path} were computed for another {loss!r} model: rerun notebooks/05_explanations.ipynb"
        )
    return stored
