"""ImageNet-S50 layout, mask decoding, evaluation geometry and the training stream, on generated fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import fixtures as FX
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from clxai_utils.core.seeding import mix_seed
from clxai_utils.data import geometry as G
from clxai_utils.data import imagenet_s as S
from clxai_utils.data import sources as D
from clxai_utils.data.augment import draw_flags, draw_resized_crop_boxes
from clxai_utils.data.sources import DataError
from clxai_utils.data.stream import CenterCropStream, RandomResizedCropStream, make_loader
from clxai_utils.tools.throughput import measure_throughput


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))


@pytest.fixture(scope="module")
def s50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated ImageNet-S50 tree, written once (tests that change it work on a copy)."""
    return FX.write_imagenet_s50_fixture(tmp_path_factory.mktemp("s50"))


@pytest.fixture
def s50_copy(s50: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(s50, tmp_path / "copy" / "ImageNetS50"))


def write_mask(path: Path, ids: np.ndarray) -> None:
    ids = ids.astype(np.int32)
    Image.fromarray(np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)).save(path)


# --------------------------------------------------------------------------- constants and mask encoding


def test_wnid_list_and_class_ids() -> None:
    assert len(S.IMAGENET_S50_WNIDS) == 50 and list(S.IMAGENET_S50_WNIDS) == sorted(set(S.IMAGENET_S50_WNIDS))
    assert len(S.IMAGENET1K_INDICES) == 50 and list(S.IMAGENET1K_INDICES) == sorted(set(S.IMAGENET1K_INDICES))
    assert (S.IMAGENET_S50_WNIDS[0], S.IMAGENET_S50_WNIDS[-1]) == ("n01443537", "n12998815")
    assert (S.IMAGENET1K_INDICES[0], S.IMAGENET1K_INDICES[-1]) == (1, 992)
    assert S.mask_class_id("n01531178") == 3  # the 3rd wnid
    assert S.mask_class_id("n12998815") == 50
    with pytest.raises(DataError, match="not an ImageNet-S50 wnid"):
        S.mask_class_id(FX.NOT_S50_WNID)


def test_decode_class_ids_by_hand() -> None:
    rgb = np.array([[[1, 0, 0], [232, 3, 0]], [[0, 0, 9], [50, 0, 200]], [[0, 1, 0], [7, 2, 0]]], dtype=np.uint8)
    ids = S.decode_class_ids(rgb)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[1, 1000], [0, 50], [256, 519]]  # blue is not part of the id


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.int32), [[0, 0, 0]]],
)
def test_decode_refuses_other_shapes_and_dtypes(bad: object) -> None:
    with pytest.raises(ValueError, match=r"uint8 array \(H, W, 3\)"):
        S.decode_class_ids(bad)  # type: ignore[arg-type]


def test_object_mask_rule() -> None:
    ids = np.array([[0, 3, 1000], [5, 3, 0]], dtype=np.int32)
    mask = S.object_mask(ids, 3)
    assert mask.dtype == np.int8
    assert mask.tolist() == [[0, 1, -1], [0, 1, 0]]  # other class 5 and "other" 0 are background
    assert S.object_mask(ids, 5).tolist() == [[0, 0, -1], [1, 0, 0]]
    for bad in (0, 1000, True):
        with pytest.raises(ValueError, match="own_class_id"):
            S.object_mask(ids, bad)


def test_nearest_keeps_only_existing_ids_where_bilinear_invents_some(tmp_path: Path) -> None:
    ids = np.zeros((40, 60), dtype=np.int32)
    ids[10:30, 15:45] = 50
    ids[10:30, 15:17] = 1000  # an ignore border (R=232, G=3)
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
    # bilinear: blends R and G of neighbouring ids into ids that exist nowhere in the mask
    blended = torch.nn.functional.interpolate(
        torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), size=(27, 41), mode="bilinear"
    )
    invented = set(np.unique(S.decode_class_ids(blended[0].permute(1, 2, 0).round().byte().numpy())).tolist())
    assert invented - {0, 50, 1000}
    # nearest, as load_eval_mask samples: only the input's ids
    rows = G.nearest_source_indices(0, 27, 27, 40)
    cols = G.nearest_source_indices(0, 41, 41, 60)
    assert set(np.unique(ids[np.ix_(rows, cols)]).tolist()) == {0, 50, 1000}
    write_mask(tmp_path / "m.png", ids)
    mask = S.load_eval_mask(tmp_path / "m.png", 50, (60, 40), size=24)
    assert mask.dtype == torch.int8 and mask.shape == (24, 24)
    assert set(mask.unique().tolist()) == {-1, 0, 1}


