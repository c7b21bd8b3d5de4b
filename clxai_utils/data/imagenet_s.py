"""ImageNet-S50: the official layout, ImageNet-1k restricted to its 50 classes, and evaluation-size decoding.

The official preparation scripts write

    ImageNetS50/{train,train-semi,validation,test}/<wnid>/<file>.JPEG
    ImageNetS50/{train-semi,validation}-segmentation/<wnid>/<file>.png

and a mask is an RGB PNG at the image's original size whose pixel class id is R + 256 G:
0 = "other", 1..50 = the class at that position in the sorted wnid list, 1000 = ignore.

What this module does differently from the authors' code, and why:
- images and masks are paired by relative path (``<wnid>/<stem>``), never by zipping two
  sorted lists, so a missing or extra file is an error instead of a silent shift;
- the object mask of an image is its own class id only; ignore (1000) stays a third value
  (-1) instead of counting as object (the authors tested R > 0, and 1000 has R = 232);
- masks follow the image's resize and crop with nearest-neighbour sampling, so no id that
  is not in the mask can appear (bilinear resizing blends ids into invented ones).

Images are decoded and resized with PIL, as torchvision's standard ImageNet transforms do on
PIL images, so the evaluation crop is exactly torchvision's Resize(256) + CenterCrop(224).
torchvision.io decodes faster but is deprecated since torchvision 0.29 (see
`clxai_utils.data.stream` for the measurements).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clxai_utils.core.validate import check_choices, check_positive_int
from clxai_utils.data.geometry import (
    EVAL_SIZE,
    check_eval_size,
    eval_geometry,
    nearest_source_indices,
    resize_center_crop,
)
from clxai_utils.data.masks import IGNORE
from clxai_utils.data.sources import DataError, open_rgb

# fmt: off
IMAGENET_S50_WNIDS = (
    "n01443537", "n01491361", "n01531178", "n01644373", "n02104029", "n02119022", "n02123597", "n02133161",
    "n02165456", "n02281406", "n02325366", "n02342885", "n02396427", "n02483362", "n02504458", "n02510455",
    "n02690373", "n02747177", "n02783161", "n02814533", "n02859443", "n02917067", "n02992529", "n03014705",
    "n03047690", "n03095699", "n03197337", "n03201208", "n03445777", "n03452741", "n03584829", "n03630383",
    "n03775546", "n03791053", "n03874599", "n03891251", "n04026417", "n04335435", "n04380533", "n04404412",
    "n04447861", "n04507155", "n04522168", "n04557648", "n04562935", "n04612504", "n06794110", "n07749582",
    "n07831146", "n12998815",
)
IMAGENET1K_INDICES = (
    1, 3, 11, 31, 222, 277, 284, 295, 301, 325, 330, 333, 342, 368, 386, 388, 404, 412, 418, 436, 449, 466, 487,
    492, 502, 510, 531, 532, 574, 579, 606, 617, 659, 670, 695, 703, 748, 829, 846, 851, 861, 879, 883, 898, 900,
    914, 919, 951, 959, 992,
)
# fmt: on
OTHER_ID = 0
IGNORE_ID = 1000

S50_SPLITS = ("train", "train-semi", "validation", "test")
MASK_FOLDERS = {"validation": "validation-segmentation", "train-semi": "train-semi-segmentation"}
IMAGENET1K_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def mask_class_id(wnid: str) -> int:
    """The id that stands for `wnid` in ImageNet-S50 masks: its position in the full 50-list, from 1."""
    if wnid not in IMAGENET_S50_WNIDS:
        raise DataError(f"{wnid!r} is not an ImageNet-S50 wnid; the 50 are listed in IMAGENET_S50_WNIDS")
    return IMAGENET_S50_WNIDS.index(wnid) + 1


# --------------------------------------------------------------------------- mask encoding


def decode_class_ids(rgb: np.ndarray) -> np.ndarray:
    """Class ids (H, W) int32 = R + 256 G of an ImageNet-S mask given as (H, W, 3) uint8."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"an ImageNet-S mask must be a uint8 array (H, W, 3) (RGB), got {got}")
    return rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)


