"""Units, their activations and the probe set: what every scorer of 10 reads.

A unit is one channel of a backbone stage, its activation on an image the channel's
spatial mean. For SupCon and triplet models the stage belongs to the backbone before the
projection head, so the three losses give units of the same kind; the default is the last
stage, `layer4`. The probe set is the run's test split, split once with a fixed seed into
70 % (positives and contrastive examples), 10 % spare and 20 % held out (faithfulness), and
the activations of all units on all of it are computed once per model and stored in the run.
Unit selection follows the CSP authors (`select_units`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clxai_utils.core.artifacts import load_torch, save_torch
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choice, check_number, check_positive_int, check_seed
from clxai_utils.data import augment
from clxai_utils.data.datasets import DatasetInfo
from clxai_utils.data.prepare import load_prepared
from clxai_utils.train.checkpoints import load_trained
from clxai_utils.train.models import Backbone
from clxai_utils.train.probe import check_profile

#: The backbone stages whose channels can be labelled, in forward order.
STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_LAYER = "layer4"
#: Shares of the probe set: positives and contrastive examples / spare / held out for faithfulness.
PROBE_FRACTIONS: dict[str, float] = {"select": 0.7, "spare": 0.1, "held_out": 0.2}
PROBE_SEED = 0
_FORMAT = "clxai.UnitActivations/1"


# --------------------------------------------------------------------------- activations


def backbone_of(model: nn.Module) -> Backbone:
    """The backbone whose stages hold the units: the model itself, or its `backbone` (projection head dropped)."""
    backbone = model if isinstance(model, Backbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"model must be a Backbone or hold one as `.backbone`, got {type(model).__name__}")
    return backbone


def check_layer(model: nn.Module, layer: Any) -> str:
    """`layer` if the model's backbone has that stage, else an error naming the parameter and the stages."""
    backbone = backbone_of(model)
    return check_choice("layer", layer, tuple(name for name in STAGES if hasattr(backbone, name)))


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes, values): the activations depend on nothing else.

    Unlike `explain.store.model_digest`, which covers the whole explained classifier, this
    leaves out the probe and the projection head, which do not change the units.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def stage_means(backbone: Backbone, x: Tensor, layer: str) -> Tensor:
    """(N, channels) spatial means of `layer`'s output; the stages after it are not run."""
    x = backbone.stem(x)
    for name in STAGES[: STAGES.index(layer) + 1]:
        x = getattr(backbone, name)(x)
    return x.mean(dim=(2, 3))


@torch.no_grad()
def unit_activations(
    model: nn.Module,
    images: Tensor,
    info: DatasetInfo,
    layer: str = DEFAULT_LAYER,
    *,
    batch_size: int = 256,
    compute: Compute | None = None,
    progress: bool = False,
) -> Tensor:
    """(N, units) activations of every unit of `layer` on `images` (uint8, or floats in [0, 1]), in batches.

    The backbone is moved to `compute.device` (None: `resolve_compute()`) and runs in eval mode
    (BatchNorm with its running statistics), then is put back on its device and in the mode it
    was in; the images are normalised with the data set's statistics first. Activations are
    float32 on every device whatever `compute.precision` (as they always were): they are
    ranked and thresholded unit by unit. They come back on the CPU.
    """
    layer = check_layer(model, layer)
    batch_size = check_positive_int("batch_size", batch_size)
    if not isinstance(images, Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {getattr(images, 'shape', images)!r}")
    device = compute_or_resolve(compute).device
    backbone = backbone_of(model)
    was_training, home = backbone.training, next(backbone.parameters()).device
    backbone.to(device).eval()
    batches = progress_bar(
        range(0, len(images), batch_size), desc=f"activations of {layer}", unit="batch", disable=not progress
    )
    try:
        parts = [
            stage_means(backbone, augment.normalize(images[s : s + batch_size].to(device), info.mean, info.std), layer)
            .float()
            .cpu()
            for s in batches
        ]
    finally:
        backbone.to(home).train(was_training)
    return torch.cat(parts)


@dataclass(frozen=True)
class UnitActivations:
    """Activations (images x units) of one model's layer on the probe set, with the images' ids and labels."""

    activations: Tensor
    image_ids: Tensor
    labels: Tensor
    layer: str
    meta: dict[str, Any]
    seconds: float | None = None  # duration of the forward pass; None when reloaded from the run

    @property
    def images_per_s(self) -> float | None:
        """Throughput of the activation pass (None when the stored activations were reused)."""
        return None if self.seconds is None else len(self.image_ids) / self.seconds


def stored_activations(
    path: str | Path, meta: dict[str, Any], image_ids: Tensor, labels: Tensor, compute: Callable[[], Tensor]
) -> UnitActivations:
    """The activations at `path` if they were stored under exactly `meta`, else `compute()` saved there atomically.

    `meta` says what the activations depend on (model weights, images, layer) and names the `layer`.
    """
    path = Path(path)
    if path.is_file():
        stored = load_torch(path)
        recorded = stored.get("meta")
        if isinstance(recorded, dict) and "device" in meta:
            recorded = {"device": "cpu"} | recorded  # activations stored before the device was recorded: CPU
        if stored.get("format") == _FORMAT and recorded == meta and torch.equal(stored["image_ids"], image_ids):
            return UnitActivations(stored["activations"], stored["image_ids"], stored["labels"], meta["layer"], meta)
    start = time.perf_counter()
    activations = compute()
    seconds = time.perf_counter() - start
    if activations.shape[0] != len(image_ids):
        raise ValueError(f"compute() gave activations for {activations.shape[0]} images, expected {len(image_ids)}")
    payload = {"format": _FORMAT, "activations": activations, "image_ids": image_ids, "labels": labels, "meta": meta}
    save_torch(path, payload)
    return UnitActivations(activations, image_ids, labels, meta["layer"], meta, seconds)


def run_activations(
    run: Run,
    loss: str,
    layer: str = DEFAULT_LAYER,
    *,
    batch_size: int = 256,
    compute: Compute | None = None,
    progress: bool = True,
) -> UnitActivations:
    """The activations of every unit of `layer` of the run's `loss` model on its test split, computed once.

    Computed on `compute.device` (None: `resolve_compute()`), in float32 (`unit_activations`).
    Stored in `run.neuron_activations_path(loss, layer)` and reused while the model's weights,
    the test images and the device type are unchanged.
    """
    compute = compute_or_resolve(compute)
    out_dir = run.model_dir(loss)
    model, _, identity = load_trained(out_dir)
    check_profile(identity, run.profile, out_dir)
    layer = check_layer(model, layer)
    data, _ = load_prepared(run)
    test = data.test
    meta = {
        "dataset": run.dataset,
        "profile": run.profile,
        "seed": run.seed,
        "loss": loss,
        "layer": layer,
        "backbone_digest": weights_digest(backbone_of(model)),
        "image_ids_digest": hashlib.sha256(test.ids.numpy().tobytes()).hexdigest(),
        "device": compute.device.type,
    }

    def activations() -> Tensor:
        return unit_activations(
            model, test.images, data.info, layer, batch_size=batch_size, compute=compute, progress=progress
        )

    return stored_activations(run.neuron_activations_path(loss, layer), meta, test.ids, test.labels, activations)


# --------------------------------------------------------------------------- probe set and unit selection


@dataclass(frozen=True)
class ProbeSplit:
    """Sorted positions into the probe set: `select` (positives, contrastive examples), `spare`, `held_out`."""

    select: Tensor
    spare: Tensor
    held_out: Tensor


def probe_split(n_images: int, seed: int = PROBE_SEED) -> ProbeSplit:
    """The 70 / 10 / 20 % split of `n_images` probe images, the same for every model (own generator)."""
    n_images = check_positive_int("n_images", n_images)
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(check_seed(seed)))
    n_select = round(PROBE_FRACTIONS["select"] * n_images)
    n_held = round(PROBE_FRACTIONS["held_out"] * n_images)
    if n_select == 0 or n_held < 2:
        raise ValueError(f"n_images={n_images} is too small: the split needs images to select from and 2 held out")
    parts = order[:n_select], order[n_select : n_images - n_held], order[n_images - n_held :]
    return ProbeSplit(*(part.sort().values for part in parts))