def test_authors_mask_reader_is_bilinear_resize_crop_and_red_above_zero(tmp_path: Path) -> None:
    """The authors' reading: "ignore" is object, an id that is a multiple of 256 (red 0) background, edges grow."""
    ids = np.zeros((20, 30), dtype=np.int32)
    ids[4:16, 6:12] = 50  # an object
    ids[4:16, 12:14] = 1000  # ignore (R=232, G=3)
    ids[4:16, 20:26] = 256  # a class id with R = 0 (G = 1)
    write_mask(tmp_path / "m.png", ids)
    mask = S.authors_object_mask(tmp_path / "m.png", size=12, resize=16)
    # by hand: PIL's bilinear Resize of the short side to 16 (30 -> 24 wide), centre crop 12, red channel > 0
    with Image.open(tmp_path / "m.png") as png:
        resized = np.asarray(png.convert("RGB").resize((24, 16), Image.Resampling.BILINEAR))
    expected = resized[2:14, 6:18, 0] > 0
    assert mask.dtype == torch.bool and np.array_equal(mask.numpy(), expected)
    g = G.eval_geometry(30, 20, 12, 16)
    nearest = ids[
        np.ix_(G.nearest_source_indices(g.top, 12, g.height, 20), G.nearest_source_indices(g.left, 12, g.width, 30))
    ]
    assert mask.numpy()[nearest == 1000].all()  # ignore counts as object
    assert not mask.numpy()[nearest == 256].any()  # red 0: background, though annotated
    assert mask.numpy()[nearest == 0].any()  # bilinear blending grows the object into the background


def test_nearest_source_indices_by_hand() -> None:
    # 4 -> 8 pixels: each source pixel twice; 8 -> 4: pixel centres 1, 3, 5, 7 (floor((i + 0.5) * 2))
    assert G.nearest_source_indices(0, 8, 8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert G.nearest_source_indices(0, 4, 4, 8).tolist() == [1, 3, 5, 7]
    assert G.nearest_source_indices(2, 3, 8, 4).tolist() == [1, 1, 2]


# --------------------------------------------------------------------------- evaluation geometry


def test_eval_geometry_of_a_300x200_image_by_hand(tmp_path: Path) -> None:
    # short side 200 -> 256, long side int(256 * 300 / 200) = 384; crop offsets round((256-224)/2), round((384-224)/2)
    g = G.eval_geometry(300, 200)
    assert (g.height, g.width, g.top, g.left, g.size) == (256, 384, 16, 80, 224)
    assert G.eval_geometry(200, 300) == G.EvalGeometry(384, 256, 80, 16, 224)
    assert G.default_resize(224) == 256 and G.default_resize(64) == 73
    # 64 px: resize round(64 * 256 / 224) = 73; int(73 * 150 / 90) = 121; offsets 28.5 and 4.5 round half to even
    assert G.eval_geometry(90, 150, size=64) == G.EvalGeometry(121, 73, 28, 4, 64)
    # output pixel (0, 0) is resized pixel (16, 80), whose nearest source is
    # row floor(16.5 * 200 / 256) = 12, column floor(80.5 * 300 / 384) = 62
    ids = np.zeros((200, 300), dtype=np.int32)
    ids[12, 62] = 7
    write_mask(tmp_path / "m.png", ids)
    mask = S.load_eval_mask(tmp_path / "m.png", 7, (300, 200))
    assert mask.shape == (224, 224) and mask[0, 0] == 1 and int(mask.sum()) == 1
    # the image: left half black, right half white; the edge (column 150) lands at 150 * 384 / 300 - 80 = 112
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[:, 150:] = 255
    Image.fromarray(image).save(tmp_path / "i.png")
    out = D.load_eval_image(tmp_path / "i.png")
    assert out.dtype == torch.uint8 and out.shape == (3, 224, 224)
    assert int(out[:, :, :111].max()) == 0 and int(out[:, :, 113:].min()) == 255
    assert 0 < int(out[0, 0, 111]) < 255 or 0 < int(out[0, 0, 112]) < 255


def test_eval_image_matches_torchvision_resize_and_center_crop(s50: Path) -> None:
    path = next((s50 / "validation").rglob("*.JPEG"))
    with Image.open(path) as img:
        expected = np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(img.convert("RGB"))).transpose(2, 0, 1)
    ours = D.load_eval_image(path).numpy()
    assert np.array_equal(ours, expected)


