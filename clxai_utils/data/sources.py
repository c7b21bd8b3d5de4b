"""Where images come from: data sources, archives, image-folder trees, decoding and the cache.

Sources (the `data_source` parameter, or the `CLXAI_DATA_SOURCE` environment variable):

* ``"torchvision"`` - the official CIFAR-10 download (md5-checked by torchvision), the
  default for users with internet access;
* a folder holding an image-folder tree ``ROOT/{train,test}/<class>/*.{png,jpg}``
  (a single wrapping folder such as ``cifar10_jpeg/`` is looked through);
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` of such a tree, extracted once under ``data/``.

Every source ends up as two in-memory `ImageSplit`s of uint8 images with labels and
stable image ids (the index of the image in its full split, in sorted file order), so
that every later stage can name an image by `(split, id)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clxai_utils.core.artifacts import atomic_path, read_json, write_json
from clxai_utils.core.paths import data_dir, repo_root
from clxai_utils.data.geometry import EVAL_SIZE, resize_center_crop

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SOURCE_ENV = "CLXAI_DATA_SOURCE"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(RuntimeError):
    """The data cannot be found, read or trusted; the message says what to do."""


class _Labelled:
    """What every split has: one label and one stable id per image."""

    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> list[int]:
        """Number of images per class, in class order."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass
class ImageSplit(_Labelled):
    """One split held in memory: uint8 images (N, 3, H, W), labels, stable image ids and, where the data set
    has them, object masks (N, H, W) int8 (1 object, 0 background, -1 ignore; `clxai_utils.data.masks`)."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    masks: torch.Tensor | None = None

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageSplit:
        """The images at `indices` (positions in this split), keeping their original ids."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        masks = None if self.masks is None else self.masks[idx]
        return ImageSplit(self.images[idx], self.labels[idx], self.ids[idx], masks)


@dataclass
class FileSplit(_Labelled):
    """One split kept as image files, decoded (and augmented) batch by batch while training
    (`clxai_utils.data.stream`): ImageNet's tens of thousands of full-size JPEGs do not fit in memory."""

    paths: tuple[str, ...]
    labels: torch.Tensor
    ids: torch.Tensor

    def subset(self, indices: np.ndarray | torch.Tensor) -> FileSplit:
        """The files at `indices` (positions in this split), keeping their original ids."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return FileSplit(tuple(self.paths[i] for i in idx.tolist()), self.labels[idx], self.ids[idx])

    def records(self) -> list[tuple[str, int]]:
        """(path, label) pairs, what the streaming datasets read."""
        return list(zip(self.paths, self.labels.tolist()))


# --------------------------------------------------------------------------- sources


def no_data_message(dataset: str) -> str:
    """What a user without data (or without network) should do."""
    return (
        f"No data for dataset {dataset!r}. Provide it in one of these ways:\n"
        "  1. data_source='torchvision' with internet access (official CIFAR-10 download, md5-checked);\n"
        "  2. data_source='/path/to/ROOT' where ROOT/{train,test}/<class>/*.png|jpg is an image-folder tree;\n"
        "  3. data_source='/path/to/archive.tar.gz' holding such a tree (extracted once under data/).\n"
        f"In a sweep or CI, export {SOURCE_ENV}=<one of the above> instead of passing the parameter; "
        "CI uses a JPEG copy of CIFAR-10 as a .tar.gz (option 3)."
    )


def download_failed_message(err: BaseException) -> str:
    """What to do when torchvision's CIFAR-10 download fails (an offline machine, a proxy, a bad checksum)."""
    return (
        f"the official CIFAR-10 download failed ({type(err).__name__}: {err}). "
        f"data_source was 'torchvision', or 'auto' with {SOURCE_ENV} unset, so the images were to be downloaded; "
        "on a machine without internet give them instead: the data_source parameter "
        f"(-p data_source PATH) or the environment variable {SOURCE_ENV}=PATH, where PATH is a folder "
        "ROOT/{train,test}/<class>/*.png|jpg or the CIFAR-10 .tar.gz of such a tree "
        "(a relative PATH is read from the repository root).\n" + no_data_message("cifar10")
    )


