"""Atomic artefact writing: a reader never sees a half-written file.

Every stage writes through `atomic_path`: the content goes to a temporary file in the
same folder, which is renamed over the target only once it is complete. An interrupted
run therefore leaves either the previous artefact or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; move it onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale(paths: Iterable[str | os.PathLike]) -> None:
    """Delete a stage's previous artefacts before it recomputes them, so an interrupted run leaves none."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(target)


def read_json(source: str | os.PathLike) -> Any:
    """Read a JSON artefact."""
    return json.loads(Path(source).read_text())


def write_csv(target: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write a table as CSV (no index), atomically."""
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write a text file (say a Markdown table), atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def save_torch(target: str | os.PathLike, obj: Any) -> Path:
    """`torch.save` atomically; objects must load with `torch.load(weights_only=True)`.

    The bytes depend only on `obj`: saved to a path, torch names the archive inside the file
    after it, and the random temporary name would make every save of the same weights differ
    (and with it the model digests that decide whether stored maps are reused).
    """
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
    return Path(target)


def load_torch(source: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` restricted to tensors and plain containers (no pickled code)."""
    return torch.load(source, map_location=map_location, weights_only=True)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save `fig` as PNG atomically (a killed run leaves no truncated image)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path
