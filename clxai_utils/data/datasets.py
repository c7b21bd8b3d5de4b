"""The data sets as specifications: what each is, where its images and masks come from, how its images are
normalised and whether its training images are held in memory or streamed from disk.

| name | images (`data_source`) | input size | normalisation | training images | masks (`mask_source`) |
|---|---|---|---|---|---|
| `cifar10` | the official download, or a `ROOT/{train,test}/<class>/` tree or archive of 32x32 images | 32 | CIFAR-10's | in memory | none on its images (coherence on mosaics); `mask_source`: real photographs with masks in CIFAR-10 classes (`realmask32`), scored beside them |
| `imagenet_s50` | an `ImageNetS50/` folder (the official layout), or an ImageNet-1k image-folder tree, restricted to the 50 wnids | the profile's `data.image_size` (224 in the paper) | ImageNet's | streamed from disk | the `validation-segmentation/` masks of its test images; with an ImageNet-1k tree, `mask_source` names the `ImageNetS50/` folder whose masks belong to some of its validation images |
| `imagefolder` | any `ROOT/{train,test}/<class>/` tree or archive, 2 or more classes, any size | the images' own, or the profile's | computed from the training split (recorded in the manifest) | in memory up to 64 px, streamed above | optional `ROOT/test-segmentation/<class>/<stem>.png`, non-zero = object |

Every data set ends as a `Dataset`: a training split (`ImageSplit` in memory or `FileSplit`
on disk), a test split in memory at the model's input size (decoded once, cached under
`data/cache/`) with its masks where it has them, stable image ids, and for `cifar10` the
optional external mask set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clxai_utils.core.artifacts import atomic_path
from clxai_utils.core.config import DATASETS
from clxai_utils.core.paths import data_dir
from clxai_utils.core.validate import check_choice, check_positive_int
from clxai_utils.data import imagenet_s
from clxai_utils.data.geometry import default_resize, eval_geometry, nearest_source_indices
from clxai_utils.data.masks import BACKGROUND, IGNORE, OBJECT, MaskSet
from clxai_utils.data.realmask import load_realmask
from clxai_utils.data.sources import (
    SPLITS,
    DataError,
    FileSplit,
    ImageSplit,
    cached_split,
    extract_archive,
    find_imagefolder_root,
    from_repo_root,
    is_archive,
    list_imagefolder,
    load_torchvision_cifar10,
    no_data_message,
    relative_path_note,
    resolve_source,
)

#: Image folders with a larger side than this stream their training images from disk.
STREAM_ABOVE = 64
MASK_SOURCE_ENV = "CLXAI_MASK_SOURCE"
#: Training images (spread evenly over the split) that estimate the statistics of a data set without published ones.
STATISTICS_SAMPLE = 2000
Statistics = tuple[float, float, float]


@dataclass(frozen=True)
class DatasetSpec:
    """What is fixed about a data set before any image is read."""

    name: str
    image_size: int | None  # the model's input side; None: the images' own (image folders)
    mean: Statistics | None  # None: computed from the training split by 00_data
    std: Statistics | None

    def streamed(self, size: int) -> bool:
        """Whether the training images stay on disk, decoded and cropped per batch (`clxai_utils.data.stream`)."""
        return self.name == "imagenet_s50" or size > STREAM_ABOVE

    def info(self) -> DatasetInfo:
        """The constants of a data set whose size and statistics are published (CIFAR-10, ImageNet-S50)."""
        if self.image_size is None or self.mean is None or self.std is None:
            raise ValueError(f"{self.name!r} takes its size or statistics from its images: load it (load_dataset)")
        return DatasetInfo(self.name, self.mean, self.std, self.image_size)


SPECS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet_s50": DatasetSpec("imagenet_s50", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagefolder": DatasetSpec("imagefolder", None, None, None),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A data set's constants once loaded: normalisation statistics and input size (docs/method.md, "Training")."""

    name: str
    mean: Statistics
    std: Statistics
    image_size: int


