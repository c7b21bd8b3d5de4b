"""Test data: generated stand-ins for ImageNet-S50 and ImageNet-1k in their official layouts, and result-table blocks.

ImageNet cannot be reached from the project's machines, so the readers are tested on trees
that look like the real ones: the same folders and file names, JPEGs of varied non-square
sizes, and RGB masks with id = R + 256 G, ignore pixels (1000) on object borders and one mask
with a second class's object. The images are learnable: the class sets the background colour
and stripe direction, and an object blob sits exactly where the mask says.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clxai_utils.core.registry import METRICS
from clxai_utils.data.imagenet_s import IGNORE_ID, IMAGENET_S50_WNIDS, OTHER_ID, mask_class_id

# class ids 1, 3, 11 and 50: labels (0..3) and mask class ids differ, as in any subset of the 50
FIXTURE_WNIDS = tuple(IMAGENET_S50_WNIDS[i] for i in (0, 2, 10, 49))
NOT_S50_WNID = "n01440764"  # tench, ImageNet-1k index 0: not among the 50

#: The losses of the smoke run that the stage tests share (the `run` fixture of tests/conftest.py).
SMOKE_LOSSES = ["ce", "supcon"]

Blob = tuple[int, float, float, float, float]  # class id, centre y, centre x, radius y, radius x


def _colour(class_id: int, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.7, value))


def _radius(shape: tuple[int, int], blob: Blob) -> np.ndarray:
    """Elliptic radius of every pixel from the blob's centre (1 on its outline)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    _, cy, cx, ry, rx = blob
    return np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)