def test_eval_size_is_checked() -> None:
    with pytest.raises(ValueError, match="resize=200 must be >= size=224"):
        G.eval_geometry(300, 200, resize=200)
    with pytest.raises(ValueError, match="size must be an integer"):
        G.eval_geometry(300, 200, size=0)


# --------------------------------------------------------------------------- layout


def test_layout_of_the_fixture(s50: Path) -> None:
    tree = S.imagenet_s50_layout(s50.parent, splits=("train", "train-semi", "validation"))
    assert tree.root == s50 and tree.wnids == FX.FIXTURE_WNIDS
    assert tree.class_ids == (1, 3, 11, 50)
    assert {split: len(records) for split, records in tree.splits.items()} == {
        "train": 24,
        "train-semi": 8,
        "validation": 12,
    }
    val = tree.records("validation")
    assert [r.image_id for r in val] == sorted(r.image_id for r in val)
    third = [r for r in val if r.wnid == "n01531178"]  # the 3rd of the 50, 2nd of the fixture
    assert {(r.label, r.class_id) for r in third} == {(1, 3)}
    for record in val:
        assert record.image_id == f"{record.wnid}/{record.path.stem}"
        assert record.path.name.startswith("ILSVRC2012_val_") and len(record.path.stem) == len("ILSVRC2012_val_") + 8
        assert record.mask_path == s50 / "validation-segmentation" / record.wnid / f"{record.path.stem}.png"
    assert all(r.mask_path is None and r.path.name.startswith(f"{r.wnid}_") for r in tree.records("train"))
    with pytest.raises(DataError, match="split 'test' was not read"):
        tree.records("test")


def test_layout_is_found_through_a_wrapping_folder(s50: Path, tmp_path: Path) -> None:
    assert S.imagenet_s50_layout(s50).root == s50
    wrapped = shutil.copytree(s50, tmp_path / "wrapper" / "my-copy")
    assert S.imagenet_s50_layout(tmp_path / "wrapper").root == wrapped
    with pytest.raises(DataError, match="no ImageNet-S50 layout"):
        S.imagenet_s50_layout(tmp_path)


def test_images_and_masks_pair_by_name_not_position(s50_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # rename a pair so that it sorts first, and list folders in reverse: the pairs must stay right
    wnid = FX.FIXTURE_WNIDS[0]
    last = sorted((s50_copy / "validation" / wnid).iterdir())[-1].stem
    for folder, suffix in (("validation", ".JPEG"), ("validation-segmentation", ".png")):
        (s50_copy / folder / wnid / f"{last}{suffix}").rename(
            s50_copy / folder / wnid / f"ILSVRC2012_val_00000000{suffix}"
        )
    iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(iterdir(self), reverse=True)))
    tree = S.imagenet_s50_layout(s50_copy)
    val = tree.records("validation")
    assert val[0].image_id == f"{wnid}/ILSVRC2012_val_00000000"
    sizes = []
    for record in val:
        assert record.mask_path is not None and record.mask_path.stem == record.path.stem
        with Image.open(record.path) as img, Image.open(record.mask_path) as msk:
            assert img.size == msk.size  # the fixture's images all differ in size
            sizes.append(img.size)
            # the object's pixels are the bright checkered blob in the image
            ids = S.decode_class_ids(np.asarray(msk.convert("RGB")))
            grey = np.asarray(img.convert("L"), dtype=float)
            assert grey[ids == record.class_id].mean() > grey[ids == 0].mean() + 40
    assert len(set(sizes)) == len(sizes)


