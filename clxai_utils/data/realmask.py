"""Real photographs with object masks in CIFAR-10 classes (the realmask32 archive, given as mask_source).

Why: the coherence facet of CIFAR-10 models is otherwise scored only on synthetic 2x2
mosaics; these 32x32 crops of segmentation data sets (MSRC-v2, SYSU-Shapes, Weizmann
Horses, Oxford-IIIT Pet) give it real objects with real masks. The layout is

    realmask32/<class>/<key>.png        RGB image
    realmask32/<class>/<key>_mask.png   1-bit mask, 1 = the object
    realmask32/selection.csv            provenance (not needed to load)

Images and masks are paired by key, never by position. The result is a `MaskSet` like the
ImageNet-S50 validation masks (without ignore pixels), labelled in the model's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clxai_utils.data.masks import MaskSet
from clxai_utils.data.sources import ARCHIVE_SUFFIXES, DataError, extract_archive

MASK_SUFFIX = "_mask.png"


def _class_folders(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))


def find_realmask_root(folder: Path) -> Path:
    """The folder holding the class folders: `folder` or its only subfolder (e.g. realmask32/)."""
    children = _class_folders(folder)
    for candidate in [folder, *(children if len(children) == 1 else [])]:
        if any(any(c.glob(f"*{MASK_SUFFIX}")) for c in _class_folders(candidate)):
            return candidate
    raise DataError(
        f"no mask set in {folder}: expected <class>/<key>.png images with <class>/<key>{MASK_SUFFIX} masks "
        "(or one folder such as realmask32/ holding them)"
    )


def _read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image (H, W, 3) uint8 and its mask (H, W) int8 of 0/1, both of the same size."""
    try:
        with Image.open(image_path) as img:
            image = np.asarray(img.convert("RGB"))
        with Image.open(mask_path) as msk:
            mask = np.asarray(msk.convert("L"))
    except OSError as err:
        raise DataError(f"cannot read {image_path} or its mask: {err}") from err
    if not np.isin(mask, (0, 255)).all():
        raise DataError(f"mask {mask_path} is not binary; expected a 1-bit PNG (1 = object)")
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    return image, (mask > 0).astype(np.int8)


def _list_pairs(root: Path, classes: tuple[str, ...]) -> list[tuple[str, Path, Path]]:
    """(``<class>/<key>``, image, mask) of every image, sorted by ``<class>/<key>``; orphans are errors."""
    pairs: list[tuple[str, Path, Path]] = []
    for folder in _class_folders(root):
        if folder.name not in classes:
            raise DataError(
                f"class folder {folder} is not one of the model's classes {list(classes)}; "
                "remove it or pass the classes the model was trained on"
            )
        pngs = [p for p in folder.glob("*.png") if not p.name.startswith(".")]
        masks = {p.name.removesuffix(MASK_SUFFIX): p for p in pngs if p.name.endswith(MASK_SUFFIX)}
        images = {p.stem: p for p in pngs if not p.name.endswith(MASK_SUFFIX)}
        if orphans := sorted(masks.keys() - images.keys()):
            raise DataError(f"mask {masks[orphans[0]]} has no image {folder / orphans[0]}.png (pairs share the key)")
        if orphans := sorted(images.keys() - masks.keys()):
            raise DataError(f"image {images[orphans[0]]} has no mask {folder / orphans[0]}{MASK_SUFFIX}")
        pairs.extend((f"{folder.name}/{key}", images[key], masks[key]) for key in images)
    if not pairs:
        raise DataError(f"{root} holds no image with a mask")
    return sorted(pairs)


def load_realmask(source: str | Path, classes: Sequence[str]) -> MaskSet:
    """Read the real-photo mask set from a folder or a .tar.gz archive, labelled in `classes` (the model's order).

    ids are positions in the sorted list of ``<class>/<key>`` (stable for the same archive);
    keys are those strings.
    """
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes must be the model's distinct class names in label order, got {list(classes)}")
    path = Path(source)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        path = extract_archive(path)
    elif not path.is_dir():
        raise DataError(f"mask set source {source} is neither a folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")
    pairs = _list_pairs(find_realmask_root(path), classes)
    decoded = [_read_pair(image, mask) for _, image, mask in pairs]
    for (_, image_path, _), (image, _) in zip(pairs, decoded):
        if image.shape != decoded[0][0].shape:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} pixels but {pairs[0][1]} is "
                f"{decoded[0][0].shape[1]}x{decoded[0][0].shape[0]}; a mask set has one image size"
            )
    keys = tuple(key for key, _, _ in pairs)
    return MaskSet(
        images=torch.from_numpy(np.stack([image for image, _ in decoded]).transpose(0, 3, 1, 2).copy()),
        masks=torch.from_numpy(np.stack([mask for _, mask in decoded])),
        labels=torch.tensor([classes.index(key.split("/")[0]) for key in keys], dtype=torch.int64),
        ids=torch.arange(len(keys), dtype=torch.int64),
        keys=keys,
        classes=classes,
    )