def check_activations(activations: Any) -> Tensor:
    """A finite (images, units) float tensor with at least one image and one unit."""
    if not isinstance(activations, Tensor) or activations.ndim != 2 or 0 in activations.shape:
        raise ValueError(
            f"activations must be a non-empty (images, units) tensor, got {getattr(activations, 'shape', activations)!r}"
        )
    if not activations.is_floating_point() or not torch.isfinite(activations).all():
        raise ValueError("activations must hold finite floating-point values")
    return activations


def check_count(name: str, value: Any, n_images: int) -> int:
    """A count of images (>= 1) that the probe images can supply."""
    value = check_positive_int(name, value)
    if value > n_images:
        raise ValueError(f"{name}={value} exceeds the {n_images} probe images: pass {name} <= {n_images}")
    return value


def select_units(
    activations: Tensor,
    n_units: int = 200,
    top_count: int = 100,
    min_firing: int = 100,
    firing_threshold: float = 1e-6,
) -> Tensor:
    """Indices of the units to label, best first (the CSP authors' rule).

    Units that exceed `firing_threshold` on fewer than `min_firing` images are dropped; the
    rest are ranked by the mean of their `top_count` largest activations and the first
    `n_units` kept (all of them in a smaller layer).
    """
    activations = check_activations(activations)
    n_images = activations.shape[0]
    n_units = check_positive_int("n_units", n_units)
    top_count = check_count("top_count", top_count, n_images)
    min_firing = check_count("min_firing", min_firing, n_images)
    firing_threshold = check_number("firing_threshold", firing_threshold)
    live = (activations > firing_threshold).sum(0) >= min_firing
    if not live.any():
        raise ValueError(
            f"no unit exceeds firing_threshold={firing_threshold} on min_firing={min_firing} of the {n_images} images"
        )
    strength = activations.topk(top_count, dim=0).values.mean(0).masked_fill(~live, -torch.inf)
    order = strength.argsort(descending=True, stable=True)
    return order[: min(n_units, int(live.sum()))]


def top_positives(activations: Tensor, n: int, name: str = "n_positives") -> tuple[Tensor, Tensor]:
    """(values, image indices), each (units, n): every unit's `n` most activating images, in descending order.

    `name` is the caller's parameter, named in the error when `n` is not a count the images allow.
    """
    activations = check_activations(activations)
    n = check_count(name, n, activations.shape[0])
    values, indices = activations.sort(dim=0, descending=True, stable=True)
    return values[:n].T.contiguous(), indices[:n].T.contiguous()
