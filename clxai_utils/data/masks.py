"""Images with object masks, the input of the coherence facet (Pointing Game, Attribution Localisation).

Masks of a data set's own test images travel with them (`ImageSplit.masks`); a `MaskSet` holds
images with masks that come from elsewhere (CIFAR-10's real photographs, `realmask`), with
their keys and class names. Both use one encoding, so the coherence code is written once. A
mask pixel is 1 (object), 0 (background) or -1 (ignore: neither inside nor outside the object,
e.g. ImageNet-S's "annotators could not decide" label); sources without an ignore label simply
never use -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

OBJECT, BACKGROUND, IGNORE = 1, 0, -1


@dataclass
class MaskSet:
    """Images (N, 3, H, W) uint8 with masks (N, H, W) int8, labels into `classes`, stable ids and keys.

    `ids` are integers that name an image across runs and losses (so results pair up);
    `keys` are the same names as readable strings (e.g. ``cat/pet_12`` or
    ``n01443537/ILSVRC2012_val_00012345``).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    keys: tuple[str, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.keys, self.classes = tuple(self.keys), tuple(self.classes)
        n = len(self.keys)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[:2] != (n, 3):
            raise ValueError(
                f"images must be uint8 of shape ({n}, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.masks.dtype != torch.int8 or tuple(self.masks.shape) != (n, *self.images.shape[2:]):
            raise ValueError(
                f"masks must be int8 of shape {(n, *self.images.shape[2:])} (one per image, the images' size), "
                f"got {self.masks.dtype} {tuple(self.masks.shape)}"
            )
        if self.masks.numel() and not torch.isin(self.masks, torch.tensor([IGNORE, BACKGROUND, OBJECT])).all():
            raise ValueError(f"mask values must be {OBJECT} (object), {BACKGROUND} (background) or {IGNORE} (ignore)")
        for name in ("labels", "ids"):
            value = getattr(self, name)
            if value.dtype != torch.int64 or tuple(value.shape) != (n,):
                raise ValueError(f"{name} must be int64 of shape ({n},), got {value.dtype} {tuple(value.shape)}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"labels must index into the {len(self.classes)} classes {list(self.classes)}")
        if len(set(self.ids.tolist())) != n or len(set(self.keys)) != n:
            raise ValueError("ids and keys must be unique: each names one image")

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> MaskSet:
        """The images at `indices` (positions in this set), keeping their ids and keys."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return MaskSet(
            self.images[idx],
            self.masks[idx],
            self.labels[idx],
            self.ids[idx],
            tuple(self.keys[i] for i in idx.tolist()),
            self.classes,
        )
