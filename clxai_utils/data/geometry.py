"""The evaluation crop of every data set: resize the short side, cut the centre square (torchvision's
Resize + CenterCrop, computed once so that an image and its mask share it exactly).

ImageNet's protocol resizes to 256 and crops 224; other sizes keep that ratio
(`default_resize`). A data set held in memory at its model size (an image folder of small
images) uses `resize == size`: the short side fits, nothing of it is cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clxai_utils.core.validate import check_positive_int

EVAL_SIZE, EVAL_RESIZE = 224, 256


@dataclass(frozen=True)
class EvalGeometry:
    """Resize to (height, width), then cut the `size` x `size` square at (top, left)."""

    height: int
    width: int
    top: int
    left: int
    size: int


def default_resize(size: int) -> int:
    """The short side before the centre crop: 256 for 224, the same ratio for other sizes."""
    return round(size * EVAL_RESIZE / EVAL_SIZE)


def check_eval_size(size: int, resize: int | None) -> tuple[int, int]:
    """(size, resize) with resize defaulted and resize >= size (the crop must lie inside the resized image)."""
    size = check_positive_int("size", size)
    resize = default_resize(size) if resize is None else check_positive_int("resize", resize)
    if resize < size:
        raise ValueError(f"resize={resize} must be >= size={size}: the crop must lie inside the resized image")
    return size, resize


def eval_geometry(width: int, height: int, size: int = EVAL_SIZE, resize: int | None = None) -> EvalGeometry:
    """torchvision's Resize(resize) + CenterCrop(size) for a `width` x `height` image, computed once.

    The long side is truncated (int), the crop offsets rounded half to even, as torchvision
    does, so the numbers match the standard ImageNet evaluation.
    """
    size, resize = check_eval_size(size, resize)
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    return EvalGeometry(new_h, new_w, int(round((new_h - size) / 2)), int(round((new_w - size) / 2)), size)


def nearest_source_indices(start: int, count: int, resized: int, original: int) -> np.ndarray:
    """Source pixel of output pixels start..start+count-1 when `original` pixels are resized to `resized`.

    Nearest neighbour with aligned pixel centres (PIL's NEAREST, torch's "nearest-exact"):
    floor((i + 0.5) * original / resized), in integers so that no rounding error moves a pixel.
    """
    i = np.arange(start, start + count, dtype=np.int64)
    return np.minimum((2 * i + 1) * original // (2 * resized), original - 1)


def to_chw_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a contiguous uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())


def resize_center_crop(image: Image.Image, size: int = EVAL_SIZE, resize: int | None = None) -> torch.Tensor:
    """Resize the short side to `resize` (antialiased bilinear) and cut the centre `size` x `size` square.

    PIL's bilinear resize filters over the whole footprint of an output pixel when it
    shrinks (antialiasing); this is torchvision's Resize + CenterCrop on a PIL image, exactly.
    """
    g = eval_geometry(image.width, image.height, size, resize)
    resized = image.resize((g.width, g.height), Image.Resampling.BILINEAR)
    return to_chw_tensor(resized.crop((g.left, g.top, g.left + size, g.top + size)))