def resolve_source(data_source: str | None) -> str:
    """Turn the `data_source` parameter ("auto", "torchvision" or a path) into a concrete source."""
    if data_source in (None, "", "auto"):
        data_source = os.environ.get(SOURCE_ENV) or "torchvision"
    if not isinstance(data_source, str):
        raise DataError(f"data_source must be 'auto', 'torchvision' or a path, got {data_source!r}")
    if data_source == "torchvision":
        return data_source
    path = from_repo_root(data_source)
    if not path.exists():
        raise DataError(
            f"data_source={data_source!r} does not exist{relative_path_note(data_source)}.\n"
            + no_data_message("cifar10")
        )
    return str(path.resolve())


def from_repo_root(path: str | os.PathLike[str]) -> Path:
    """`path` with `~` expanded, a relative one read from the repository root, not from the cwd.

    JupyterLab starts a kernel in notebooks/, papermill (make, the sweep) in the caller's folder:
    the same relative `data_source` would name two places.
    """
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else repo_root() / expanded


def relative_path_note(path: str | os.PathLike[str]) -> str:
    """For an error about a missing path: where a relative one was looked for."""
    if Path(path).expanduser().is_absolute():
        return ""
    return f" (a relative path is read from the repository root: looked for {repo_root() / Path(path)})"


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file (the checksum torchvision and the shared data README quote)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_member(member: tarfile.TarInfo, target: Path) -> None:
    """Refuse archive members that would land outside `target` or are not plain files/folders."""
    destination = (target / member.name).resolve()
    if destination != target and target not in destination.parents:
        raise DataError(f"refusing archive member {member.name!r}: it would be written outside {target}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"refusing archive member {member.name!r}: only regular files and folders are allowed")


def extract_archive(archive: str | Path, root: Path | None = None) -> Path:
    """Extract `archive` once and return the extracted folder.

    The extraction goes to a temporary folder that is renamed into place and marked
    complete only at the end, so an interrupted extraction is detected and redone.
    """
    archive = Path(archive).resolve()
    md5 = file_md5(archive)
    name = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    target = (root or data_dir() / "extracted") / f"{name}-{md5[:8]}"
    marker = target / ".extracted.json"
    if marker.is_file() and read_json(marker).get("md5") == md5:
        return target
    if target.exists():
        shutil.rmtree(target)  # left behind by an interrupted extraction
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)).resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, staging)
            tar.extractall(staging, members=members, filter="data")
        os.replace(staging, target)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"archive {archive} is truncated or corrupt ({err}); download or copy it again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(marker, {"archive": str(archive), "md5": md5})
    return target


def find_imagefolder_root(folder: Path) -> Path:
    """The folder holding `train/` and `test/`, looking through one wrapping folder."""
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if len(children) == 1 and any((children[0] / s).is_dir() for s in SPLITS):
        folder = children[0]
    missing = [s for s in SPLITS if not (folder / s).is_dir()]
    if missing:
        raise DataError(
            f"image folder {folder} lacks the split folder(s) {missing}; expected ROOT/train/<class>/ and ROOT/test/<class>/"
        )
    return folder


# --------------------------------------------------------------------------- image folders


