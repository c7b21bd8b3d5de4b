"""The real-photo mask set for CIFAR-10 models: pairing, labels, errors, and the shared archive's counts."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clxai_utils.core.paths import repo_root
from clxai_utils.data.masks import MaskSet
from clxai_utils.data.realmask import load_realmask
from clxai_utils.data.sources import CIFAR10_CLASSES, DataError

ARCHIVE = repo_root().parent / "shared" / "data" / "realmask32.tar.gz"
README_COUNTS = {"airplane": 444, "automobile": 301, "bird": 17, "cat": 457, "dog": 267, "horse": 322, "ship": 182}


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extractions go to a temporary data folder, never the repository's."""
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))


def write_pair(folder: Path, key: str, top: int, left: int, size: int = 8) -> None:
    """A grey 8x8 photo with a red square object at (top, left) of side 3, and its 1-bit mask."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), 90, dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    image[top : top + 3, left : left + 3] = (255, 0, 0)
    mask[top : top + 3, left : left + 3] = True
    Image.fromarray(image).save(folder / f"{key}.png")
    Image.fromarray(mask).save(folder / f"{key}_mask.png")


def make_tree(root: Path) -> Path:
    write_pair(root / "realmask32" / "dog", "pet_2", 0, 0)
    write_pair(root / "realmask32" / "dog", "pet_10", 5, 5)
    write_pair(root / "realmask32" / "cat", "pet_7", 2, 4)
    write_pair(root / "realmask32" / "airplane", "msrc_1", 4, 1)
    (root / "realmask32" / "selection.csv").write_text("key\n")
    return root


def test_load_pairs_labels_ids_and_keys(tmp_path: Path) -> None:
    masks = load_realmask(make_tree(tmp_path / "tree"), CIFAR10_CLASSES)
    assert isinstance(masks, MaskSet) and len(masks) == 4
    # sorted "<class>/<key>" strings: pet_10 sorts before pet_2
    assert masks.keys == ("airplane/msrc_1", "cat/pet_7", "dog/pet_10", "dog/pet_2")
    assert masks.ids.tolist() == [0, 1, 2, 3]
    assert masks.labels.tolist() == [0, 3, 5, 5] and masks.classes == CIFAR10_CLASSES
    assert masks.images.shape == (4, 3, 8, 8) and masks.images.dtype == torch.uint8
    assert masks.masks.shape == (4, 8, 8) and masks.masks.dtype == torch.int8
    # each mask covers exactly its own photo's red square
    for image, mask in zip(masks.images, masks.masks):
        assert set(mask.unique().tolist()) == {0, 1} and int(mask.sum()) == 9
        assert torch.equal(mask == 1, image[0] == 255)
    assert masks.masks[2, 5, 5] == 1 and masks.masks[2, 0, 0] == 0  # dog/pet_10: square at (5, 5)


def test_labels_follow_the_given_class_order(tmp_path: Path) -> None:
    masks = load_realmask(make_tree(tmp_path / "tree"), ("dog", "cat", "airplane"))
    assert masks.labels.tolist() == [2, 1, 0, 0]


def test_archive_source_is_extracted_under_the_data_folder(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    archive = tmp_path / "masks.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "realmask32", arcname="realmask32")
    masks = load_realmask(archive, CIFAR10_CLASSES)
    assert len(masks) == 4 and masks.keys[0] == "airplane/msrc_1"
    assert any((tmp_path / "datadir" / "extracted").iterdir())


def test_unknown_class_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(
        DataError, match=r"class folder \S*/dog is not one of the model's classes \['airplane', 'cat'\]"
    ):
        load_realmask(tree, ("airplane", "cat"))


def test_orphan_mask_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "realmask32" / "cat" / "pet_7.png").unlink()
    with pytest.raises(DataError, match=r"mask \S*cat/pet_7_mask\.png has no image"):
        load_realmask(tree, CIFAR10_CLASSES)


def test_orphan_image_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "realmask32" / "dog" / "pet_2_mask.png").unlink()
    with pytest.raises(DataError, match=r"image \S*dog/pet_2\.png has no mask"):
        load_realmask(tree, CIFAR10_CLASSES)


def test_bad_masks_and_sources(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tree / "realmask32" / "cat" / "pet_7_mask.png")
    with pytest.raises(DataError, match=r"mask \S*pet_7_mask\.png is not binary"):
        load_realmask(tree, CIFAR10_CLASSES)
    Image.fromarray(np.zeros((6, 8), bool)).save(tree / "realmask32" / "cat" / "pet_7_mask.png")
    with pytest.raises(DataError, match=r"is 8x6 pixels but its image is 8x8"):
        load_realmask(tree, CIFAR10_CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mask set in"):
        load_realmask(tmp_path / "empty", CIFAR10_CLASSES)
    with pytest.raises(DataError, match="neither a folder nor"):
        load_realmask(tmp_path / "missing", CIFAR10_CLASSES)
    with pytest.raises(ValueError, match="distinct class names"):
        load_realmask(tree, ("cat", "cat"))


def test_mask_set_checks_and_subset(tmp_path: Path) -> None:
    masks = load_realmask(make_tree(tmp_path / "tree"), CIFAR10_CLASSES)
    part = masks.subset([3, 1])
    assert part.keys == ("dog/pet_2", "cat/pet_7") and part.ids.tolist() == [3, 1]
    assert torch.equal(part.masks[0], masks.masks[3]) and part.labels.tolist() == [5, 3]
    fields = dict(images=masks.images, masks=masks.masks, labels=masks.labels, ids=masks.ids, keys=masks.keys)
    with pytest.raises(ValueError, match="masks must be int8"):
        MaskSet(**{**fields, "masks": masks.masks.long()}, classes=masks.classes)
    with pytest.raises(ValueError, match="mask values must be"):
        MaskSet(**{**fields, "masks": masks.masks * 2}, classes=masks.classes)
    with pytest.raises(ValueError, match="labels must index into the 3 classes"):
        MaskSet(**fields, classes=("a", "b", "c"))
    with pytest.raises(ValueError, match="ids and keys must be unique"):
        MaskSet(**{**fields, "ids": torch.zeros(4, dtype=torch.int64)}, classes=masks.classes)


@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"the realmask32 archive {ARCHIVE} is absent beside the clone")
def test_shared_archive_matches_its_readme() -> None:
    masks = load_realmask(ARCHIVE, CIFAR10_CLASSES)
    assert len(masks) == 1990
    counts = dict(zip(CIFAR10_CLASSES, torch.bincount(masks.labels, minlength=10).tolist()))
    assert {c: n for c, n in counts.items() if n} == README_COUNTS
    assert counts["deer"] == counts["frog"] == counts["truck"] == 0
    assert masks.images.shape == (1990, 3, 32, 32) and masks.masks.shape == (1990, 32, 32)
    assert set(masks.masks.unique().tolist()) == {0, 1}  # no ignore label in this set
    assert int(masks.masks.sum(dim=(1, 2)).min()) >= 20
    assert list(masks.keys) == sorted(masks.keys) and masks.ids.tolist() == list(range(1990))
    assert all(masks.classes[label] == key.split("/")[0] for label, key in zip(masks.labels.tolist(), masks.keys))


def test_a_profile_keeps_at_most_masks_per_class_of_the_photographs(tmp_path: Path) -> None:
    """smoke keeps 8 per class: a class with 10 photographs gives 8, one with 3 gives all 3; later stages see the same."""
    from clxai_utils.core.run import Run
    from clxai_utils.data.prepare import at_most_per_class, load_prepared, prepare_data
    from clxai_utils.data.sources import write_synthetic_imagefolder

    for i in range(10):
        write_pair(tmp_path / "masks" / "realmask32" / "dog", f"pet_{i}", i % 5, i % 4, size=32)
    for i in range(3):
        write_pair(tmp_path / "masks" / "realmask32" / "cat", f"pet_{20 + i}", i, i, size=32)
    (tmp_path / "masks" / "realmask32" / "selection.csv").write_text("key\n")
    run = Run("cifar10", "smoke", 0, root=tmp_path / "run")
    assert run.settings.subset.masks_per_class == 8
    data, manifest = prepare_data(run, str(write_synthetic_imagefolder(tmp_path / "images")), str(tmp_path / "masks"))
    assert data.mask_set is not None and manifest.mask_images == len(data.mask_set) == 11
    assert np.bincount(data.mask_set.labels.numpy(), minlength=10)[[3, 5]].tolist() == [3, 8]
    again, _ = load_prepared(run)
    assert again.mask_set is not None and again.mask_set.keys == data.mask_set.keys
    assert at_most_per_class(torch.tensor([0, 0, 0, 1]), 2).tolist() == [1, 2, 3]  # seed 0 draws 2 of class 0