def test_validation_masks_at_eval_size(s50: Path) -> None:
    """The test split `load_dataset` reads from the official layout: images and masks at 64 px, in record order."""
    from clxai_utils.data.datasets import load_dataset

    tree = S.imagenet_s50_layout(s50)
    test = load_dataset("imagenet_s50", str(s50), image_size=64).test
    assert test.masks is not None and len(test) == 12
    assert test.images.shape == (12, 3, 64, 64) and test.masks.shape == (12, 64, 64)
    assert test.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert set(test.masks.unique().tolist()) == {-1, 0, 1}
    # the mask holding a second class's object: its pixels are background for the image's own class
    val = tree.records("validation")
    two = [i for i, r in enumerate(val) if r.label == 0 and 3 in S.read_class_ids(r.mask_path)]  # type: ignore[arg-type]
    assert len(two) == 1
    record = val[two[0]]
    ids = S.read_class_ids(record.mask_path)  # type: ignore[arg-type]
    g = G.eval_geometry(ids.shape[1], ids.shape[0], 64)
    crop = ids[
        np.ix_(
            G.nearest_source_indices(g.top, 64, g.height, ids.shape[0]),
            G.nearest_source_indices(g.left, 64, g.width, ids.shape[1]),
        )
    ]
    assert (crop == 3).any() and (test.masks[two[0]].numpy()[crop == 3] == 0).all()
    assert ((test.masks[two[0]].numpy() == 1) == (crop == 1)).all()


def test_decode_eval_keeps_record_order_with_workers(s50: Path) -> None:
    records = S.imagenet_s50_layout(s50).records("validation")[:5]
    images, masks = S.decode_eval(records, size=32, num_workers=2, batch_size=2)
    assert masks is not None and masks.shape == (5, 32, 32)
    for i, record in enumerate(records):
        assert torch.equal(images[i], D.load_eval_image(record.path, 32))
        with Image.open(record.path) as img:
            assert torch.equal(masks[i], S.load_eval_mask(record.mask_path, record.class_id, img.size, 32))  # type: ignore[arg-type]
    train_images, no_masks = S.decode_eval(S.imagenet_s50_layout(s50).records("train")[:3], size=32)
    assert no_masks is None and train_images.shape == (3, 3, 32, 32)


# --------------------------------------------------------------------------- bad inputs


def test_missing_validation_segmentation(s50_copy: Path) -> None:
    shutil.rmtree(s50_copy / "validation-segmentation")
    with pytest.raises(DataError, match=r"has validation/ but no validation-segmentation/"):
        S.imagenet_s50_layout(s50_copy)


def test_missing_split_folder(s50_copy: Path) -> None:
    shutil.rmtree(s50_copy / "train")
    with pytest.raises(DataError, match=r"lacks the split folder train/"):
        S.imagenet_s50_layout(s50_copy)


def test_orphan_mask_is_named(s50_copy: Path) -> None:
    wnid = FX.FIXTURE_WNIDS[1]
    write_mask(s50_copy / "validation-segmentation" / wnid / "ILSVRC2012_val_00099999.png", np.zeros((5, 5)))
    with pytest.raises(DataError, match=rf"mask \S*{wnid}/ILSVRC2012_val_00099999\.png has no image"):
        S.imagenet_s50_layout(s50_copy)


def test_orphan_image_is_named(s50_copy: Path) -> None:
    wnid = FX.FIXTURE_WNIDS[2]
    mask = sorted((s50_copy / "validation-segmentation" / wnid).iterdir())[0]
    mask.unlink()
    with pytest.raises(DataError, match=rf"image \S*{wnid}/{mask.stem}\.JPEG has no mask"):
        S.imagenet_s50_layout(s50_copy)


