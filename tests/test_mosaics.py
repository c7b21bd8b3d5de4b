"""Mosaics: class constraint, tile placement, masks, determinism and the correctness filter."""
from __future__ import annotations

import pytest
import torch

from clxai_utils.mosaics import Mosaics, make_mosaics, target_correct

H, W, C = 4, 5, 3  # non-square tiles catch swapped axes


def _dataset(n: int = 60, n_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g), torch.arange(n) % n_classes


def test_four_distinct_classes_and_target_fields():
    images, labels = _dataset()
    m = make_mosaics(images, labels, n_mosaics=200, seed=0)
    assert len(m) == 200
    tile_classes = labels[m.source_index]
    assert all(len(set(row.tolist())) == 4 for row in tile_classes)
    for i in range(len(m)):
        assert m.target_class[i] == tile_classes[i, m.target_quadrant[i]]
    # every quadrant is drawn as target, and the classes spread over all 10
    assert set(m.target_quadrant.tolist()) == {0, 1, 2, 3}
    assert set(tile_classes.flatten().tolist()) == set(range(10))


def test_tiles_are_placed_at_their_quadrant():
    images, labels = _dataset()
    m = make_mosaics(images, labels, n_mosaics=25, seed=1)
    assert m.images.shape == (25, C, 2 * H, 2 * W)
    corners = {0: (0, 0), 1: (0, W), 2: (H, 0), 3: (H, W)}  # TL, TR, BL, BR
    for i in range(len(m)):
        for q, (top, left) in corners.items():
            tile = m.images[i, :, top : top + H, left : left + W]
            assert torch.equal(tile, images[m.source_index[i, q]])


def test_mask_covers_exactly_the_target_quadrant():
    images, labels = _dataset()
    m = make_mosaics(images, labels, n_mosaics=40, seed=2)
    assert m.masks.shape == (40, 1, 2 * H, 2 * W) and m.masks.dtype == torch.bool
    assert torch.all(m.masks.float().mean(dim=(1, 2, 3)) == 0.25)
    for i in range(len(m)):
        q = int(m.target_quadrant[i])
        expected = torch.zeros(2 * H, 2 * W, dtype=torch.bool)
        expected[(q // 2) * H : (q // 2 + 1) * H, (q % 2) * W : (q % 2 + 1) * W] = True
        assert torch.equal(m.masks[i, 0], expected)


def test_deterministic_per_seed_and_independent_of_global_rng():
    images, labels = _dataset()
    torch.manual_seed(123)
    a = make_mosaics(images, labels, n_mosaics=30, seed=7)
    torch.manual_seed(999)
    b = make_mosaics(images, labels, n_mosaics=30, seed=7)
    c = make_mosaics(images, labels, n_mosaics=30, seed=8)
    for field in ("images", "masks", "target_class", "target_quadrant", "source_index"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.source_index, c.source_index)
    assert not torch.equal(a.target_quadrant, c.target_quadrant)


def test_tile_draw_is_roughly_uniform():
    """Each class appears in ~4/10 of the mosaics, each image of a class about equally often."""
    images, labels = _dataset(n=40, n_classes=10)
    m = make_mosaics(images, labels, n_mosaics=4000, seed=3)
    per_class = torch.bincount(labels[m.source_index].flatten(), minlength=10).double() / 4000
    assert torch.allclose(per_class, torch.full((10,), 0.4, dtype=torch.float64), atol=0.04)
    per_image = torch.bincount(m.source_index.flatten(), minlength=40).double()
    assert per_image.min() > 0.8 * 400 and per_image.max() < 1.2 * 400  # 16000 tiles / 40 images
    per_quadrant = torch.bincount(m.target_quadrant, minlength=4).double() / 4000
    assert torch.allclose(per_quadrant, torch.full((4,), 0.25, dtype=torch.float64), atol=0.04)


def test_target_correct():
    labels = torch.tensor([0, 1, 2, 3])
    src = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]])
    mosaics = Mosaics(
        images=torch.zeros(3, C, 2 * H, 2 * W),
        masks=torch.zeros(3, 1, 2 * H, 2 * W, dtype=torch.bool),
        target_class=labels[src[torch.arange(3), torch.tensor([1, 0, 3])]],  # tiles 1, 3, 2
        target_quadrant=torch.tensor([1, 0, 3]),
        source_index=src,
    )
    predictions = torch.tensor([9, 1, 2, 0])  # image 1 and 2 right, 3 wrong
    assert target_correct(mosaics, predictions).tolist() == [True, False, True]
    # with make_mosaics: perfect predictions keep everything, shifted ones drop everything
    m = make_mosaics(*_dataset(), n_mosaics=20, seed=4)
    _, labels = _dataset()
    assert target_correct(m, labels).all()
    assert not target_correct(m, (labels + 1) % 10).any()
    with pytest.raises(ValueError, match="tile_predictions"):
        target_correct(m, labels[:5])


def test_rejects_bad_arguments():
    images, labels = _dataset()
    with pytest.raises(ValueError, match="4 distinct classes"):
        make_mosaics(images, labels % 3, n_mosaics=5, seed=0)
    with pytest.raises(ValueError, match="n_mosaics"):
        make_mosaics(images, labels, n_mosaics=0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_mosaics(images, labels, n_mosaics=1, seed=-1)
    with pytest.raises(ValueError, match="labels"):
        make_mosaics(images, labels[:-1], n_mosaics=1, seed=0)
    with pytest.raises(ValueError, match="images"):
        make_mosaics(images[0], labels, n_mosaics=1, seed=0)
