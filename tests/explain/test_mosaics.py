"""Mosaics: one per image, class constraint, tile placement, masks and determinism."""

from __future__ import annotations

import pytest
import torch

from clxai_utils.explain.mosaics import make_mosaics

H, W, C = 4, 5, 3  # non-square tiles catch swapped axes


def _dataset(n: int = 60, n_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g), torch.arange(n) % n_classes


def test_image_i_is_the_target_of_mosaic_i_among_four_distinct_classes():
    images, labels = _dataset()
    m = make_mosaics(images, labels, seed=0)
    assert len(m) == 60
    target_tile = m.source_index.gather(1, m.target_quadrant[:, None]).squeeze(1)
    assert torch.equal(target_tile, torch.arange(60))
    assert torch.equal(m.target_class, labels)
    tile_classes = labels[m.source_index]
    assert all(len(set(row.tolist())) == 4 for row in tile_classes)
    assert set(m.target_quadrant.tolist()) == {0, 1, 2, 3}


def test_tiles_are_placed_at_their_quadrant():
    images, labels = _dataset()
    m = make_mosaics(images, labels, seed=1)
    assert m.images.shape == (60, C, 2 * H, 2 * W)
    corners = {0: (0, 0), 1: (0, W), 2: (H, 0), 3: (H, W)}  # TL, TR, BL, BR
    for i in range(len(m)):
        for q, (top, left) in corners.items():
            tile = m.images[i, :, top : top + H, left : left + W]
            assert torch.equal(tile, images[m.source_index[i, q]])


def test_mask_covers_exactly_the_target_quadrant():
    images, labels = _dataset()
    m = make_mosaics(images, labels, seed=2)
    assert m.masks.shape == (60, 1, 2 * H, 2 * W) and m.masks.dtype == torch.bool
    assert torch.all(m.masks.float().mean(dim=(1, 2, 3)) == 0.25)
    for i in range(len(m)):
        q = int(m.target_quadrant[i])
        expected = torch.zeros(2 * H, 2 * W, dtype=torch.bool)
        expected[(q // 2) * H : (q // 2 + 1) * H, (q % 2) * W : (q % 2 + 1) * W] = True
        assert torch.equal(m.masks[i, 0], expected)


def test_deterministic_per_seed_and_independent_of_global_rng():
    images, labels = _dataset()
    torch.manual_seed(123)
    a = make_mosaics(images, labels, seed=7)
    torch.manual_seed(999)
    b = make_mosaics(images, labels, seed=7)
    c = make_mosaics(images, labels, seed=8)
    for field in ("images", "masks", "target_class", "target_quadrant", "source_index"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.source_index, c.source_index)
    assert not torch.equal(a.target_quadrant, c.target_quadrant)


def test_companion_draw_is_roughly_uniform():
    """Companion classes: uniform over the 9 other classes; quadrants uniform; images of a class used evenly."""
    images, labels = _dataset(n=4000, n_classes=10)
    m = make_mosaics(images, labels, seed=3)
    companions = labels[m.source_index].flatten()  # 4 tiles per mosaic, one is the target
    per_class = torch.bincount(companions, minlength=10).double() / 4000
    assert torch.allclose(per_class, torch.full((10,), 0.4, dtype=torch.float64), atol=0.03)
    per_quadrant = torch.bincount(m.target_quadrant, minlength=4).double() / 4000
    assert torch.allclose(per_quadrant, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)
    uses = torch.bincount(m.source_index.flatten(), minlength=4000).double()
    assert abs(uses.mean().item() - 4.0) < 1e-9 and uses.min() >= 1  # every image is at least its own target


def test_rejects_bad_arguments():
    images, labels = _dataset()
    with pytest.raises(ValueError, match="4 distinct classes"):
        make_mosaics(images, labels % 3, seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_mosaics(images, labels, seed=-1)
    with pytest.raises(ValueError, match="labels"):
        make_mosaics(images, labels[:-1], seed=0)
    with pytest.raises(ValueError, match="images"):
        make_mosaics(images[0], labels, seed=0)