def _draw(rng: np.random.Generator, class_id: int, shape: tuple[int, int], blobs: Sequence[Blob]) -> np.ndarray:
    """An RGB uint8 image: class-coloured stripes with noise, and a checkered object per blob."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    stripes = ((xx * np.cos(class_id) + yy * np.sin(class_id)) // 6 % 2)[..., None]
    img = 0.6 * _colour(class_id, 0.6) + 0.15 * stripes + 0.08 * rng.standard_normal((*shape, 3))
    checker = ((yy // 4 + xx // 4) % 2)[..., None]
    for blob in blobs:
        inside = _radius(shape, blob) <= 1.0
        obj = _colour(blob[0] + 25, 0.95) * (0.8 + 0.2 * checker)
        img[inside] = obj[inside]
    return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _encode_mask(shape: tuple[int, int], blobs: Sequence[Blob], ignore_border: bool) -> np.ndarray:
    """The RGB mask of `blobs` (R + 256 G = class id), optionally with an ignore ring on each outline."""
    ids = np.full(shape, OTHER_ID, dtype=np.int32)
    for blob in blobs:
        radius = _radius(shape, blob)
        ids[radius <= 1.0] = blob[0]
        if ignore_border:
            ids[np.abs(radius - 1.0) <= 0.15] = IGNORE_ID
    return np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)


def _shape(rng: np.random.Generator, side_range: tuple[int, int]) -> tuple[int, int]:
    """A (height, width) with sides in `side_range`, never square (ImageNet images rarely are)."""
    height, width = (int(v) for v in rng.integers(side_range[0], side_range[1] + 1, size=2))
    return height, width + 1 if width == height else width


def _blob(rng: np.random.Generator, class_id: int, shape: tuple[int, int], x_span: tuple[float, float]) -> Blob:
    """A blob inside the image, its centre within the horizontal fraction `x_span` of the width."""
    height, width = shape
    ry = height * rng.uniform(0.15, 0.3)
    rx = width * rng.uniform(0.1, 0.2)
    cy = rng.uniform(ry + 1, height - ry - 1)
    cx = rng.uniform(max(rx + 1, x_span[0] * width), min(width - rx - 1, x_span[1] * width))
    return class_id, cy, cx, ry, rx


def _write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=90)


def write_imagenet_s50_fixture(
    root: str | Path,
    wnids: Sequence[str] = FIXTURE_WNIDS,
    train_per_class: int = 6,
    semi_per_class: int = 2,
    val_per_class: int = 3,
    seed: int = 0,
) -> Path:
    """Write ``root/ImageNetS50/`` in the official layout and return it.

    One validation mask of the first wnid also holds an object of the second wnid (at least
    two wnids are needed); alternate masks have an ignore ring (1000) around their objects.
    """
    for wnid in wnids:
        mask_class_id(wnid)  # refuses a wnid outside the 50
    if len(wnids) < 2:
        raise ValueError(f"wnids must name at least 2 of the 50 classes, got {list(wnids)}")
    base = Path(root) / "ImageNetS50"
    rng = np.random.default_rng(seed)
    val_numbers = iter(rng.choice(np.arange(1, 50_001), size=len(wnids) * val_per_class, replace=False))
    for position, wnid in enumerate(wnids):
        class_id = mask_class_id(wnid)
        train_numbers = rng.choice(np.arange(1, 1301), size=train_per_class + semi_per_class, replace=False)
        for i, number in enumerate(train_numbers):
            split = "train" if i < train_per_class else "train-semi"
            shape = _shape(rng, (90, 180))
            blobs = [_blob(rng, class_id, shape, (0.0, 1.0))]
            _write_image(base / split / wnid / f"{wnid}_{number}.JPEG", _draw(rng, class_id, shape, blobs))
            if split == "train-semi":
                _write_image(
                    base / "train-semi-segmentation" / wnid / f"{wnid}_{number}.png",
                    _encode_mask(shape, blobs, i % 2 == 0),
                )
        for i in range(val_per_class):
            stem = f"ILSVRC2012_val_{next(val_numbers):08d}"
            shape = _shape(rng, (90, 180))
            if position == 0 and i == 0:
                other = mask_class_id(wnids[1])
                blobs = [_blob(rng, class_id, shape, (0.0, 0.25)), _blob(rng, other, shape, (0.75, 1.0))]
            else:
                blobs = [_blob(rng, class_id, shape, (0.0, 1.0))]
            _write_image(base / "validation" / wnid / f"{stem}.JPEG", _draw(rng, class_id, shape, blobs))
            _write_image(
                base / "validation-segmentation" / wnid / f"{stem}.png", _encode_mask(shape, blobs, i % 2 == 1)
            )
    return base


def write_imagenet1k_fixture(
    root: str | Path,
    wnids: Sequence[str] = (IMAGENET_S50_WNIDS[2], IMAGENET_S50_WNIDS[10], NOT_S50_WNID),
    per_class: tuple[int, int] = (3, 2),
    seed: int = 0,
) -> Path:
    """Write an ImageNet-1k image-folder tree ``root/{train,val}/<wnid>/*.JPEG`` and return `root`.

    The default mixes two of the 50 wnids with one that is not among them (the filter must drop it).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for position, wnid in enumerate(wnids):
        for split, count in zip(("train", "val"), per_class):
            for i in range(count):
                shape = _shape(rng, (90, 180))
                stem = f"{wnid}_{i + 1}" if split == "train" else f"ILSVRC2012_val_{position * count + i + 1:08d}"
                blobs = [_blob(rng, position + 1, shape, (0.0, 1.0))]
                _write_image(root / split / wnid / f"{stem}.JPEG", _draw(rng, position + 1, shape, blobs))
    return root


def write_jpeg_folder(
    root: str | Path,
    count: int = 200,
    width_range: tuple[int, int] = (380, 420),
    height_range: tuple[int, int] = (330, 370),
    seed: int = 0,
) -> Path:
    """Write `count` JPEGs of about ImageNet's typical size (~400x350) for measuring decoding throughput."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (
            int(rng.integers(height_range[0], height_range[1] + 1)),
            int(rng.integers(width_range[0], width_range[1] + 1)),
        )
        class_id = i % 50 + 1
        _write_image(root / f"img_{i:05d}.JPEG", _draw(rng, class_id, shape, [_blob(rng, class_id, shape, (0.0, 1.0))]))
    return root


def facets_block(
    seed: int,
    loss: str,
    method: str,
    metrics: dict[str, Sequence[float]],
    profile: str = "quick",
    dataset: str = "cifar10",
) -> pd.DataFrame:
    """One (seed, loss, method) block of a facets table in the 06_metrics schema; unset metrics are NaN."""
    n = len(next(iter(metrics.values())))
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "profile": profile,
            "seed": seed,
            "loss": loss,
            "method": method,
            "image_id": np.arange(n),
            "label": np.arange(n) % 10,
            "prediction": np.arange(n) % 10,
            "correct": True,
            "map_all_zero": False,
        }
    )
    for metric in METRICS:
        frame[metric] = metrics.get(metric, np.full(n, np.nan))
    return frame


def accuracy_block(
    seed: int, accuracy: dict[str, float], profile: str = "quick", dataset: str = "cifar10"
) -> pd.DataFrame:
    """One seed's rows of the accuracy table in the 04_linear_probe schema (100 test images each)."""
    return pd.DataFrame(
        [
            {
                "dataset": dataset,
                "profile": profile,
                "loss": loss,
                "seed": seed,
                "head": "linear",
                "test_images": 100,
                "accuracy": acc,
            }
            for loss, acc in accuracy.items()
        ]
    )
