"""Data layer: image-folder trees and archives that the tests build themselves."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clxai_utils.data import datasets as L
from clxai_utils.data import prepare as prep
from clxai_utils.data import sources as D


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extractions and caches go to a temporary data folder, never the repository's."""
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))
    monkeypatch.delenv(D.SOURCE_ENV, raising=False)


def make_tree(root: Path, classes=("a", "b", "c"), per_class=(4, 2)) -> Path:
    return D.write_synthetic_imagefolder(root, classes=classes, per_class=per_class, size=32, seed=1)


def make_archive(tree: Path, archive: Path, wrap: str = "wrapped") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=wrap)
    return archive


def test_imagefolder_loads_pixels_labels_and_ids(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    ds = L.load_dataset("cifar10", str(tree))
    assert ds.classes == ("a", "b", "c")
    assert ds.train.images.shape == (12, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.test.ids.tolist() == list(range(6))
    # pixel values are exactly the PNG's
    expected = np.array(Image.open(tree / "train" / "b" / "0002.png").convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(ds.train.images[6], torch.from_numpy(expected))


def test_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first = L.load_dataset("cifar10", str(tree))
    caches = sorted((tmp_path / "datadir" / "cache").glob("*.npz"))
    assert len(caches) == 2
    assert torch.equal(L.load_dataset("cifar10", str(tree)).train.images, first.train.images)
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tree / "train" / "a" / "9999.png")
    assert len(L.load_dataset("cifar10", str(tree)).train) == 13


def test_archive_is_extracted_once_through_a_wrapping_folder(tmp_path: Path) -> None:
    archive = make_archive(make_tree(tmp_path / "tree"), tmp_path / "data.tar.gz")
    ds = L.load_dataset("cifar10", str(archive))
    assert len(ds.train) == 12 and len(ds.test) == 6
    (target,) = (tmp_path / "datadir" / "extracted").iterdir()
    marker_time = (target / ".extracted.json").stat().st_mtime_ns
    L.load_dataset("cifar10", str(archive))
    assert (target / ".extracted.json").stat().st_mtime_ns == marker_time


def test_interrupted_extraction_is_redone(tmp_path: Path) -> None:
    archive = make_archive(make_tree(tmp_path / "tree"), tmp_path / "data.tar.gz")
    target = D.extract_archive(archive)
    (target / ".extracted.json").unlink()  # as if killed before the marker was written
    shutil_leftover = target / "junk.txt"
    shutil_leftover.write_text("partial")
    again = D.extract_archive(archive)
    assert again == target and (target / ".extracted.json").is_file() and not shutil_leftover.exists()


def test_path_traversal_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"pwned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(D.DataError, match="outside"):
        D.extract_archive(archive)
    assert not (tmp_path / "escaped.txt").exists()
    assert not list((tmp_path / "datadir").rglob("escaped.txt"))


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("root/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(D.DataError, match="only regular files"):
        D.extract_archive(archive)


def test_truncated_archive_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    archive = make_archive(make_tree(tmp_path / "tree", per_class=(40, 10)), tmp_path / "data.tar.gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(D.DataError, match="truncated or corrupt"):
        L.load_dataset("cifar10", str(truncated))
    extracted = tmp_path / "datadir" / "extracted"
    assert not extracted.exists() or not any(extracted.iterdir())


def test_missing_split_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "test").rename(tree / "val")
    with pytest.raises(D.DataError, match=r"lacks the split folder\(s\) \['test'\]"):
        L.load_dataset("cifar10", str(tree))


def test_class_folders_must_match_between_splits(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "test" / "c").rename(tree / "test" / "d")
    with pytest.raises(D.DataError, match=r"only in train \['c'\], only in test \['d'\]"):
        L.load_dataset("cifar10", str(tree))


def test_empty_class_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    for f in (tree / "train" / "b").iterdir():
        f.unlink()
    with pytest.raises(D.DataError, match=r"train/b holds no"):
        L.load_dataset("cifar10", str(tree))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    bad = tree / "test" / "a" / "0001.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(D.DataError, match=r"cannot read image .*test/a/0001.png"):
        L.load_dataset("cifar10", str(tree))


def test_wrong_image_size_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    Image.new("RGB", (31, 32)).save(tree / "train" / "a" / "0000.png")
    with pytest.raises(D.DataError, match=r"0000.png is 31x32 pixels"):
        L.load_dataset("cifar10", str(tree))


def test_missing_source_explains_how_to_provide_data(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match="CLXAI_DATA_SOURCE") as err:
        L.load_dataset("cifar10", str(tmp_path / "nowhere"))
    assert "image-folder tree" in str(err.value) and "torchvision" in str(err.value)


def test_environment_variable_selects_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "tree")
    monkeypatch.setenv(D.SOURCE_ENV, str(tree))
    assert D.resolve_source("auto") == str(tree.resolve())
    assert L.load_dataset("cifar10", "auto").classes == ("a", "b", "c")


def test_unknown_dataset_is_an_error() -> None:
    with pytest.raises(ValueError, match="dataset='mnist'"):
        L.load_dataset("mnist", "auto")


def test_balanced_subset_is_deterministic_and_balanced() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    a = prep.balanced_subset(labels, 7, seed=0)
    assert np.array_equal(a, prep.balanced_subset(labels, 7, seed=0))
    assert not np.array_equal(a, prep.balanced_subset(labels, 7, seed=1))
    assert np.bincount(labels[a].numpy()).tolist() == [7] * 10
    assert np.all(np.diff(a) > 0)
    assert len(prep.balanced_subset(labels, None)) == 500
    with pytest.raises(D.DataError, match="fewer than per_class=51"):
        prep.balanced_subset(labels, 51)


def test_manifest_round_trip_and_checksum(tmp_path: Path) -> None:
    ds = L.load_dataset("cifar10", str(make_tree(tmp_path / "tree")))
    subsets = {"train": prep.balanced_subset(ds.train.labels, 2), "test": prep.balanced_subset(ds.test.labels, 1)}
    manifest = prep.build_manifest(ds, "smoke", subsets)
    assert manifest.counts == {"train": [4, 4, 4], "test": [2, 2, 2]}
    assert len(manifest.subset_ids["train"]) == 6
    path = prep.save_manifest(manifest, tmp_path / "out" / "manifest.json")
    assert prep.Manifest.load(path) == manifest
    changed = ds.test.subset(subsets["test"])
    changed.images[0, 0, 0, 0] ^= 1
    assert prep.split_checksum(changed) != manifest.checksums["test"]


def test_channel_statistics_by_hand() -> None:
    """Mean and standard deviation per channel over every pixel of the images, in [0, 1]."""
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[0, 0] = 255  # red channel: half the pixels 1, half 0
    images[:, 1] = 51  # green: 0.2 everywhere
    split = D.ImageSplit(images, torch.tensor([0, 1]), torch.arange(2))
    mean, std = L.channel_statistics(split, 2)
    assert mean == pytest.approx((0.5, 0.2, 0.0)) and std == pytest.approx((0.5, 0.0, 0.0))


def test_image_folder_gets_its_own_statistics_size_and_masks(tmp_path: Path) -> None:
    """An image folder of 48x48 images: its size, statistics computed from its training images, binary masks."""
    tree = D.write_synthetic_imagefolder(tmp_path / "tree", classes=("a", "b"), per_class=(6, 3), size=48, seed=2)
    for path in sorted((tree / "test").rglob("*.png")):
        mask = np.zeros((48, 48), dtype=np.uint8)
        mask[10:20, 5:40] = 255
        target = tree / "test-segmentation" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(target)
    data = L.load_dataset("imagefolder", str(tree))
    assert data.info.image_size == 48 and isinstance(data.train, D.ImageSplit)
    assert data.info.mean == L.channel_statistics(data.train, 48)[0] != L.SPECS["cifar10"].mean
    assert data.test.masks is not None and data.test.masks.shape == (6, 48, 48)
    assert int(data.test.masks[0].sum()) == 10 * 35 and set(data.test.masks.unique().tolist()) == {0, 1}
    assert torch.equal(L.authors_test_masks(data, data.test.ids), data.test.masks)  # same size: nothing to blend
    (tree / "test-segmentation" / "a" / "0000.png").unlink()
    with pytest.raises(D.DataError, match=r"test image .*a/0000.png has no mask .*test-segmentation/a/0000.png"):
        L.load_dataset("imagefolder", str(tree))


def test_image_folder_of_several_sizes_needs_an_image_size(tmp_path: Path) -> None:
    tree = D.write_synthetic_imagefolder(tmp_path / "tree", classes=("a", "b"), per_class=(2, 1), size=40, seed=3)
    Image.new("RGB", (50, 40)).save(tree / "train" / "a" / "9999.png")
    with pytest.raises(D.DataError, match=r"several sizes .*set data.image_size in the profile"):
        L.load_dataset("imagefolder", str(tree))
    data = L.load_dataset("imagefolder", str(tree), image_size=32)
    assert data.train.images.shape[1:] == (3, 32, 32) and isinstance(data.train, D.ImageSplit)


def test_one_class_and_cifar_only_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match="has 1 class folder"):
        L.load_dataset("imagefolder", str(make_tree(tmp_path / "one", classes=("a",))))
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(D.DataError, match="image_size=64 is not possible for cifar10"):
        L.load_dataset("cifar10", str(tree), image_size=64)
    with pytest.raises(D.DataError, match="mask_source is read for cifar10 and imagenet_s50 only"):
        L.load_dataset("imagefolder", str(tree), mask_source=str(tree))
    with pytest.raises(D.DataError, match="'torchvision' downloads CIFAR-10 only"):
        L.load_dataset("imagenet_s50", "torchvision")


def test_mask_source_auto_empty_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(L.MASK_SOURCE_ENV, str(tmp_path))
    assert L.resolve_mask_source("auto") == str(tmp_path.resolve()) == L.resolve_mask_source(None)
    assert L.resolve_mask_source("") is None
    monkeypatch.setenv(L.MASK_SOURCE_ENV, "")
    assert L.resolve_mask_source("auto") is None
    with pytest.raises(D.DataError, match=r"mask_source='/no/such' does not exist"):
        L.resolve_mask_source("/no/such")


def test_file_split_checksum_follows_names_sizes_and_labels(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    paths = tuple(str(p) for p in sorted((tree / "train").rglob("*.png")))
    split = D.FileSplit(paths, torch.zeros(len(paths), dtype=torch.int64), torch.arange(len(paths)))
    first = prep.split_checksum(split)
    assert prep.split_checksum(split.subset(np.arange(len(paths)))) == first
    relabelled = D.FileSplit(paths, torch.ones(len(paths), dtype=torch.int64), split.ids)
    assert prep.split_checksum(relabelled) != first
    Image.new("RGB", (32, 32), (9, 9, 9)).save(paths[0], format="PNG", optimize=False)
    assert prep.split_checksum(split) != first


def test_imagenet_1k_tree_takes_its_masks_from_an_imagenet_s50_folder(tmp_path: Path) -> None:
    """The paper's protocol: ImageNet-1k's validation images of the 50 classes, masks where ImageNet-S50 has them."""
    import shutil

    from fixtures import write_imagenet_s50_fixture

    s50 = write_imagenet_s50_fixture(tmp_path / "s50", train_per_class=2, val_per_class=2)
    in1k = tmp_path / "imagenet"
    shutil.copytree(s50 / "train", in1k / "train")
    shutil.copytree(s50 / "validation", in1k / "val")
    extra = sorted((in1k / "val").iterdir())[0]
    shutil.copy(next(extra.iterdir()), extra / "ILSVRC2012_val_00099999.JPEG")  # a validation image without a mask
    data = L.load_dataset("imagenet_s50", str(in1k), image_size=32, mask_source=str(s50))
    assert isinstance(data.train, D.FileSplit) and data.test.masks is not None
    scored = (data.test.masks != -1).flatten(1).any(1)
    assert int(scored.sum()) == len(data.test) - 1 and data.source_of_masks == str(s50)
    authors = L.authors_test_masks(data, data.test.ids)  # the same images' masks, read the authors' way
    assert torch.equal((authors == -1).flatten(1).all(1), ~scored) and authors[scored].ge(0).all()
    assert (authors[scored] == 1).flatten(1).any(1).all()
    without = L.load_dataset("imagenet_s50", str(in1k), image_size=32)
    assert without.test.masks is None and torch.equal(without.test.images, data.test.images)
    with pytest.raises(D.DataError, match="carry no masks"):
        L.authors_test_masks(without, without.test.ids)
    official = L.load_dataset("imagenet_s50", str(s50.parent), image_size=32)
    files = L.mask_files(official)
    assert len(files) == len(official.test) and all(f is not None and f.suffix == ".png" for f in files)
    assert torch.equal(L.authors_test_masks(official, official.test.ids), authors[scored])  # same files, same ids
    with pytest.raises(D.DataError, match="mask_source=.* is for an ImageNet-1k data source"):
        L.load_dataset("imagenet_s50", str(s50.parent), image_size=32, mask_source=str(s50))


def test_accuracy_on_all_counts_the_whole_test_split_and_a_changed_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`subset.accuracy_on: all`: 04's accuracy over all 120 test images while the run keeps its 80-image subset."""
    import yaml

    from clxai_utils.core import config
    from clxai_utils.core.compute import CPU_FLOAT32
    from clxai_utils.core.run import Run
    from clxai_utils.train.probe import batched_forward, load_classifier, probe_and_evaluate
    from clxai_utils.train.trainer import run_training

    raw = yaml.safe_load(config.profiles_path().read_text())
    smoke = raw["smoke"]["datasets"]["cifar10"]
    smoke["subset"]["accuracy_on"] = "all"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(config, "profiles_path", lambda: profiles)
    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    tree = D.write_synthetic_imagefolder(tmp_path / "tree", per_class=(24, 12))  # smoke keeps 8 test images per class

    run = Run("cifar10", "smoke", 0)
    _, manifest = prep.prepare_data(run, str(tree))
    data, _ = prep.load_prepared(run)
    assert (len(data.test), len(data.accuracy_split)) == (80, 120)
    assert manifest.checksums[prep.WHOLE_TEST] == prep.split_checksum(data.accuracy_split)
    assert set(data.test.ids.tolist()) < set(data.accuracy_split.ids.tolist())

    run_training(run, "ce", progress=False)
    _, table, _, _ = probe_and_evaluate(run, ["ce"], progress=False, compute=CPU_FLOAT32)
    model, _ = load_classifier(run, "ce")
    predictions = batched_forward(model.eval(), data.accuracy_split, data.info).argmax(1)
    correct = int((predictions == data.accuracy_split.labels).sum())
    assert table["test_images"].tolist() == [120]
    assert table["accuracy"].iloc[0] == pytest.approx(correct / 120, abs=1e-6)

    smoke["subset"]["accuracy_on"] = "subset"  # the profile changed after 00_data wrote the manifest
    profiles.write_text(yaml.safe_dump(raw))
    with pytest.raises(D.DataError, match=r"accuracy_on='subset'.*rerun notebooks/00_data.ipynb"):
        prep.load_prepared(Run("cifar10", "smoke", 0))
    smoke["subset"]["accuracy_on"] = "every"
    profiles.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"accuracy_on='every' is not allowed; choose one of: subset, all"):
        Run("cifar10", "smoke", 0)
