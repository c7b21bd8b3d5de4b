"""The data of one run (00_data): class-balanced subsets, the manifest, and the checked reload.

`prepare_data` draws the profile's subsets and records them, with checksums, in the run's
manifest; every later stage calls `load_prepared`, which reloads exactly those images and
refuses them if they no longer match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clxai_utils.core.artifacts import read_json, write_json
from clxai_utils.core.run import Run
from clxai_utils.data.sources import SPLITS, DataError, Dataset, ImageSplit, load_dataset


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


def split_checksum(split: ImageSplit) -> str:
    """SHA-256 over pixels, labels and ids: two runs saw the same data iff the checksums match."""
    digest = hashlib.sha256()
    for tensor in (split.images, split.labels, split.ids):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Manifest:
    """What 00_data wrote: the data's provenance, counts and the subsets every later stage uses."""

    dataset: str
    profile: str
    source: str
    classes: list[str]
    counts: dict[str, list[int]]
    subset_ids: dict[str, list[int]]
    checksums: dict[str, str]

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls(**read_json(path))


def build_manifest(data: Dataset, profile: str, subsets: dict[str, np.ndarray]) -> Manifest:
    """Describe `data` and the chosen subset positions (per split) for later notebooks."""
    return Manifest(
        dataset=data.info.name,
        profile=profile,
        source=data.source,
        classes=list(data.classes),
        counts={s: data.split(s).class_counts(data.num_classes) for s in SPLITS},
        subset_ids={s: data.split(s).ids[torch.as_tensor(subsets[s])].tolist() for s in SPLITS},
        checksums={s: split_checksum(data.split(s).subset(subsets[s])) for s in SPLITS},
    )


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write the manifest atomically as JSON."""
    return write_json(path, manifest.__dict__)


def prepare_data(run: Run, data_source: str | None = "auto") -> tuple[Dataset, Manifest]:
    """Load the run's data set, draw the profile's class-balanced subsets and write the manifest (00_data's job)."""
    subset_cfg = run.settings.subset
    data = load_dataset(run.dataset, data_source)
    subsets = {
        "train": balanced_subset(data.train.labels, subset_cfg.train_per_class),
        "test": balanced_subset(data.test.labels, subset_cfg.test_per_class),
    }
    manifest = build_manifest(data, run.profile, subsets)
    save_manifest(manifest, run.manifest_path)
    return data, manifest


def load_prepared(run: Run) -> tuple[Dataset, Manifest]:
    """The data set restricted to the subsets of the run's manifest, checksum-verified.

    Later notebooks call this instead of choosing data themselves, so every stage sees
    exactly the same images.
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
    full = load_dataset(run.dataset, manifest.source)
    splits = {s: full.split(s).subset(np.asarray(manifest.subset_ids[s])) for s in SPLITS}
    for s in SPLITS:
        if split_checksum(splits[s]) != manifest.checksums[s]:
            raise DataError(f"the {s} images differ from those recorded in {path}: rerun notebooks/00_data.ipynb")
    return Dataset(full.info, full.classes, splits["train"], splits["test"], full.source), manifest