@dataclass
class Dataset:
    """Both splits of a data set with its class names, constants and provenance.

    `mask_set` holds external images with object masks (CIFAR-10's real photographs) when a
    mask source was given; masks of the test images themselves live in `test.masks`.
    `test` is the run's test subset (explained and scored); `accuracy_split` is what accuracy counts.
    """

    info: DatasetInfo
    classes: tuple[str, ...]
    train: ImageSplit | FileSplit
    test: ImageSplit
    source: str
    mask_set: MaskSet | None = None
    source_of_masks: str | None = None  # where `mask_set` (or the test masks of an ImageNet-1k tree) came from
    accuracy_test: ImageSplit | None = None  # the whole test split, when the profile counts accuracy on all of it

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def accuracy_split(self) -> ImageSplit:
        """The test images accuracy is counted on: the whole split (`accuracy_on: all`), else `test`."""
        return self.test if self.accuracy_test is None else self.accuracy_test

    def split(self, name: str) -> ImageSplit | FileSplit:
        check_choice("split", name, SPLITS)
        return self.train if name == "train" else self.test


# --------------------------------------------------------------------------- statistics


@torch.no_grad()
def channel_statistics(
    split: ImageSplit | FileSplit, size: int, workers: int = 0, limit: int = STATISTICS_SAMPLE
) -> tuple[Statistics, Statistics]:
    """Per-channel mean and standard deviation of pixel values in [0, 1] over (up to `limit`) training images.

    A data set without published statistics is normalised with its own; `limit` images,
    spread evenly over the split, estimate them to the third decimal.
    """
    pick = torch.linspace(0, len(split) - 1, min(limit, len(split))).round().long().unique()
    if isinstance(split, ImageSplit):
        batches = [split.images[pick]]
    else:
        from clxai_utils.data.stream import CenterCropStream, make_loader

        stream = CenterCropStream(split.subset(pick).records(), size, default_resize(size))
        batches = [images for images, _ in make_loader(stream, 64, workers)]
    total, squares, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for images in batches:
        pixels = images.double().div(255).transpose(0, 1).reshape(3, -1)
        total += pixels.sum(1)
        squares += (pixels**2).sum(1)
        count += pixels.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(0).sqrt()
    return _triple(mean), _triple(std)


def _triple(values: torch.Tensor) -> Statistics:
    a, b, c = (round(float(v), 4) for v in values)
    return a, b, c


# --------------------------------------------------------------------------- image folders


def _common_size(files: list[tuple[Path, int]], root: Path) -> int:
    """The side of the square images of a folder; images of several sizes need the profile's `data.image_size`."""
    sizes: dict[tuple[int, int], Path] = {}
    for path, _ in files:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.setdefault(image.size, path)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read image {path}: {err}") from err
        if len(sizes) > 1:
            (first, a), (second, b) = sizes.items()
            raise DataError(
                f"{root} holds images of several sizes ({a} is {first[0]}x{first[1]}, {b} is {second[0]}x{second[1]}): "
                "set data.image_size in the profile, and every image is resized (short side) and centre-cropped to it"
            )
    ((width, height),) = sizes
    if width != height:
        raise DataError(
            f"the images of {root} are {width}x{height}: set data.image_size in the profile for non-square images"
        )
    return width


def _segmentation_path(root: Path, classes: tuple[str, ...], path: Path, label: int) -> Path:
    """Where an image folder keeps the mask of test image `path`: ROOT/test-segmentation/<class>/<stem>.png."""
    return root / "test-segmentation" / classes[label] / f"{path.stem}.png"


def _binary_masks(root: Path, files: list[tuple[Path, int]], classes: tuple[str, ...], size: int) -> torch.Tensor:
    """The masks of `ROOT/test-segmentation/<class>/<stem>.png` for the test files (non-zero = object), at `size`."""
    masks = torch.empty((len(files), size, size), dtype=torch.int8)
    for i, (path, label) in enumerate(files):
        mask_path = _segmentation_path(root, classes, path, label)
        if not mask_path.is_file():
            raise DataError(
                f"test image {path} has no mask {mask_path}; test-segmentation/ needs one mask per test image"
            )
        with Image.open(mask_path) as mask:
            values = np.asarray(mask.convert("L"))
        with Image.open(path) as image:
            image_size = image.size
        if (values.shape[1], values.shape[0]) != image_size:
            raise DataError(
                f"mask {mask_path} is {values.shape[1]}x{values.shape[0]} pixels but its image {path} is "
                f"{image_size[0]}x{image_size[1]}; a mask has its image's size"
            )
        g = eval_geometry(image_size[0], image_size[1], size, size)
        rows = nearest_source_indices(g.top, size, g.height, values.shape[0])
        cols = nearest_source_indices(g.left, size, g.width, values.shape[1])
        masks[i] = torch.from_numpy(np.where(values[np.ix_(rows, cols)] > 0, OBJECT, BACKGROUND).astype(np.int8))
    return masks


