"""Saliency maps: Grad-CAM (pytorch-grad-cam) and a batched, sign-fixed Eigen-CAM.

The explained model is duck-typed: `model(x)` returns logits (N, C), `model.target_layer`
is the module whose (N, K, u, v) output is explained (the last block of layer4) and
`model.num_classes` is C. Both methods return CPU float32 maps (N, H, W) in [0, 1] with the
same post-processing as pytorch-grad-cam: ReLU, per-map min-max on the u x v map,
bilinear upsampling to the input size, per-map min-max again (`postprocess_cam`). The
min-max hides magnitudes: maps are comparable within an image, not across images or
models. A map with no positive evidence stays all zero (never NaN); metrics must handle it.

Grad-CAM always receives explicit class targets: with `targets=None` the library explains
the argmax output, which on an embedding head is an embedding dimension, not a class.
`compute_explanations` runs a whole split and returns an `ExplanationSet` that stores the
maps with the ids, labels, logits and targets needed to pair results across models.
"""
from __future__ import annotations

import contextlib
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
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import augment
from .artifacts import load_torch, save_torch
from .config import LOSSES, ExplainConfig, check_choice, check_choices, load_profile
from .data import Dataset, DatasetInfo, ImageSplit, balanced_subset, load_prepared
from .mosaics import Mosaics, make_mosaics
from .paths import explanation_path, model_dir, outputs_dir
from .probe import load_classifier
from .seeding import check_seed

METHODS: tuple[str, ...] = ("gradcam", "eigencam")
TARGET_RULES: tuple[str, ...] = ("predicted", "true")
MAP_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16)
_EPS = 1e-7  # denominator offset of pytorch-grad-cam's `scale_cam_image`
_FORMAT = "clxai.ExplanationSet/1"

POSTPROCESSING = (
    "ReLU; per-map min-max (x - min) / (1e-7 + max) on the u x v map; bilinear upsampling "
    "to the input size (half-pixel centres, as cv2.resize INTER_LINEAR); per-map min-max again"
)
EIGENCAM_SIGN_CONVENTION = (
    "projection on the first right-singular vector of the centred (uv x K) activations, "
    "oriented to correlate positively with the channel-mean activation map; exact ties "
    "fall back to |max| >= |min|"
)


# --------------------------------------------------------------------------- validation


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _check_images(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point image tensor, got {got}")
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    return x


def _check_class_indices(name: str, values: Any, n: int, num_classes: int) -> Tensor:
    """Require a LongTensor-like (n,) of class indices in [0, num_classes)."""
    if not isinstance(values, Tensor) or values.dtype == torch.bool or values.is_floating_point():
        got = values.dtype if isinstance(values, Tensor) else type(values).__name__
        raise TypeError(f"{name} must be an integer tensor of class indices, got {got}")
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(values.shape)}")
    if n and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got min {int(values.min())}, max {int(values.max())}"
        )
    return values.long().cpu()


# --------------------------------------------------------------------------- model state


