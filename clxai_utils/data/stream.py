"""Training images streamed from disk: decode, RandomResizedCrop and flip per image, in DataLoader workers.

Why: ImageNet-S50's 64k full-size JPEGs do not fit the in-memory uint8 design used for
CIFAR-10, and cropping before resizing needs the full-resolution image. So only the
geometric ops run here, per image; the colour ops (jitter, grayscale, blur) run later on
whole batches with `clxai_utils.data.augment`, possibly on the GPU.

Randomness: the parameters of sample `index` in epoch `epoch` come from a generator seeded
with `mix_seed(seed, epoch, index)`, never from a worker's RNG, so the crops are the same
whatever the number of workers and whichever worker decodes which sample.

Decoding: PIL, crop then antialiased bilinear resize, exactly what torchvision's
RandomResizedCrop does on a PIL image. torchvision.io with torch's uint8 resize was about
20 % faster here (decode + RandomResizedCrop(224) + flip of ~400x350 JPEGs: ~460-500 against
~380-400 images/s on one core of this project's busy 2-core machine), but its decoders are
deprecated since torchvision 0.29 in favour of TorchCodec, which is not installed.
`clxai_utils.tools.throughput` measures the stream on any folder of images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clxai_utils.core.seeding import mix_seed
from clxai_utils.core.validate import check_number, check_positive_int, check_seed
from clxai_utils.data.augment import check_range, draw_flags, draw_resized_crop_boxes
from clxai_utils.data.geometry import EVAL_SIZE, check_eval_size
from clxai_utils.data.sources import load_eval_image, open_rgb

Records = Sequence[tuple[str | os.PathLike[str], int]]


def _as_records(records: Records) -> list[tuple[str, int]]:
    """Plain (path string, int label) pairs: cheap to send to every worker."""
    out = [(os.fspath(path), int(label)) for path, label in records]
    if not out:
        raise ValueError("records is empty: a dataset needs at least one (path, label) pair")
    return out


@runtime_checkable
class EpochDataset(Protocol):
    """A dataset whose random draws depend on the epoch."""

    def set_epoch(self, epoch: int) -> None: ...


class RandomResizedCropStream(Dataset):
    """(path, label) records -> (`views` independent RandomResizedCrop + flip views uint8 (V, 3, S, S), label).

    Like torchvision's RandomResizedCrop(size, scale, ratio, antialias=True) followed by
    RandomHorizontalFlip(flip_p), applied `views` times with independent parameters.
    """

    def __init__(
        self,
        records: Records,
        size: int = EVAL_SIZE,
        views: int = 1,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.records = _as_records(records)
        self.size = check_positive_int("size", size)
        self.views = check_positive_int("views", views)
        self.scale = check_range("scale", scale, 0.0, 1.0)
        self.ratio = check_range("ratio", ratio, 0.0)
        self.flip_p = check_number("flip_p", flip_p, 0.0, 1.0)
        self.seed = check_seed(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (set before the DataLoader starts its workers: they copy the dataset)."""
        self.epoch = check_seed(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.records[index]
        image = open_rgb(path)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        boxes = draw_resized_crop_boxes(self.views, image.height, image.width, self.scale, self.ratio, generator)
        flips = draw_flags(self.views, self.flip_p, generator)
        # filled with numpy, not torch: torch splits copies of this size over its intra-op threads,
        # which stalls on a busy machine when this runs in the main process (num_workers=0)
        out = np.empty((self.views, 3, self.size, self.size), dtype=np.uint8)
        for view, ((top, left, height, width), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
            crop = image.crop((left, top, left + width, top + height))
            crop = crop.resize((self.size, self.size), Image.Resampling.BILINEAR)
            out[view] = np.asarray(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop).transpose(2, 0, 1)
        return torch.from_numpy(out), label


class CenterCropStream(Dataset):
    """(path, label) records -> (image uint8 (3, S, S) resized and centre-cropped as for evaluation, label).

    No randomness: the features of a training split for the linear probe of contrastive models.
    """

    def __init__(self, records: Records, size: int = EVAL_SIZE, resize: int | None = None) -> None:
        self.records = _as_records(records)
        self.size, self.resize = check_eval_size(size, resize)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.records[index]
        return load_eval_image(path, self.size, self.resize), label


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    drop_last: bool = False,
    order: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader for one epoch: order = `order` if given (the trainer's, e.g. one rank's share), else a
    permutation seeded by (shuffle_seed, epoch), else file order.

    Sets the dataset's epoch first (workers copy the dataset when they start), so build one
    loader per epoch; `persistent_workers` keeps the workers between passes over the same
    loader (e.g. a feature extraction repeated). The loader gets its own generator, so
    iterating it does not consume the global torch RNG.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    epoch = check_seed(epoch)
    if isinstance(dataset, EpochDataset):
        dataset.set_epoch(epoch)
    n = len(dataset)  # type: ignore[arg-type]
    if order is None and shuffle_seed is None:
        order = list(range(n))
    elif order is None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(shuffle_seed or 0, epoch))).tolist()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(mix_seed(shuffle_seed or 0, epoch, 1)),
    )