def _imagefolder(
    source: str, image_size: int | None, cifar10: bool
) -> tuple[tuple[str, ...], ImageSplit | FileSplit, ImageSplit, int]:
    """An image-folder tree: classes, the training split (in memory or on disk), the test split in memory, the size."""
    folder = extract_archive(source) if is_archive(Path(source)) else Path(source)
    if not folder.is_dir():
        raise DataError(f"data_source={source!r} is neither a folder nor a .tar.gz/.tgz/.tar archive")
    root = find_imagefolder_root(folder)
    classes, files = list_imagefolder(root)
    fit = image_size is not None and not cifar10
    size = image_size if image_size is not None else _common_size(files["train"] + files["test"], root)
    if cifar10 or not SPECS["imagefolder"].streamed(size):
        train: ImageSplit | FileSplit = cached_split(root, "train", files["train"], size, fit)
    else:
        paths = tuple(str(p) for p, _ in files["train"])
        labels = torch.tensor([label for _, label in files["train"]], dtype=torch.int64)
        train = FileSplit(paths, labels, torch.arange(len(paths)))
    test = cached_split(root, "test", files["test"], size, fit or SPECS["imagefolder"].streamed(size))
    if not cifar10 and (root / "test-segmentation").is_dir():
        test = replace(test, masks=_binary_masks(root, files["test"], classes, size))
    return classes, train, test, size


# --------------------------------------------------------------------------- ImageNet-S50


def _eval_cache(records: list[imagenet_s.ImageRecord], size: int, with_masks: bool) -> Path:
    """The cache file of records decoded at `size`: named after the files' names, sizes and dates."""
    digest = hashlib.sha1(f"{size}|{with_masks}".encode())
    for record in records:
        for path in (record.path, record.mask_path) if with_masks else (record.path,):
            assert path is not None
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return data_dir() / "cache" / f"eval-{digest.hexdigest()[:16]}.npz"


