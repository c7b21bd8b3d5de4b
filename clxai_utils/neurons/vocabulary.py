"""The candidate labels: a text file, one label per line (`configs/neuron_vocabulary.txt` by default).

Any other file can be passed, and any list of labels (e.g. the vocabulary merged with a
candidate source's labels) goes through `clean_labels`. Labels are stripped; blank lines
and '#' comments are skipped; repeats (ignoring case) are dropped, first spelling kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from clxai_utils.core.paths import repo_root

VOCABULARY_FILE = Path("configs") / "neuron_vocabulary.txt"


def default_vocabulary_path() -> Path:
    """The vocabulary shipped with the repository."""
    return repo_root() / VOCABULARY_FILE


def clean_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Stripped, non-blank, non-comment labels in their first order, each once (case-insensitively)."""
    seen: set[str] = set()
    kept = []
    for raw in labels:
        label = str(raw).strip()
        if label and not label.startswith("#") and label.casefold() not in seen:
            seen.add(label.casefold())
            kept.append(label)
    return tuple(kept)


def load_vocabulary(vocabulary: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The labels of the file `vocabulary` (default: the shipped one); an error if it holds none."""
    path = default_vocabulary_path() if vocabulary is None else Path(vocabulary)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary={os.fspath(path)!r}: no such file")
    labels = clean_labels(path.read_text(encoding="utf-8").splitlines())
    if not labels:
        raise ValueError(f"vocabulary={os.fspath(path)!r} holds no labels (only blank lines or '#' comments)")
    return labels