def object_mask(class_ids: np.ndarray, own_class_id: int) -> np.ndarray:
    """int8 mask of one image's object: 1 = own class id, -1 = ignore (1000), 0 = everything else.

    "Everything else" is "other" (0) and the pixels of any other class: in an image of class
    A that also shows an object of class B, B's pixels are background, because the
    explanation of A should not point there.
    """
    if not isinstance(class_ids, np.ndarray) or not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError("class_ids must be an integer array (decode_class_ids of a mask)")
    if isinstance(own_class_id, bool) or not isinstance(own_class_id, (int, np.integer)):
        raise ValueError(f"own_class_id must be an integer class id, got {own_class_id!r}")
    if not OTHER_ID < own_class_id < IGNORE_ID:
        raise ValueError(f"own_class_id must be a class id between 1 and 999, got {own_class_id}")
    mask = (class_ids == own_class_id).astype(np.int8)
    mask[class_ids == IGNORE_ID] = IGNORE
    return mask


def read_class_ids(path: Path) -> np.ndarray:
    """Decode an ImageNet-S mask file into class ids (H, W), refusing non-RGB files and unknown ids."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA", "P"):
                raise DataError(
                    f"mask {path} has PIL mode {img.mode}; ImageNet-S masks are RGB PNGs with class id = R + 256 G"
                )
            ids = decode_class_ids(np.asarray(img.convert("RGB")))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read mask {path}: {err}") from err
    known = (ids <= len(IMAGENET_S50_WNIDS)) | (ids == IGNORE_ID)
    if not known.all():
        raise DataError(
            f"mask {path} holds class ids {np.unique(ids[~known])[:10].tolist()} outside 0 (other), "
            f"1..{len(IMAGENET_S50_WNIDS)} (the ImageNet-S50 classes) and {IGNORE_ID} (ignore); "
            "is it an ImageNet-S50 mask, unresized, with id = R + 256 G?"
        )
    return ids


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file, label (index among the classes present), wnid, id and mask file.

    `class_id` is the id of the wnid in masks (position in the full 50-list + 1), which
    differs from `label` + 1 when only some of the 50 classes are present.
    """

    path: Path
    label: int
    wnid: str
    image_id: str
    class_id: int
    mask_path: Path | None = None


@dataclass(frozen=True)
class ImageNetS50Tree:
    """A tree of images of the 50 classes: the wnids present (sorted) and the sorted records per split."""

    root: Path
    wnids: tuple[str, ...]
    splits: Mapping[str, tuple[ImageRecord, ...]]

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The mask class id of each present wnid, in label order."""
        return tuple(mask_class_id(w) for w in self.wnids)

    def records(self, split: str) -> tuple[ImageRecord, ...]:
        """The sorted records of `split` (one of the splits read)."""
        if split not in self.splits:
            raise DataError(f"split {split!r} was not read from {self.root}; read splits: {list(self.splits)}")
        return self.splits[split]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))


def find_imagenet_s50_root(folder: str | Path) -> Path:
    """The ImageNetS50 folder: `folder` itself, its child ImageNetS50/, or its only subfolder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"ImageNet-S50 folder {folder} does not exist")
    children = _subfolders(folder)
    candidates = [folder, folder / "ImageNetS50", *(children if len(children) == 1 else [])]
    for candidate in candidates:
        if any((candidate / s).is_dir() for s in S50_SPLITS):
            return candidate
    raise DataError(
        f"no ImageNet-S50 layout in {folder}: expected {folder}/ImageNetS50/ (or {folder} itself) holding "
        "train/, validation/ and validation-segmentation/ with one folder per wnid, as the official "
        "ImageNet-S preparation scripts write them"
    )


