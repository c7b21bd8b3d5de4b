"""2x2 mosaics: object masks for coherence metrics on CIFAR-10, which has none.

Mosaic i is built around test image i: it is placed in a random quadrant (the "object
mask") next to three test images of three other classes, all four classes distinct. The
explained class is the true class of image i, so the Pointing Game and Attribution
Localisation ask whether the map of that class points at image i's quadrant. Distinct
classes matter: with a repeated class, attribution on the other tile of that class would be
right, yet counted as outside the mask. One mosaic per image attaches the coherence scores
to that image, so they pair across losses by image id like every other metric; the analysis
scores only images the model classifies correctly on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from clxai_utils.core.validate import check_seed

#: Tile order inside a mosaic, as indices 0..3 (row-major).
QUADRANTS = ("TL", "TR", "BL", "BR")


@dataclass(frozen=True)
class Mosaics:
    """One mosaic per image of an (N, C, H, W) batch; `source_index` points into that batch."""

    images: Tensor  # (N, C, 2H, 2W), same (normalised) space as the input images
    masks: Tensor  # (N, 1, 2H, 2W) bool, True on the quadrant of the target image
    target_class: Tensor  # (N,) long, true class of the target image = the class to explain
    target_quadrant: Tensor  # (N,) long in 0..3, index into QUADRANTS
    source_index: Tensor  # (N, 4) long, input index of the tiles in QUADRANTS order; row i holds i

    def __len__(self) -> int:
        return self.images.shape[0]


def _draw_companions(labels: Tensor, generator: torch.Generator) -> Tensor:
    """(N, 3) input indices: for image i, one random image from each of three random classes other than its own."""
    classes, counts = torch.unique(labels, return_counts=True)
    if classes.numel() < 4:
        raise ValueError(f"labels must contain at least 4 distinct classes, got {classes.tolist()}")
    own = torch.searchsorted(classes, labels)
    # Ranking i.i.d. uniforms gives a uniform random order; the own class is pushed last,
    # so the first three entries are a uniform 3-subset of the other classes.
    scores = torch.rand(len(labels), classes.numel(), generator=generator)
    scores[torch.arange(len(labels)), own] = 2.0
    picked = scores.argsort(dim=1)[:, :3]
    by_class = torch.argsort(labels, stable=True)  # input indices grouped by class, classes ascending
    starts = torch.cumsum(counts, dim=0) - counts
    offset = (torch.rand(len(labels), 3, generator=generator) * counts[picked]).long()
    offset = torch.minimum(offset, counts[picked] - 1)  # guards rand() * count rounding up to count
    return by_class[starts[picked] + offset]


def _tile(tiles: Tensor) -> Tensor:
    """(M, 4, C, H, W) tiles in QUADRANTS order -> (M, C, 2H, 2W) images."""
    m, _, c, h, w = tiles.shape
    return tiles.view(m, 2, 2, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(m, c, 2 * h, 2 * w)


def make_mosaics(images: Tensor, labels: Tensor, seed: int) -> Mosaics:
    """One 2x2 mosaic per image, image i in a random quadrant of mosaic i; fully determined by `seed`.

    Companions and quadrants are drawn with a private `torch.Generator` (the global RNG is
    untouched), so the same (images, labels, seed) always give the same mosaics, for every
    model explained on them. Companion images are reused across mosaics.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', images)}")
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer tensor of shape ({images.shape[0]},), got {getattr(labels, 'shape', labels)!r}"
        )
    seed = check_seed(seed)

    generator = torch.Generator().manual_seed(seed)
    labels_cpu = labels.cpu().long()
    n = len(labels_cpu)
    companions = _draw_companions(labels_cpu, generator)
    target_quadrant = torch.randint(0, 4, (n,), generator=generator)
    # Quadrant q holds the target; the companions fill the other three quadrants in order.
    slot = torch.arange(4).expand(n, 4)
    companion_slot = (slot - (slot > target_quadrant[:, None]).long()).clamp(max=2)
    source_index = torch.where(
        slot == target_quadrant[:, None], torch.arange(n)[:, None], companions.gather(1, companion_slot)
    )

    _, _, h, w = images.shape
    quadrant_on = torch.nn.functional.one_hot(target_quadrant, 4).bool()
    masks = quadrant_on.view(n, 1, 2, 1, 2, 1).expand(-1, -1, -1, h, -1, w).reshape(n, 1, 2 * h, 2 * w)
    device = images.device
    return Mosaics(
        images=_tile(images[source_index.to(device)]),
        masks=masks.to(device),
        target_class=labels_cpu.to(device),
        target_quadrant=target_quadrant.to(device),
        source_index=source_index.to(device),
    )
