"""The data of one run (00_data): class-balanced subsets, the manifest, and the checked reload.

`prepare_data` draws the profile's subsets and records them, with checksums, in the run's
manifest; every later stage calls `load_prepared`, which reloads exactly those images and
refuses them if they no longer match.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from clxai_utils.core.artifacts import read_json, write_json
from clxai_utils.core.run import Run
from clxai_utils.data.datasets import SPECS, STATISTICS_SAMPLE, Dataset, load_dataset, resolve_mask_source
from clxai_utils.data.masks import IGNORE, MaskSet
from clxai_utils.data.sources import SPLITS, DataError, FileSplit, ImageSplit

WHOLE_TEST = "test_all"  # the manifest's checksum key of the whole test split (`accuracy_on: all`)


def balanced_subset(labels: torch.Tensor, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of a class-balanced subset: `per_class` images of every class.

    The draw uses its own generator seeded by `seed`, so the subset is the same for every
    model and every run; `None` keeps the whole split.
    """
    labels_np = labels.numpy()
    if per_class is None:
        return np.arange(len(labels_np))
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels_np):
        members = np.flatnonzero(labels_np == cls)
        if len(members) < per_class:
            raise DataError(f"class {cls} has {len(members)} images, fewer than per_class={per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def at_most_per_class(labels: torch.Tensor, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of up to `per_class` images of every class (all of a class that has fewer).

    For the external mask set, whose classes are uneven (CIFAR-10's real photographs: 17 birds,
    457 cats) and may miss classes altogether; drawn like `balanced_subset`.
    """
    labels_np = labels.numpy()
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(members, size=min(per_class, len(members)), replace=False)
        for members in (np.flatnonzero(labels_np == cls) for cls in np.unique(labels_np))
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


def split_checksum(split: ImageSplit | FileSplit | MaskSet) -> str:
    """SHA-256 of a split: two runs saw the same data iff the checksums match.

    In memory: over pixels, labels, ids (and masks). On disk: over each file's name, size,
    label and id, so a moved data set keeps its checksum and a rewritten file changes it.
    """
    digest = hashlib.sha256()
    if isinstance(split, FileSplit):
        for path, label, image_id in zip(split.paths, split.labels.tolist(), split.ids.tolist()):
            digest.update(f"{Path(path).name}|{Path(path).stat().st_size}|{label}|{image_id}".encode())
        return digest.hexdigest()
    for tensor in (split.images, split.labels, split.ids, split.masks):
        if tensor is not None:
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Manifest:
    """What 00_data wrote: the data's provenance, input size and normalisation, counts, the subsets every
    later stage uses, and the external mask set (CIFAR-10's real photographs) when one was given."""

    dataset: str
    profile: str
    source: str
    classes: list[str]
    counts: dict[str, list[int]]
    subset_ids: dict[str, list[int]]
    checksums: dict[str, str]
    image_size: int
    mean: list[float]
    std: list[float]
    normalisation: str
    train_on_disk: bool
    test_masks: int  # test images that carry an object mask
    mask_source: str | None = None
    mask_images: int = 0
    mask_checksum: str | None = None
    mask_subset: list[int] | None = None  # positions in the mask set the profile keeps; None: all of them

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        data = read_json(path)
        if missing := [
            f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING
        ]:
            raise DataError(f"the data manifest {path} predates {missing}: rerun notebooks/00_data.ipynb")
        return cls(**data)


def build_manifest(
    data: Dataset,
    profile: str,
    subsets: dict[str, np.ndarray],
    accuracy_on: str = "subset",
    mask_subset: np.ndarray | None = None,
) -> Manifest:
    """Describe `data` and the chosen subset positions (per split) for later notebooks.

    With `accuracy_on="all"` the whole test split's checksum is recorded too (as `test_all`),
    since accuracy is then counted on it. `mask_subset` (positions in `data.mask_set`) is the
    part of the external mask set the profile keeps; None keeps it whole.
    """
    chosen = {s: data.split(s).subset(subsets[s]) for s in SPLITS}
    mask_set = _kept_masks(data, mask_subset)
    checksums = {s: split_checksum(split) for s, split in chosen.items()}
    if accuracy_on == "all":
        checksums[WHOLE_TEST] = split_checksum(data.test)
    published = SPECS[data.info.name].mean is not None
    sample = min(STATISTICS_SAMPLE, len(data.train))
    normalisation = "published" if published else f"computed from {sample} of the {len(data.train)} training images"
    test = chosen["test"]
    assert isinstance(test, ImageSplit)  # test splits are always held in memory
    return Manifest(
        dataset=data.info.name,
        profile=profile,
        source=data.source,
        classes=list(data.classes),
        counts={s: data.split(s).class_counts(data.num_classes) for s in SPLITS},
        subset_ids={s: split.ids.tolist() for s, split in chosen.items()},
        checksums=checksums,
        image_size=data.info.image_size,
        mean=list(data.info.mean),
        std=list(data.info.std),
        normalisation=normalisation,
        train_on_disk=isinstance(data.train, FileSplit),
        test_masks=0 if test.masks is None else int((test.masks != IGNORE).flatten(1).any(1).sum()),
        mask_source=data.source_of_masks,
        mask_images=0 if mask_set is None else len(mask_set),
        mask_checksum=None if mask_set is None else split_checksum(mask_set),
        mask_subset=None if mask_subset is None else mask_subset.tolist(),
    )


def _kept_masks(data: Dataset, positions: np.ndarray | list[int] | None) -> MaskSet | None:
    """The part of the external mask set a run uses (all of it without `positions`)."""
    if data.mask_set is None or positions is None:
        return data.mask_set
    return data.mask_set.subset(np.asarray(positions))


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write the manifest atomically as JSON."""
    return write_json(path, manifest.__dict__)


def prepare_data(
    run: Run, data_source: str | None = "auto", mask_source: str | None = "auto"
) -> tuple[Dataset, Manifest]:
    """Load the run's data set, draw the profile's class-balanced subsets and write the manifest (00_data's job).

    `mask_source` ("auto": $CLXAI_MASK_SOURCE, else none) is read as `clxai_utils.data.datasets`
    says for the data set; the manifest records it, so every later stage sees the same masks.
    """
    settings = run.settings
    masks = resolve_mask_source(mask_source)
    data = load_dataset(run.dataset, data_source, settings.data.image_size, masks, settings.data.workers)
    subsets = {
        "train": balanced_subset(data.train.labels, settings.subset.train_per_class),
        "test": balanced_subset(data.test.labels, settings.subset.test_per_class),
    }
    per_class = settings.subset.masks_per_class
    mask_subset = None
    if data.mask_set is not None and per_class is not None:
        mask_subset = at_most_per_class(data.mask_set.labels, per_class)
    manifest = build_manifest(data, run.profile, subsets, settings.subset.accuracy_on, mask_subset)
    save_manifest(manifest, run.manifest_path)
    return replace(data, mask_set=_kept_masks(data, mask_subset)), manifest


def load_prepared(run: Run) -> tuple[Dataset, Manifest]:
    """The data set restricted to the subsets of the run's manifest, checksum-verified.

    Later notebooks call this instead of choosing data themselves, so every stage sees
    exactly the same images, normalised with the statistics 00_data recorded.
    """
    path = run.manifest_path
    if not path.is_file():
        raise DataError(
            f"no data manifest at {path}: run notebooks/00_data.ipynb with profile={run.profile!r}, "
            f"dataset={run.dataset!r}, seed={run.seed} first"
        )
    manifest = Manifest.load(path)
    if manifest.profile != run.profile:
        raise DataError(
            f"the data manifest {path} was written for profile={manifest.profile!r}, not {run.profile!r}: "
            "rerun notebooks/00_data.ipynb with this profile"
        )
    statistics = (tuple(manifest.mean), tuple(manifest.std))
    full = load_dataset(
        run.dataset,
        manifest.source,
        manifest.image_size,
        manifest.mask_source,
        run.settings.data.workers,
        normalisation=statistics,  # type: ignore[arg-type]
    )
    splits = {s: full.split(s).subset(np.asarray(manifest.subset_ids[s])) for s in SPLITS}
    whole_test = _whole_test(run, manifest, full.test)
    if whole_test is not None:
        splits[WHOLE_TEST] = whole_test
    for s, split in splits.items():
        if split_checksum(split) != manifest.checksums[s]:
            raise DataError(f"the {s} images differ from those recorded in {path}: rerun notebooks/00_data.ipynb")
    mask_set = _kept_masks(full, manifest.mask_subset)
    if mask_set is not None and split_checksum(mask_set) != manifest.mask_checksum:
        raise DataError(
            f"the masked images of {manifest.mask_source} differ from those recorded in {path}: rerun 00_data"
        )
    test = splits["test"]
    assert isinstance(test, ImageSplit)
    return replace(full, train=splits["train"], test=test, accuracy_test=whole_test, mask_set=mask_set), manifest


def _whole_test(run: Run, manifest: Manifest, test: ImageSplit) -> ImageSplit | None:
    """The whole test split when the profile counts accuracy on it, if 00_data recorded it so."""
    accuracy_on = run.settings.subset.accuracy_on
    if (WHOLE_TEST in manifest.checksums) != (accuracy_on == "all"):
        raise DataError(
            f"the profile {run.profile!r} now says accuracy_on={accuracy_on!r}, but the data manifest "
            f"{run.manifest_path} was written for the other setting: rerun notebooks/00_data.ipynb"
        )
    return test if accuracy_on == "all" else None