def _image_files(folder: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """The image files of a wnid folder by file stem (a stem twice, e.g. a.JPEG and a.png, is ambiguous)."""
    suffixes = tuple(suffixes)
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
            if path.stem in files:
                raise DataError(f"{files[path.stem]} and {path} have the same name stem; keep one of them")
            files[path.stem] = path
    return files


def _wnid_folders(split_dir: Path, strict: bool) -> dict[str, Path]:
    """The wnid folders of a split among the 50; `strict` refuses any other folder instead of skipping it."""
    folders = {}
    for child in _subfolders(split_dir):
        if child.name in IMAGENET_S50_WNIDS:
            folders[child.name] = child
        elif strict:
            raise DataError(
                f"{child} is not an ImageNet-S50 class folder: its name must be one of the 50 wnids "
                "listed in IMAGENET_S50_WNIDS (clxai_utils.data.imagenet_s)"
            )
    return folders


def _common_wnids(root: Path, folders: Mapping[str, Mapping[str, Path]]) -> tuple[str, ...]:
    """The wnids present, which every split must share (a class missing from a split has no label there)."""
    sets = {split: set(found) for split, found in folders.items()}
    union = set().union(*sets.values())
    for split, found in sets.items():
        if found != union:
            raise DataError(
                f"the splits of {root} hold different wnids: {root / split} lacks {sorted(union - found)}; "
                "every split needs the same class folders"
            )
    return tuple(sorted(union))


def _orphan_error(orphans: list[Path], what: str, expected: str) -> DataError:
    more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
    return DataError(
        f"{what} {orphans[0]}{more} has no {expected}; images and masks are paired by <wnid>/<file stem> "
        "(<wnid>/<stem>.JPEG with <wnid>/<stem>.png)"
    )


def _split_records(split_dir: Path, wnids: Sequence[str], mask_dir: Path | None) -> tuple[ImageRecord, ...]:
    """Sorted records of a split; with `mask_dir`, each image paired with the mask of the same <wnid>/<stem>."""
    images = {}
    for wnid in wnids:
        found = _image_files(split_dir / wnid, IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"class folder {split_dir / wnid} holds no .JPEG/.jpg/.png image")
        images.update({(wnid, stem): path for stem, path in found.items()})
    masks: dict[tuple[str, str], Path] = {}
    if mask_dir is not None:
        for wnid, folder in _wnid_folders(mask_dir, strict=True).items():
            masks.update({(wnid, stem): path for stem, path in _image_files(folder, (".png",)).items()})
        if orphan_masks := [masks[k] for k in sorted(masks.keys() - images.keys())]:
            raise _orphan_error(orphan_masks, "mask", f"image in {split_dir}")
        if orphan_images := [images[k] for k in sorted(images.keys() - masks.keys())]:
            raise _orphan_error(orphan_images, "image", f"mask in {mask_dir}")
    labels = {wnid: label for label, wnid in enumerate(wnids)}
    return tuple(
        ImageRecord(path, labels[wnid], wnid, f"{wnid}/{stem}", mask_class_id(wnid), masks.get((wnid, stem)))
        for (wnid, stem), path in sorted(images.items())
    )


def imagenet_s50_layout(root: str | Path, splits: Sequence[str] = ("train", "validation")) -> ImageNetS50Tree:
    """Read the official ImageNet-S50 layout: per split, the sorted images and (validation, train-semi) their masks.

    A folder with only some of the 50 wnids works (labels then index the wnids present);
    every split read must hold the same wnids.
    """
    splits = check_choices("splits", splits, S50_SPLITS)
    base = find_imagenet_s50_root(root)
    folders = {}
    for split in splits:
        if not (base / split).is_dir():
            raise DataError(
                f"ImageNet-S50 folder {base} lacks the split folder {split}/; expected {base / split}/<wnid>/"
            )
        if split in MASK_FOLDERS and not (base / MASK_FOLDERS[split]).is_dir():
            raise DataError(
                f"ImageNet-S50 folder {base} has {split}/ but no {MASK_FOLDERS[split]}/: the masks (RGB PNG, "
                f"class id = R + 256 G) are expected at {base / MASK_FOLDERS[split]}/<wnid>/<image stem>.png"
            )
        folders[split] = _wnid_folders(base / split, strict=True)
        if not folders[split]:
            raise DataError(f"split folder {base / split} holds no wnid folder")
    wnids = _common_wnids(base, folders)
    records = {
        split: _split_records(base / split, wnids, base / MASK_FOLDERS[split] if split in MASK_FOLDERS else None)
        for split in splits
    }
    return ImageNetS50Tree(base, wnids, records)


def imagenet1k_layout(root: str | Path, splits: Sequence[str] = IMAGENET1K_SPLITS) -> ImageNetS50Tree:
    """The images of the 50 ImageNet-S50 wnids in an ImageNet-1k image-folder tree ROOT/{train,val}/<wnid>/*.JPEG.

    Folders of the other 950 classes are skipped; a single wrapping folder is looked through.
    """
    splits = check_choices("splits", splits, IMAGENET1K_SPLITS)
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"ImageNet-1k folder {base} does not exist")
    children = _subfolders(base)
    if not (base / splits[0]).is_dir() and len(children) == 1:
        base = children[0]
    folders = {}
    for split in splits:
        if not (base / split).is_dir():
            raise DataError(
                f"ImageNet-1k folder {base} lacks the split folder {split}/; expected {base / split}/<wnid>/*.JPEG"
            )
        folders[split] = _wnid_folders(base / split, strict=False)
        if not folders[split]:
            raise DataError(
                f"{base / split} holds none of the 50 ImageNet-S50 wnids (IMAGENET_S50_WNIDS) as a folder; expected "
                f"the image-folder layout {base / split}/<wnid>/*.JPEG (validation images sorted into wnid folders, "
                "as torchvision's ImageFolder reads ImageNet)"
            )
    wnids = _common_wnids(base, folders)
    return ImageNetS50Tree(base, wnids, {split: _split_records(base / split, wnids, None) for split in splits})