@contextlib.contextmanager
def _explanation_mode(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and frozen parameters inside the block; every flag restored afterwards.

    Eval mode makes maps independent of the batch (BatchNorm running statistics) and is
    what pytorch-grad-cam sets anyway. Freezing the parameters stops the CAM backward pass
    from computing weight gradients and filling `.grad`; Grad-CAM gets its gradient path
    from an input that requires grad instead. Flags are restored per module and per
    parameter, so a model with a frozen backbone in eval mode comes back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        yield next(model.parameters()).device
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grad_flags:
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- post-processing


def _minmax(maps: Tensor) -> Tensor:
    """Per-map (x - min) / (eps + max - min), exactly as `scale_cam_image`: zeros stay zeros."""
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (_EPS + maps.amax(dim=(-2, -1), keepdim=True))


def postprocess_cam(cams: Tensor, size: tuple[int, int]) -> Tensor:
    """pytorch-grad-cam's post-processing of raw (N, u, v) CAMs to (N, H, W) maps in [0, 1].

    ReLU, min-max, bilinear upsampling, min-max, as `BaseCAM` does for one target layer.
    torch's bilinear mode with `align_corners=False` uses the half-pixel centres and edge
    clamping of `cv2.resize(..., INTER_LINEAR)`; the two agree to float32 rounding.
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape (N, u, v), got {tuple(cams.shape)}")
    scaled = _minmax(cams.float().clamp_min(0))
    upsampled = F.interpolate(scaled[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return _minmax(upsampled[:, 0])


# --------------------------------------------------------------------------- Grad-CAM


def grad_cam(model: nn.Module, x: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """Grad-CAM maps (N, H, W) for class `targets[i]` of image `x[i]`, via pytorch-grad-cam.

    One `GradCAM` object serves every chunk of `batch_size` images (each new object adds
    hooks) and its hooks are released in `finally`, not by `with GradCAM(...)`, whose
    `__exit__` swallows IndexError. The input is given `requires_grad`, so the target
    layer's output carries a gradient even when the backbone is frozen (the library would
    otherwise find no gradient, or fail in `backward` if nothing requires grad).
    The library calls `model.zero_grad()`: any `.grad` on the parameters is cleared.
    """
    x = _check_images(x)
    targets = _check_class_indices("targets", targets, len(x), model.num_classes)
    batch_size = _check_batch_size(batch_size)
    with _explanation_mode(model):
        cam = GradCAM(model=model, target_layers=[model.target_layer])
        try:
            maps = [
                torch.from_numpy(
                    cam(
                        input_tensor=xb.detach().requires_grad_(True),
                        targets=[ClassifierOutputTarget(t) for t in tb.tolist()],
                    )
                )
                for xb, tb in zip(x.split(batch_size), targets.split(batch_size))
            ]
        finally:
            cam.activations_and_grads.release()
    return torch.cat(maps)


# --------------------------------------------------------------------------- Eigen-CAM


def _oriented_projection(activations: Tensor) -> Tensor:
    """Raw Eigen-CAM (B, u, v): projection of the centred (uv x K) activations on V[:, 0].

    Sign convention: the SVD fixes V[:, 0] only up to sign (LAPACK builds may return either),
    so each projection p is flipped to correlate positively with the channel-mean map m
    (the map uniform channel weights would give). The centred p has zero mean, so
    <p, m> = (s_1^2 / K) * sum_k V[k, 0]: the axis is oriented so that moving along it
    increases the total feature activation, i.e. the map highlights where the (ReLU)
    features fire rather than where they are silent. Unlike "flip if |min| > |max|" it does
    not depend on the skewness of p. The rule uses no class and stays class-agnostic.
    Exact ties (<p, m> = 0) fall back to |max| >= |min|.
    """
    b, _, u, v = activations.shape
    a = activations.flatten(2).transpose(1, 2).double()  # (B, uv, K)
    centred = a - a.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    proj = (centred @ vh[:, 0, :, None])[..., 0]  # (B, uv)
    score = (proj * a.mean(dim=2)).sum(dim=1)
    score = torch.where(score == 0, proj.amax(dim=1) + proj.amin(dim=1), score)
    sign = torch.where(score < 0, -1.0, 1.0).to(proj)
    return (sign[:, None] * proj).reshape(b, u, v).float()


def eigen_cam(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """Class-agnostic Eigen-CAM maps (N, H, W) with a fixed sign (`EIGENCAM_SIGN_CONVENTION`).

    Activations come from a forward hook without gradients; the SVD runs batched in torch
    on the model's device, in float64 so that near-equal singular values are separated
    as reliably as numpy's (which pytorch-grad-cam uses, one image at a time).
    """
    x = _check_images(x)
    batch_size = _check_batch_size(batch_size)
    captured: list[Tensor] = []
    handle = model.target_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    maps = []
    try:
        with _explanation_mode(model) as device, torch.no_grad():
            for xb in x.split(batch_size):
                model(xb.to(device))
                activations = captured.pop()
                if activations.ndim != 4:
                    raise ValueError(
                        "model.target_layer must output (N, K, u, v) feature maps, got shape "
                        f"{tuple(activations.shape)}"
                    )
                maps.append(postprocess_cam(_oriented_projection(activations), x.shape[-2:]).cpu())
    finally:
        handle.remove()
    return torch.cat(maps)


def explain(model: nn.Module, x: Tensor, method: str, targets: Tensor | None, batch_size: int) -> Tensor:
    """Maps (N, H, W) by `method` in METHODS; Eigen-CAM is class-agnostic and ignores `targets`."""
    if method == "gradcam":
        if targets is None:
            raise ValueError("targets must be given for method 'gradcam' (explicit classes, never argmax)")
        return grad_cam(model, x, targets, batch_size)
    if method == "eigencam":
        return eigen_cam(model, x, batch_size)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


# --------------------------------------------------------------------------- storage


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
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        _check_plain("meta", self.meta)

    def __len__(self) -> int:
        return len(self.maps)

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


def _full_meta(meta: dict[str, Any] | None, method: str, target: str) -> dict[str, Any]:
    auto: dict[str, Any] = {
        "method": method,
        "target_rule": target,
        "postprocessing": POSTPROCESSING,
        "versions": package_versions(),
    }
    if method == "eigencam":
        auto["sign_convention"] = EIGENCAM_SIGN_CONVENTION
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
) -> ExplanationSet:
    """Logits, predictions and maps for every image of `batches` ((x, y, image_id) batches).

    Each batch goes through the model once in eval mode without gradients for the logits;
    the explained class is the prediction (`target="predicted"`, the paper's rule) or the
    label (`"true"`); the maps are then computed in chunks of `batch_size`. `maps_dtype`
    float16 halves the file size (step 2^-11 near 1, enough for [0, 1] maps).
    """
    if target not in TARGET_RULES:
        raise ValueError(f"target must be one of {list(TARGET_RULES)}, got {target!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if maps_dtype not in MAP_DTYPES:
        raise ValueError(f"maps_dtype must be one of {[str(d) for d in MAP_DTYPES]}, got {maps_dtype}")
    meta = _full_meta(meta, method, target)
    parts: dict[str, list[Tensor]] = {name: [] for name in ("maps", "logits", *_INDEX_FIELDS)}
    for x, y, ids in tqdm(_as_batches(batches), desc=method, disable=not progress):
        x = _check_images(x)
        with _explanation_mode(model) as device, torch.no_grad():
            logits = model(x.to(device)).float().cpu()
        predictions = logits.argmax(dim=1)
        labels = _check_class_indices("y", torch.as_tensor(y), len(x), logits.shape[1])
        targets = predictions if target == "predicted" else labels
        parts["maps"].append(explain(model, x, method, targets, batch_size).to(maps_dtype))
        parts["logits"].append(logits)
        parts["image_ids"].append(torch.as_tensor(ids, dtype=torch.int64).reshape(-1))
        parts["labels"].append(labels)
        parts["predictions"].append(predictions)
        parts["targets"].append(targets)
    if not parts["maps"]:
        raise ValueError("batches must yield at least one (x, y, image_id) batch")
    return ExplanationSet(**{name: torch.cat(p) for name, p in parts.items()}, method=method, meta=meta)


# ----------------------------------------------------------------------------- stage

#: The two kinds of stored explanations: the test images, and one 2x2 mosaic per test image.
KINDS: tuple[str, ...] = ("test", "mosaics")


def explained_split(data: Dataset, cfg: ExplainConfig) -> ImageSplit:
    """The test images every model is explained on: class-balanced, the same for every loss and seed."""
    return data.test.subset(balanced_subset(data.test.labels, cfg.images_per_class, seed=0))


def normalised_images(split: ImageSplit, info: DatasetInfo) -> Tensor:
    """The unaugmented images of `split` in the models' input space."""
    return augment.normalize(split.images, info.mean, info.std)


def explained_mosaics(split: ImageSplit, info: DatasetInfo, seed: int) -> Mosaics:
    """The mosaic of every explained image (image i is the target of mosaic i), drawn from `seed`."""
    return make_mosaics(normalised_images(split, info), split.labels, seed)


def model_digest(dataset: str, loss: str, seed: int) -> str:
    """SHA-256 of the files that define the explained function (weights, and the probe for SupCon/TL)."""
    digest = hashlib.sha256()
    folder = model_dir(dataset, loss, seed)
    for name in ("model.pt", "probe.pt"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _batches(x: Tensor, labels: Tensor, ids: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], labels[start : start + batch_size], ids[start : start + batch_size]


def _is_current(path: Path, meta: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    stored = ExplanationSet.load(path).meta
    return all(stored.get(key) == value for key, value in meta.items())


def run_explanations(
    profile: str, dataset: str, seed: int, losses: Iterable[str], methods: Iterable[str] = METHODS, progress: bool = True
) -> pd.DataFrame:
    """05_explanations' work: the maps of every (loss, method, kind), computed once and stored.

    Test images are explained for their predicted class; mosaic i for the true class of
    its target image i. A file whose model, images and protocol match is reused, so a
    rerun (or an interrupted run) only computes what is missing. Returns one row per file.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    seed = check_seed(seed)
    settings = load_profile(profile).for_dataset(dataset)
    data, _ = load_prepared(dataset, profile)
    split = explained_split(data, settings.explain)
    inputs = {"test": normalised_images(split, data.info), "mosaics": explained_mosaics(split, data.info, seed).images}
    ids_digest = hashlib.sha256(split.ids.numpy().tobytes()).hexdigest()
    rows = []
    for loss in losses:
        model, _ = load_classifier(dataset, loss, seed, profile)
        # What must match for stored maps to be reused: model files, images and protocol (hashed once per model).
        source = {"profile": profile, "dataset": dataset, "seed": seed, "loss": loss,
                  "model_digest": model_digest(dataset, loss, seed), "image_ids_digest": ids_digest}
        for method, kind in itertools.product(methods, KINDS):
            path = explanation_path(dataset, loss, seed, method, kind)
            meta = source | {"kind": kind}
            start, reused = time.perf_counter(), _is_current(path, meta)
            if not reused:
                target = "predicted" if kind == "test" else "true"
                batches = _batches(inputs[kind], split.labels, split.ids, settings.explain.batch_size)
                compute_explanations(model, batches, method, target, batch_size=settings.explain.batch_size,
                                     meta=meta, progress=progress).save(path)
            seconds = time.perf_counter() - start
            rows.append({"loss": loss, "method": method, "kind": kind, "images": len(split), "reused": reused,
                         "seconds": round(seconds, 2), "images_per_s": None if reused else len(split) / seconds,
                         "file": str(path.relative_to(outputs_dir()))})
    return pd.DataFrame(rows)


def load_explanations(dataset: str, loss: str, seed: int, method: str, kind: str = "test") -> ExplanationSet:
    """Stored maps of one (model, method, kind), refusing maps of a model that has since changed."""
    check_choice("method", method, METHODS)
    check_choice("kind", kind, KINDS)
    path = explanation_path(dataset, loss, seed, method, kind)
    if not path.is_file():
        raise FileNotFoundError(f"no stored maps at {path}: run notebooks/05_explanations.ipynb for seed={seed} first")
    stored = ExplanationSet.load(path)
    if stored.meta.get("model_digest") != model_digest(dataset, loss, seed):
        raise ValueError(f"the maps in {path} were computed for another {loss!r} model: rerun notebooks/05_explanations.ipynb")
    return stored