def test_wnid_outside_the_50_is_named(s50_copy: Path) -> None:
    (s50_copy / "validation" / FX.NOT_S50_WNID).mkdir()
    with pytest.raises(DataError, match=rf"{FX.NOT_S50_WNID} is not an ImageNet-S50 class folder.*IMAGENET_S50_WNIDS"):
        S.imagenet_s50_layout(s50_copy)


def test_splits_with_different_wnids(s50_copy: Path) -> None:
    wnid = FX.FIXTURE_WNIDS[3]
    shutil.rmtree(s50_copy / "train" / wnid)
    with pytest.raises(DataError, match=rf"train lacks \['{wnid}'\]"):
        S.imagenet_s50_layout(s50_copy)


def test_wrong_size_mask_is_named(s50_copy: Path) -> None:
    record = S.imagenet_s50_layout(s50_copy).records("validation")[4]
    assert record.mask_path is not None
    with Image.open(record.mask_path) as msk, Image.open(record.path) as img:
        w, h = img.size
        msk.resize((w + 3, h), Image.NEAREST).save(record.mask_path)
    with pytest.raises(
        DataError, match=rf"mask \S*{record.path.stem}\.png is {w + 3}x{h} pixels but its image is {w}x{h}"
    ):
        S.decode_eval([record])


def test_mask_that_is_not_an_imagenet_s_mask(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError, match="mode L; ImageNet-S masks are RGB PNGs"):
        S.read_class_ids(tmp_path / "grey.png")
    write_mask(tmp_path / "odd.png", np.array([[0, 77], [1000, 1]]))
    with pytest.raises(DataError, match=r"class ids \[77\] outside"):
        S.read_class_ids(tmp_path / "odd.png")


# --------------------------------------------------------------------------- ImageNet-1k filter


def test_imagenet1k_filter_keeps_only_the_50(tmp_path: Path) -> None:
    root = FX.write_imagenet1k_fixture(tmp_path / "wrap" / "ILSVRC")
    tree = S.imagenet1k_layout(tmp_path / "wrap")  # looks through the wrapping folder
    assert tree.root == root and tree.wnids == (S.IMAGENET_S50_WNIDS[2], S.IMAGENET_S50_WNIDS[10])
    assert tree.class_ids == (3, 11)
    train, val = tree.records("train"), tree.records("val")
    assert len(train) == 6 and len(val) == 4
    assert [r.label for r in train] == [0, 0, 0, 1, 1, 1]
    assert FX.NOT_S50_WNID not in {r.wnid for r in train + val}
    assert [r.image_id for r in train] == sorted(r.image_id for r in train)
    assert all(r.path.is_file() and r.mask_path is None for r in train + val)


def test_imagenet1k_without_any_of_the_50(tmp_path: Path) -> None:
    FX.write_imagenet1k_fixture(tmp_path, wnids=(FX.NOT_S50_WNID, "n01484850"), per_class=(1, 1))
    with pytest.raises(DataError, match="holds none of the 50 ImageNet-S50 wnids"):
        S.imagenet1k_layout(tmp_path)


# --------------------------------------------------------------------------- training stream


def _train_records(s50: Path) -> list[tuple[Path, int]]:
    return [(r.path, r.label) for r in S.imagenet_s50_layout(s50).records("train")[:6]]