def load_eval_mask(
    path: str | Path,
    own_class_id: int,
    image_size_wh: tuple[int, int],
    size: int = EVAL_SIZE,
    resize: int | None = None,
) -> torch.Tensor:
    """The object mask (`object_mask`) of an image at evaluation size: int8 (size, size), 1 / 0 / -1.

    The mask must have its image's original size `image_size_wh` (width, height); it is
    resized and cropped with the image's geometry, sampling nearest neighbours only.
    """
    ids = read_class_ids(Path(path))
    height, width = ids.shape
    if (width, height) != tuple(image_size_wh):
        raise DataError(
            f"mask {path} is {width}x{height} pixels but its image is {image_size_wh[0]}x{image_size_wh[1]}; "
            "ImageNet-S masks have their image's original size (is the mask resized or paired with another image?)"
        )
    g = eval_geometry(width, height, size, resize)
    rows = nearest_source_indices(g.top, size, g.height, height)
    cols = nearest_source_indices(g.left, size, g.width, width)
    return torch.from_numpy(object_mask(ids[np.ix_(rows, cols)], own_class_id))


def authors_object_mask(path: str | Path, size: int = EVAL_SIZE, resize: int | None = None) -> torch.Tensor:
    """The object mask as the authors' coherence read it: bool (size, size), True where red > 0.

    The RGB mask goes through the image's Resize (bilinear, antialiased) + CenterCrop and
    only its red channel is tested, so, unlike `load_eval_mask`: "ignore" (1000, red 232)
    and every annotated class count as object, a class id that is a multiple of 256 (red 0)
    counts as background, and blending turns pixels next to an object into object too.
    Kept to measure the authors' protocol (`authors_coherence`), not to score with.
    """
    return resize_center_crop(open_rgb(path), size, resize)[0] > 0


# --------------------------------------------------------------------------- batch decoding


class _EvalDecode(Dataset):
    """Records decoded at evaluation size, with their masks when `with_masks`."""

    def __init__(self, records: Sequence[ImageRecord], size: int, resize: int | None, with_masks: bool) -> None:
        self.records, self.size, self.resize, self.with_masks = list(records), size, resize, with_masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        record = self.records[index]
        image = open_rgb(record.path)
        mask = None
        if self.with_masks:
            assert record.mask_path is not None  # checked by decode_eval
            mask = load_eval_mask(record.mask_path, record.class_id, image.size, self.size, self.resize)
        return resize_center_crop(image, self.size, self.resize), mask


def _collate_eval(items: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    masks = [m for _, m in items if m is not None]
    return torch.stack([image for image, _ in items]), torch.stack(masks) if masks else None


def decode_eval(
    records: Sequence[ImageRecord],
    size: int = EVAL_SIZE,
    resize: int | None = None,
    num_workers: int = 0,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode records at evaluation size, in record order: uint8 (N, 3, S, S) and, if they have masks, int8 (N, S, S).

    `num_workers` DataLoader processes decode in parallel (0 decodes in this process).
    """
    if not records:
        raise ValueError("records is empty: nothing to decode")
    with_masks = records[0].mask_path is not None
    if any((r.mask_path is not None) != with_masks for r in records):
        raise ValueError("either every record or none must have a mask_path (records of one split)")
    check_eval_size(size, resize)  # before any worker starts
    loader = DataLoader(
        _EvalDecode(records, size, resize, with_masks),
        batch_size=check_positive_int("batch_size", batch_size),
        num_workers=num_workers,
        collate_fn=_collate_eval,
    )
    images = torch.empty((len(records), 3, size, size), dtype=torch.uint8)
    masks = torch.empty((len(records), size, size), dtype=torch.int8) if with_masks else None
    start = 0
    for batch_images, batch_masks in loader:
        stop = start + len(batch_images)
        images[start:stop] = batch_images
        if masks is not None and batch_masks is not None:
            masks[start:stop] = batch_masks
        start = stop
    return images, masks
