"""2x2 mosaics: object masks for coherence metrics on CIFAR-10, which has none.

A mosaic tiles four test images of four different classes; the explained class is the
true class of one tile, so that tile's quadrant is the "object mask" against which the
Pointing Game and Attribution Localisation score the map. Distinct classes matter: with
a repeated class, attribution on the other tile of that class would be right, yet
counted as outside the mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Tile order inside a mosaic, as indices 0..3 (row-major).
QUADRANTS = ("TL", "TR", "BL", "BR")


@dataclass(frozen=True)
class Mosaics:
    """M mosaics built from an (N, C, H, W) batch; `source_index` points into that batch."""

    images: Tensor  # (M, C, 2H, 2W), same (normalised) space as the input images
    masks: Tensor  # (M, 1, 2H, 2W) bool, True on the target quadrant
    target_class: Tensor  # (M,) long, true class of the target tile = the class to explain
    target_quadrant: Tensor  # (M,) long in 0..3, index into QUADRANTS
    source_index: Tensor  # (M, 4) long, input index of the tiles in QUADRANTS order

    def __len__(self) -> int:
        return self.images.shape[0]


def _draw_tiles(labels: Tensor, n_mosaics: int, generator: torch.Generator) -> Tensor:
    """(M, 4) input indices: four distinct classes per row (random order), one random image of each."""
    classes, counts = torch.unique(labels, return_counts=True)
    if classes.numel() < 4:
        raise ValueError(f"labels must contain at least 4 distinct classes, got {classes.tolist()}")
    # Ranking i.i.d. uniforms gives a uniform random permutation; its first four entries
    # are a uniform 4-subset of the classes in uniform random order.
    picked = torch.rand(n_mosaics, classes.numel(), generator=generator).argsort(dim=1)[:, :4]
    by_class = torch.argsort(labels, stable=True)  # input indices grouped by class, classes ascending
    starts = torch.cumsum(counts, dim=0) - counts
    offset = (torch.rand(n_mosaics, 4, generator=generator) * counts[picked]).long()
    offset = torch.minimum(offset, counts[picked] - 1)  # guards rand() * count rounding up to count
    return by_class[starts[picked] + offset]


def _tile(tiles: Tensor) -> Tensor:
    """(M, 4, C, H, W) tiles in QUADRANTS order -> (M, C, 2H, 2W) images."""
    m, _, c, h, w = tiles.shape
    return tiles.view(m, 2, 2, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(m, c, 2 * h, 2 * w)


def make_mosaics(images: Tensor, labels: Tensor, n_mosaics: int, seed: int) -> Mosaics:
    """Build `n_mosaics` 2x2 mosaics of four different classes, fully determined by `seed`.

    Tiles, their quadrants and the target quadrant are drawn with a private
    `torch.Generator` (the global RNG is untouched), so the same (images, labels,
    n_mosaics, seed) always give the same mosaics. Images are reused across mosaics.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', images)}")
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer tensor of shape ({images.shape[0]},), got {getattr(labels, 'shape', labels)!r}"
        )
    if isinstance(n_mosaics, bool) or not isinstance(n_mosaics, int) or n_mosaics < 1:
        raise ValueError(f"n_mosaics must be an integer >= 1, got {n_mosaics!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")

    generator = torch.Generator().manual_seed(seed)
    labels_cpu = labels.cpu().long()
    source_index = _draw_tiles(labels_cpu, n_mosaics, generator)
    target_quadrant = torch.randint(0, 4, (n_mosaics,), generator=generator)
    target_class = labels_cpu[source_index].gather(1, target_quadrant[:, None]).squeeze(1)

    _, _, h, w = images.shape
    quadrant_on = torch.nn.functional.one_hot(target_quadrant, 4).bool()
    masks = quadrant_on.view(n_mosaics, 1, 2, 1, 2, 1).expand(-1, -1, -1, h, -1, w)
    masks = masks.reshape(n_mosaics, 1, 2 * h, 2 * w)
    device = images.device
    return Mosaics(
        images=_tile(images[source_index.to(device)]),
        masks=masks.to(device),
        target_class=target_class.to(device),
        target_quadrant=target_quadrant.to(device),
        source_index=source_index.to(device),
    )


def target_correct(mosaics: Mosaics, tile_predictions: Tensor) -> Tensor:
    """Bool (M,): the model, shown the target tile alone, predicts its true class.

    `tile_predictions` are the model's predictions on the N input images the mosaics
    were built from. Keeping only these mosaics scores coherence where the model is known
    to recognise the target object, so a misrecognised tile does not count against the map.
    """
    if not isinstance(tile_predictions, Tensor) or tile_predictions.dim() != 1:
        raise ValueError("tile_predictions must be a 1-D tensor of predictions on the mosaics' input images")
    if len(tile_predictions) <= int(mosaics.source_index.max()):
        raise ValueError(
            f"tile_predictions has {len(tile_predictions)} entries but the mosaics use input index "
            f"{int(mosaics.source_index.max())}"
        )
    source = mosaics.source_index.to(tile_predictions.device)
    target_tile = source.gather(1, mosaics.target_quadrant.to(source.device)[:, None]).squeeze(1)
    return tile_predictions[target_tile] == mosaics.target_class.to(tile_predictions.device)