def _decode_cached(
    records: list[imagenet_s.ImageRecord], size: int, workers: int, with_masks: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (and masks) of `records` at evaluation size, decoded once and cached under data/cache/."""
    cache = _eval_cache(records, size, with_masks)
    if cache.is_file():
        with np.load(cache) as npz:
            return torch.from_numpy(npz["images"]), torch.from_numpy(npz["masks"]) if with_masks else None
    plain = records if with_masks else [replace(r, mask_path=None) for r in records]
    images, masks = imagenet_s.decode_eval(plain, size, default_resize(size), workers)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        if masks is None:
            np.savez(fh, images=images.numpy())
        else:
            np.savez(fh, images=images.numpy(), masks=masks.numpy())
    return images, masks


def _attached_masks(test: list[imagenet_s.ImageRecord], mask_source: str, size: int, workers: int) -> torch.Tensor:
    """Masks of an ImageNetS50 folder's validation images for the ImageNet-1k validation images they belong to.

    Paired by `<wnid>/<file stem>`; the other test images get an all-ignore mask (no coherence).
    """
    attached = _attached_records(test, mask_source)
    matched = [i for i, r in enumerate(attached) if r is not None]
    masks = torch.full((len(test), size, size), IGNORE, dtype=torch.int8)
    _, found = _decode_cached([r for r in attached if r is not None], size, workers, with_masks=True)
    assert found is not None
    masks[matched] = found
    return masks


def _attached_records(test: list[imagenet_s.ImageRecord], mask_source: str) -> list[imagenet_s.ImageRecord | None]:
    """The ImageNetS50 validation record (with its mask) of each ImageNet-1k test image, paired by `<wnid>/<stem>`."""
    tree = imagenet_s.imagenet_s50_layout(mask_source, ("validation",))
    by_id = {r.image_id: r for r in tree.records("validation")}
    attached = [by_id.get(r.image_id) for r in test]
    if not any(attached):
        raise DataError(
            f"none of the {len(test)} test images has a mask in {mask_source}: mask_source must be the ImageNetS50 "
            "folder of the same validation images (ILSVRC2012_val_*.JPEG in the same wnid folders)"
        )
    return attached


def _is_official(path: Path) -> bool:
    """Whether an ImageNet-S50 data source is an ImageNetS50 folder (with masks), not an ImageNet-1k tree."""
    return any((candidate / "validation").is_dir() for candidate in (path, path / "ImageNetS50"))


def _imagenet_s50(
    source: str, mask_source: str | None, size: int, workers: int
) -> tuple[tuple[str, ...], FileSplit, ImageSplit]:
    """The 50 classes: an ImageNetS50 folder (train/, validation/ with validation-segmentation/) or an ImageNet-1k tree."""
    path = Path(source)
    official = _is_official(path)
    if official and mask_source:
        raise DataError(
            f"mask_source={mask_source!r} is for an ImageNet-1k data source: the ImageNetS50 folder {source} carries "
            "its own masks (validation-segmentation/); leave mask_source empty"
        )
    if official:
        tree = imagenet_s.imagenet_s50_layout(path, ("train", "validation"))
        train_records, test_records = list(tree.records("train")), list(tree.records("validation"))
    else:
        tree = imagenet_s.imagenet1k_layout(path, ("train", "val"))
        train_records, test_records = list(tree.records("train")), list(tree.records("val"))
    images, masks = _decode_cached(test_records, size, workers, with_masks=official)
    if not official and mask_source:
        masks = _attached_masks(test_records, mask_source, size, workers)
    train = FileSplit(
        tuple(str(r.path) for r in train_records),
        torch.tensor([r.label for r in train_records], dtype=torch.int64),
        torch.arange(len(train_records)),
    )
    labels = torch.tensor([r.label for r in test_records], dtype=torch.int64)
    return tree.wnids, train, ImageSplit(images, labels, torch.arange(len(test_records)), masks)


def mask_files(data: Dataset) -> list[Path | None]:
    """The mask file of every test image of `data`, indexed by image id; None where an image has none.

    Listed again from the data source (and `source_of_masks`), in the order `load_dataset`
    gave the test images their ids; for a data set whose test images carry masks.
    """
    if data.test.masks is None:
        raise DataError(f"the test images of {data.info.name!r} carry no masks: there is no mask file to read")
    path = Path(data.source)
    if data.info.name == "imagenet_s50" and _is_official(path):
        return [r.mask_path for r in imagenet_s.imagenet_s50_layout(path, ("validation",)).records("validation")]
    if data.info.name == "imagenet_s50":
        assert data.source_of_masks is not None  # an ImageNet-1k tree has masks only from a mask source
        test = list(imagenet_s.imagenet1k_layout(path, ("val",)).records("val"))
        return [None if r is None else r.mask_path for r in _attached_records(test, data.source_of_masks)]
    root = find_imagefolder_root(extract_archive(data.source) if is_archive(path) else path)
    classes, files = list_imagefolder(root)
    return [_segmentation_path(root, classes, file, label) for file, label in files["test"]]


def authors_test_masks(data: Dataset, ids: torch.Tensor) -> torch.Tensor:
    """The masks of the test images `ids` read as the authors read them (`imagenet_s.authors_object_mask`).

    int8 (N, S, S): 1 object, 0 background, and -1 (ignore) everywhere for an image without
    a mask file, which coherence then leaves unscored. The crop is the test images' own:
    Resize(default_resize) + CenterCrop for ImageNet-S50, a fit to the side for image folders.
    """
    files = mask_files(data)
    size = data.info.image_size
    resize = default_resize(size) if data.info.name == "imagenet_s50" else size
    masks = torch.full((len(ids), size, size), IGNORE, dtype=torch.int8)
    for row, image_id in enumerate(ids.tolist()):
        if (path := files[image_id]) is not None:
            masks[row] = imagenet_s.authors_object_mask(path, size, resize).to(torch.int8)
    return masks


# --------------------------------------------------------------------------- the one entry point


def resolve_mask_source(mask_source: str | None) -> str | None:
    """The `mask_source` parameter as a path, or None: "auto" (or None) reads $CLXAI_MASK_SOURCE, "" means none."""
    if mask_source in (None, "auto"):
        mask_source = os.environ.get(MASK_SOURCE_ENV, "")
    if mask_source == "":
        return None
    if not isinstance(mask_source, str) or not from_repo_root(mask_source).exists():
        where = relative_path_note(mask_source) if isinstance(mask_source, str) else ""
        raise DataError(
            f"mask_source={mask_source!r} does not exist{where}; give a folder or archive of images with masks"
        )
    return str(from_repo_root(mask_source).resolve())


def load_dataset(
    dataset: str = "cifar10",
    data_source: str | None = "auto",
    image_size: int | None = None,
    mask_source: str | None = None,
    workers: int = 0,
    normalisation: tuple[Statistics, Statistics] | None = None,
) -> Dataset:
    """Load `dataset` (see the table of the module docstring) from `data_source` ("auto", "torchvision" or a path).

    `image_size` is the profile's `data.image_size` (None: the spec's); `mask_source` is
    read as the table says; `workers` processes decode ImageNet images. `normalisation`
    (mean, std) is what 00_data recorded for a data set without published statistics;
    without it those are computed here from the training split.
    """
    spec = SPECS[check_choice("dataset", dataset, DATASETS)]
    if image_size is not None:
        check_positive_int("image_size", image_size)
        if dataset == "cifar10" and image_size != 32:
            raise DataError(f"image_size={image_size} is not possible for cifar10, whose images are 32x32")
    source = resolve_source(data_source)
    if source == "torchvision" and dataset != "cifar10":
        raise DataError(
            f"data_source='torchvision' downloads CIFAR-10 only; give the folder of {dataset!r}.\n"
            + no_data_message(dataset)
        )
    mask_set = None
    train: ImageSplit | FileSplit
    if dataset == "imagenet_s50":
        size = image_size or int(spec.image_size or 224)
        classes, train, test = _imagenet_s50(source, mask_source, size, workers)
    elif source == "torchvision":
        classes, train, test = load_torchvision_cifar10()
        size = 32
    else:
        classes, train, test, size = _imagefolder(source, image_size or spec.image_size, cifar10=dataset == "cifar10")
    if dataset == "cifar10" and mask_source:
        mask_set = load_realmask(mask_source, classes)
    elif dataset != "imagenet_s50" and mask_source:
        raise DataError(
            f"mask_source is read for cifar10 and imagenet_s50 only; {dataset!r} takes its masks from test-segmentation/"
        )
    if spec.mean is not None and spec.std is not None:
        mean, std = spec.mean, spec.std
    else:
        mean, std = normalisation or channel_statistics(train, size, workers)
    return Dataset(DatasetInfo(dataset, mean, std, size), classes, train, test, source, mask_set, mask_source)


def augmentation_examples(
    split: ImageSplit | FileSplit, size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The paper's augmentations (docs/method.md, "Training") applied to the images of `split`, for a figure.

    Floats in [0, 1], one row per name: the image as evaluated, a CE view, two SupCon views.
    In memory (CIFAR-10, small image folders): crop with padding + flip; RandomResizedCrop(scale
    0.2-1), flip, jitter 0.4 and grayscale. On disk (ImageNet-S50): RandomResizedCrop + flip while
    decoding, then jitter 0.8, grayscale and Gaussian blur on the batch, as the trainer does.
    """
    from clxai_utils.data import augment
    from clxai_utils.data.stream import CenterCropStream, RandomResizedCropStream

    if isinstance(split, ImageSplit):
        views = augment.make_views(split.images, augment.supcon_augment, generator)
        return {
            "original": augment.to_float_images(split.images),
            "CE view": augment.ce_augment(split.images, generator),
            "SupCon view 1": views[:, 0],
            "SupCon view 2": views[:, 1],
        }
    seed = int(torch.randint(0, 2**31, (1,), generator=generator))
    records, n = split.records(), len(split)
    evaluated = CenterCropStream(records, size, default_resize(size))
    one, two = (RandomResizedCropStream(records, size, views, seed=seed + views) for views in (1, 2))
    originals = torch.stack([evaluated[i][0] for i in range(n)])
    ce = torch.stack([one[i][0][0] for i in range(n)])
    crops = torch.stack([two[i][0] for i in range(n)])
    coloured = augment.imagenet_supcon_colour(crops.flatten(0, 1), generator).view(crops.shape)
    return {
        "original": augment.to_float_images(originals),
        "CE view": augment.to_float_images(ce),
        "SupCon view 1": coloured[:, 0],
        "SupCon view 2": coloured[:, 1],
    }