def list_imagefolder(root: Path) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]]]:
    """Class names and, per split, the sorted (file, label) pairs; checks the tree's consistency."""
    classes_per_split = {
        s: sorted(c.name for c in (root / s).iterdir() if c.is_dir() and not c.name.startswith(".")) for s in SPLITS
    }
    if classes_per_split["train"] != classes_per_split["test"]:
        only_train = sorted(set(classes_per_split["train"]) - set(classes_per_split["test"]))
        only_test = sorted(set(classes_per_split["test"]) - set(classes_per_split["train"]))
        raise DataError(
            f"class folders differ between train and test in {root}: only in train {only_train}, only in test {only_test}"
        )
    classes = tuple(classes_per_split["train"])
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); a classifier needs at least 2")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        files[split] = []
        for label, cls in enumerate(classes):
            # One folder: ordering by name is Path's order, without its costly comparisons (60,000 files).
            found = (p for p in (root / split / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            images = sorted(found, key=lambda p: p.name)
            if not images:
                raise DataError(f"class folder {root / split / cls} holds no .png/.jpg image")
            files[split].extend((p, label) for p in images)
    return classes, files


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file into an RGB PIL image (grey, CMYK, palette and alpha images converted)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def load_eval_image(path: str | Path, size: int = EVAL_SIZE, resize: int | None = None) -> torch.Tensor:
    """An image at evaluation size: uint8 (3, size, size), resized (short side `resize`) and centre-cropped."""
    return resize_center_crop(open_rgb(path), size, resize)


def decode_images(paths: list[Path], size: int, fit: bool = False) -> np.ndarray:
    """Decode RGB images into a uint8 array (N, 3, size, size).

    Images must be `size` x `size` pixels, unless `fit`: then each is resized (short side to
    `size`, antialiased) and centre-cropped to a square, as an evaluation crop without margin.
    """
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        rgb = open_rgb(path)
        if rgb.size == (size, size):
            out[i] = np.asarray(rgb).transpose(2, 0, 1)
        elif fit:
            out[i] = resize_center_crop(rgb, size, size).numpy()
        else:
            raise DataError(f"image {path} is {rgb.size[0]}x{rgb.size[1]} pixels; this data set expects {size}x{size}")
    return out


def _listing_key(root: Path, split: str, files: list[tuple[Path, int]], size: int, fit: bool) -> str:
    """A key that changes whenever a file is added, removed, renamed or rewritten."""
    digest = hashlib.sha1(f"{root.resolve()}|{split}|{size}|{fit}".encode())
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path.name}|{label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_split(root: Path, split: str, files: list[tuple[Path, int]], size: int, fit: bool = False) -> ImageSplit:
    """Decode a split once (`decode_images`); later notebooks read the cached uint8 array under data/cache/."""
    cache = data_dir() / "cache" / f"{split}-{_listing_key(root, split, files, size, fit)}.npz"
    if cache.is_file():
        with np.load(cache) as npz:
            images, labels = npz["images"], npz["labels"]
    else:
        images = decode_images([p for p, _ in files], size, fit)
        labels = np.array([lab for _, lab in files], dtype=np.int64)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=labels)
    return ImageSplit(torch.from_numpy(images), torch.from_numpy(labels), torch.arange(len(labels)))


def load_torchvision_cifar10() -> tuple[tuple[str, ...], ImageSplit, ImageSplit]:
    """The official CIFAR-10 through torchvision (downloaded once, md5-checked)."""
    from torchvision.datasets import CIFAR10

    root = data_dir() / "cifar10"
    splits = []
    for train in (True, False):
        try:
            ds = CIFAR10(root, train=train, download=True)
        except Exception as err:  # no network, proxy errors, md5 mismatch: all end the same way
            # `from None`: the message says all there is; urllib's 60-line traceback would bury it
            raise DataError(download_failed_message(err)) from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(ImageSplit(images, torch.tensor(ds.targets, dtype=torch.long), torch.arange(len(ds.targets))))
    return tuple(ds.classes), splits[0], splits[1]


# --------------------------------------------------------------------------- synthetic data


def write_synthetic_imagefolder(
    root: str | Path,
    classes: tuple[str, ...] = CIFAR10_CLASSES,
    per_class: tuple[int, int] = (24, 8),
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a small learnable image-folder tree (class = colour and stripe pattern) for tests and offline demos."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in zip(SPLITS, per_class):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            hue = np.array([label % 3, (label // 3) % 3, (label // 9) % 3]) / 2.0
            stripes = ((xx * np.cos(label) + yy * np.sin(label)) // 4 % 2)[..., None]
            for i in range(count):
                img = 0.5 * hue + 0.3 * stripes + 0.2 * rng.random((size, size, 3))
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root