def _all_batches(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    views, labels = zip(*loader)
    return torch.cat(views), torch.cat(labels)


def test_stream_is_deterministic_across_workers_and_changes_with_epoch(s50: Path) -> None:
    records = _train_records(s50)
    dataset = RandomResizedCropStream(records, size=32, views=2, seed=5)
    views0, labels0 = _all_batches(make_loader(dataset, 4, num_workers=0, shuffle_seed=3, epoch=1))
    views2, labels2 = _all_batches(make_loader(dataset, 4, num_workers=2, shuffle_seed=3, epoch=1))
    assert views0.shape == (6, 2, 3, 32, 32) and views0.dtype == torch.uint8
    assert torch.equal(views0, views2) and torch.equal(labels0, labels2)
    # the order is the permutation seeded by (shuffle_seed, epoch)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(mix_seed(3, 1))).tolist()
    assert labels0.tolist() == [records[i][1] for i in order]
    dataset.set_epoch(1)
    assert torch.equal(dataset[order[0]][0], views0[0])
    assert not torch.equal(views0[:, 0], views0[:, 1])  # the two views are drawn independently
    views_next, _ = _all_batches(make_loader(dataset, 4, num_workers=0, shuffle_seed=3, epoch=2))
    assert not torch.equal(views_next, views0)
    dataset.set_epoch(2)
    assert not torch.equal(dataset[order[0]][0], views0[0])


def test_stream_crop_is_a_resize_of_the_box(s50: Path) -> None:
    # scale 1 with the image's own aspect ratio: the box is the whole image, each view its resize (or mirror)
    path, label = _train_records(s50)[0]
    image = D.open_rgb(path)
    aspect = image.width / image.height
    dataset = RandomResizedCropStream([(path, label)], size=24, views=8, scale=(1.0, 1.0), ratio=(aspect, aspect))
    views, out_label = dataset[0]
    resized = G.to_chw_tensor(image.resize((24, 24), Image.Resampling.BILINEAR))
    flipped = [torch.equal(v, resized.flip(-1)) for v in views]
    assert out_label == label
    assert all(torch.equal(v, resized) or f for v, f in zip(views, flipped)) and 0 < sum(flipped) < 8


def test_stream_views_equal_torchvision_resized_crop_and_flip(s50: Path) -> None:
    path, label = _train_records(s50)[1]
    dataset = RandomResizedCropStream([(path, label)], size=40, views=6, seed=9)
    dataset.set_epoch(4)
    views, _ = dataset[0]
    image = D.open_rgb(path)
    generator = torch.Generator().manual_seed(mix_seed(9, 4, 0))
    boxes = draw_resized_crop_boxes(6, image.height, image.width, (0.08, 1.0), (3 / 4, 4 / 3), generator)
    flips = draw_flags(6, 0.5, generator)
    for view, box, flip in zip(views, boxes.tolist(), flips.tolist()):
        expected = T.functional.resized_crop(image, *box, [40, 40], T.InterpolationMode.BILINEAR)
        expected = T.functional.hflip(expected) if flip else expected
        assert torch.equal(view, G.to_chw_tensor(expected))


def test_loader_leaves_the_global_rng_alone(s50: Path) -> None:
    state = torch.random.get_rng_state()
    _all_batches(make_loader(RandomResizedCropStream(_train_records(s50), size=16), 3, shuffle_seed=0))
    assert torch.equal(state, torch.random.get_rng_state())


def test_center_crop_stream_equals_eval_images(s50: Path) -> None:
    records = _train_records(s50)[:3]
    images, labels = _all_batches(make_loader(CenterCropStream(records, size=32), 2))
    assert labels.tolist() == [label for _, label in records]
    for i, (path, _) in enumerate(records):
        assert torch.equal(images[i], D.load_eval_image(path, 32))


def test_mix_seed() -> None:
    seeds = {mix_seed(0, epoch, index) for epoch in range(3) for index in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(3, 2, 1)
    with pytest.raises(ValueError, match="non-negative"):
        mix_seed(0, -1)


def test_stream_arguments_are_checked(s50: Path) -> None:
    records = _train_records(s50)
    with pytest.raises(ValueError, match="scale must satisfy"):
        RandomResizedCropStream(records, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="records is empty"):
        RandomResizedCropStream([])
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        make_loader(CenterCropStream(records), 2, num_workers=-1)


def test_throughput_table(tmp_path: Path) -> None:
    FX.write_jpeg_folder(tmp_path / "jpegs", count=4, width_range=(50, 60), height_range=(40, 50))
    table = measure_throughput(tmp_path / "jpegs", workers=(0,), size=16, batch_size=2, passes=1)
    assert table.columns.tolist() == ["workers", "torch_threads", "images", "seconds", "images_per_s"]
    assert table["images"].tolist() == [4] and (table["images_per_s"] > 0).all()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .JPEG"):
        measure_throughput(tmp_path / "empty")
